package enqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// maxWorkflowSize bounds one workflow document (--workflow, or a --file
// line holding a workflow): the payloads a workflow may carry plus room for
// the JSON of its steps.
const maxWorkflowSize = workflow.MaxBytes + 32<<20

// bulkWorkflow is a checked workflow line of a --file.
type bulkWorkflow struct {
	node workflow.Node
	so   workflow.SubmitOptions // so.ID is set: given, or generated here
}

// submitWorkflow submits the workflow of --workflow: it is checked against
// the program's types and the task catalogue first (bad input, exit 2, with
// nothing written), then submitted; under --wait it is followed to its end.
func (c *cli) submitWorkflow(ctx context.Context, fs *pflag.FlagSet) error {
	data, from, err := c.workflowDoc()
	if err != nil {
		return err
	}
	waitTimeout, err := c.waitTimeout()
	if err != nil {
		return err
	}
	node, so, err := workflow.Parse(data)
	if err != nil {
		return badInput("--workflow (%s): %s", from, workflowMessage(err))
	}

	// The steps' types are checked as a --file's are: the program's own
	// first, then the task catalogue, read once if a step needs it. A
	// workflow of the program's types alone is checked before Redis is
	// reached.
	types, lazy := c.lazyTypes(ctx, fs)
	defer lazy.close()
	chk := newWorkflowChecker(types)
	defer chk.close()
	cerr := chk.check(ctx, node, so)
	if err := types.failed(); err != nil {
		if hint := types.typoHint(); hint != "" {
			return fmt.Errorf("%w\n  %s", err, hint)
		}
		return err
	}
	if cerr != nil {
		return badInput("--workflow (%s): %s", from, workflowMessage(cerr))
	}
	k, err := lazy.get()
	if err != nil {
		return err
	}

	wc := c.workflowClient(k)
	info, err := wc.Submit(ctx, node, so)
	switch {
	case errors.Is(err, workflow.ErrExists):
		return badInput("--workflow (%s): workflow id %q is already in use: a workflow id is used once (see %s --workflow-status %s)",
			from, so.ID, c.prog, so.ID)
	case info == nil && err != nil:
		return fmt.Errorf("submit the workflow: %s", workflowMessage(err))
	case err != nil:
		// Written: a worker's reconciler enqueues its first steps.
		fmt.Fprintf(c.stderr, "%s: warning: %s\n", c.prog, termtext.Escape(workflowMessage(err)))
	}
	if !c.f.json || !c.f.wait {
		c.printSubmitted(info)
	}
	if !c.f.wait {
		return nil
	}
	c.warnNoWorker(k)
	final, err := c.waitWorkflows(ctx, k, wc, []*workflow.Info{info}, waitTimeout)
	if err != nil {
		return err
	}
	return c.printFinal(final[0])
}

// workflowDoc returns the workflow document of --workflow and where it came
// from: the flag's value, the file after an @, or stdin for -.
func (c *cli) workflowDoc() ([]byte, string, error) {
	return c.jsonArg("--workflow", c.f.workflow, maxWorkflowSize, "a workflow")
}

// jsonArg reads the JSON document a flag gives: its value, the file
// after an @, or stdin for -, at most limit bytes (what: "a workflow"),
// and says where it came from.
func (c *cli) jsonArg(flag, v string, limit int, what string) ([]byte, string, error) {
	var (
		r    io.Reader
		from string
	)
	switch {
	case v == "-":
		r, from = c.stdin, "stdin"
	case strings.HasPrefix(v, "@"):
		file, err := os.Open(v[1:])
		if err != nil {
			return nil, "", badInput("%s: %w", flag, err)
		}
		defer file.Close()
		r, from = file, fmt.Sprintf("file %q", v[1:])
	default:
		return []byte(v), "argument", nil
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, "", badInput("%s (%s): %w", flag, from, err)
	}
	if len(b) > limit {
		return nil, "", badInput("%s (%s): over the %d-byte limit of %s", flag, from, limit, what)
	}
	return bytes.TrimPrefix(b, byteOrderMark), from, nil
}

// workflowClient returns a workflow client on k that checks steps against
// the program's types and the task catalogue, as the web process does.
func (c *cli) workflowClient(k *conn) *workflow.Client {
	return workflow.NewClient(k.m.Client(), workflow.Options{
		Types: workflow.CatalogTypes(c.reg, tasks.NewCatalog(k.m.Client())),
		Cache: k.m,
	})
}

// workflowMessage is err's text without the package's "workflow: " prefix:
// "step 1.m0 (data:process): ..." names the step and its type.
func workflowMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "workflow: ")
}

// isWorkflowLine reports whether a --file line holds a workflow: a JSON
// object with a "workflow" field. Task lines, nearly all, are told apart
// without decoding.
func isWorkflowLine(line []byte) bool {
	if !bytes.Contains(line, []byte(`"workflow"`)) {
		return false
	}
	var probe struct {
		Workflow json.RawMessage `json:"workflow"`
	}
	return json.Unmarshal(line, &probe) == nil && len(probe.Workflow) > 0
}

// checkWorkflowLine checks a --file line holding a workflow with chk: the
// line's errors name the step and its type. A workflow without an id gets
// one here, so that the resend file can carry it.
func (c *cli) checkWorkflowLine(ctx context.Context, line []byte, chk *workflowChecker) (bulkTask, []error) {
	node, so, err := workflow.Parse(line)
	if err != nil {
		return bulkTask{}, []error{errors.New(workflowMessage(err))}
	}
	if err := chk.check(ctx, node, so); err != nil {
		return bulkTask{}, []error{errors.New(workflowMessage(err))}
	}
	ownID := so.ID == ""
	if ownID {
		so.ID = uuid.NewString()
	}
	return bulkTask{typ: "workflow", id: so.ID, ownID: ownID, wf: &bulkWorkflow{node: node, so: so}}, nil
}

// workflowChecker checks workflows without submitting them
// (workflow.Client.Check), so that every line of a --file is checked
// before any is written. Its client's Redis refuses every command: a
// check that tried to write would fail with errDryRun. It is safe for
// concurrent use.
type workflowChecker struct {
	rdb *redis.Client
	wc  *workflow.Client
}

// errDryRun is what the checker's Redis answers every command with.
var errDryRun = errors.New("enqueue: dry run: nothing is written")

// newWorkflowChecker returns a checker finding the steps' types in types.
// The caller closes it.
func newWorkflowChecker(types *typeSource) *workflowChecker {
	rdb := redis.NewClient(&redis.Options{Addr: "dry-run.invalid:0", MaxRetries: -1})
	rdb.AddHook(refuseAll{})
	return &workflowChecker{rdb: rdb, wc: workflow.NewClient(rdb, workflow.Options{Types: sourceTypes{types}})}
}

// check returns the error Submit would refuse so with (wrapping
// workflow.ErrInvalid, a *workflow.StepError naming the step), or nil.
func (k *workflowChecker) check(ctx context.Context, node workflow.Node, so workflow.SubmitOptions) error {
	_, err := k.wc.Check(ctx, node, so)
	return err
}

func (k *workflowChecker) close() { _ = k.rdb.Close() }

// refuseAll is a go-redis hook that sends nothing: every dial and command
// fails with errDryRun.
type refuseAll struct{}

func (refuseAll) DialHook(redis.DialHook) redis.DialHook {
	return func(context.Context, string, string) (net.Conn, error) { return nil, errDryRun }
}

func (refuseAll) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(_ context.Context, cmd redis.Cmder) error {
		cmd.SetErr(errDryRun)
		return errDryRun
	}
}

func (refuseAll) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(_ context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			cmd.SetErr(errDryRun)
		}
		return errDryRun
	}
}

// sourceTypes are the workflow.Types of a typeSource: the program's types,
// then the task catalogue as read once, with the messages of a --file's
// task lines for a type that is neither.
type sourceTypes struct{ s *typeSource }

func (t sourceTypes) Lookup(_ context.Context, typ string) (workflow.Builder, error) {
	tt, err := t.s.lookup(typ)
	switch {
	case err != nil && t.s.err != nil && errors.Is(err, t.s.err):
		return nil, err // the catalogue could not be read
	case err != nil:
		return nil, unknownTypeError{err.Error()}
	}
	switch tt := tt.(type) {
	case localType:
		return tt.d, nil
	case publishedType:
		return tt.p, nil
	}
	return nil, fmt.Errorf("task type %q: no builder", typ)
}

// unknownTypeError is a step's type that is neither the program's nor
// published: bad input (it wraps tasks.ErrUnknownType, which the
// workflow package reports as a refusal naming the step).
type unknownTypeError struct{ msg string }

func (e unknownTypeError) Error() string { return e.msg }
func (e unknownTypeError) Unwrap() error { return tasks.ErrUnknownType }

// submittedJSON is --json's description of a submitted workflow.
type submittedJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	Total     int    `json:"total"`
	Started   int    `json:"started"`
	StatusURL string `json:"status_url"`
}

// statusURL is where the web process serves workflow id's state.
func statusURL(id string) string { return "/api/workflows/" + id }

// printSubmitted reports a newly submitted workflow.
func (c *cli) printSubmitted(info *workflow.Info) {
	if c.f.json {
		writeJSON(c.stdout, submittedJSON{info.ID, info.Name, info.Total, info.Started, statusURL(info.ID)})
		return
	}
	esc := termtext.Escape
	fmt.Fprintf(c.stdout, "submitted workflow %s\n", esc(info.ID))
	if info.Name != "" {
		fmt.Fprintf(c.stdout, "  name:   %s\n", esc(info.Name))
	}
	fmt.Fprintf(c.stdout, "  steps:  %d (%d started)\n  follow: %s --workflow-status %s\n",
		info.Total, info.Started, esc(c.prog), esc(info.ID))
}

// warnNoWorker warns when no worker is running, under --wait, which would
// otherwise wait for nothing.
func (c *cli) warnNoWorker(k *conn) {
	if servers, err := k.insp.Servers(); err == nil && len(servers) == 0 {
		fmt.Fprintf(c.stderr, "%s: warning: no worker is running; the workflow waits until one starts\n", c.prog)
	}
}

// submittedState is the state --file reports for a submitted workflow.
const submittedState = "submitted"

// submitOne submits the workflow of t, a --file line. A refusal (the task
// catalogue changed since the check) or an id another producer took since
// the check fails this line alone; an id the line did not give that is
// taken is this workflow's own write, sent again. Any other error leaves
// the outcome unknown, as a task's does.
func submitOne(ctx context.Context, io bulkIO, t bulkTask) (outcome, *workflow.Info, error) {
	info, err := io.submit(ctx, t.wf.node, t.wf.so)
	switch {
	case info != nil:
		// Written; an error means a worker's reconciler enqueues its first
		// steps.
		return enqueued, info, nil
	case errors.Is(err, workflow.ErrInvalid):
		return failed, nil, errors.New(workflowMessage(err))
	case errors.Is(err, workflow.ErrExists) && t.ownID:
		st, ferr := io.findWorkflow(ctx, t.id)
		if ferr != nil {
			return unknown, nil, fmt.Errorf("outcome unknown: %w; look up workflow %q: %v", err, t.id, ferr)
		}
		return enqueued, infoOf(st), nil
	case errors.Is(err, workflow.ErrExists):
		return failed, nil, fmt.Errorf("workflow id %q: another workflow took it after the check", t.id)
	}
	return unknown, nil, fmt.Errorf("outcome unknown: %s", workflowMessage(err))
}

// infoOf is the Info of a workflow found by its state.
func infoOf(st *workflow.State) *workflow.Info {
	return &workflow.Info{ID: st.ID, Name: st.Name, Total: st.Total}
}

// resolveWorkflow looks up the workflow of res.tasks[i], whose outcome is
// unknown: submitting one is a single script, so it is either in Redis or
// not. Not there is a failure only once settle (serr nil) confirmed that
// Redis has run every write sent.
func resolveWorkflow(ctx context.Context, io bulkIO, res *bulkResult, i int, serr error) {
	t, cause := res.tasks[i], res.errs[i]
	st, err := io.findWorkflow(ctx, t.id)
	switch {
	case err == nil:
		res.outcomes[i], res.states[i], res.flows[i], res.errs[i] = enqueued, submittedState, infoOf(st), nil
	case errors.Is(err, workflow.ErrNotFound) && serr == nil:
		res.outcomes[i] = failed
		res.errs[i] = fmt.Errorf("%w; looked up: not submitted", cause)
	case errors.Is(err, workflow.ErrNotFound):
		res.errs[i] = fmt.Errorf("%w; not in Redis yet, but Redis may still run the write: %v", cause, serr)
	default:
		res.errs[i] = fmt.Errorf("%w; look up workflow %q: %v", cause, t.id, err)
	}
}

// takenWorkflowIDs returns a lineError for every workflow line whose id
// (given on the line) another workflow already has in Redis.
func (c *cli) takenWorkflowIDs(ctx context.Context, wc *workflow.Client, list []bulkTask) ([]lineError, error) {
	var taken []lineError
	for _, t := range list {
		if t.wf == nil || t.ownID {
			continue
		}
		st, err := wc.Get(ctx, t.id)
		switch {
		case errors.Is(err, workflow.ErrNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("line %d: look up workflow id %q: %w", t.line, t.id, err)
		}
		taken = append(taken, lineError{t.line, fmt.Sprintf("field \"id\" %q: a workflow with this id already exists (%s, created %s); a workflow id is used once",
			t.id, st.Status, st.Created.Format(time.RFC3339))})
	}
	return taken, nil
}
