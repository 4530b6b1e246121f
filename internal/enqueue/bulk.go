package enqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// maxLineSize bounds one --file line: the largest payload plus room for
// the other fields.
const maxLineSize = tasks.MaxPayloadSize + 64<<10

// byteOrderMark is the UTF-8 encoding of U+FEFF, which some editors write
// at the start of a file; a --file or --payload-file may start with it.
var byteOrderMark = []byte("\ufeff")

// bulkTask is one checked line of a --file.
type bulkTask struct {
	line   int
	typ    string
	queue  string
	id     string // the task id
	ownID  bool   // id was generated here, not given
	unique bool   // under a uniqueness lock
	task   *asynq.Task
	item   tasks.BatchItem // task as tasks.EnqueueBatch takes it
	there  string          // the state of this very task, found in Redis by takenIDs (an earlier run sent it)
	wf     *bulkWorkflow   // a workflow line (typ "workflow", id its id); task is nil
	text   []byte          // the line as read, for the resend file
}

// bulk enqueues every task of --file, or none if any line is bad.
func (c *cli) bulk(ctx context.Context, fs *pflag.FlagSet) error {
	name := c.f.file
	var r io.Reader = c.stdin
	if name == "-" {
		name = "stdin"
	} else {
		file, err := os.Open(c.f.file)
		if err != nil {
			return badInput("--file: %w", err)
		}
		defer file.Close()
		r = file
	}
	// The flags' own mistakes come first: they would be on every line.
	if _, errs := c.f.opts.parse(c.now(), flagName); len(errs) > 0 {
		return &inputError{err: errors.Join(errs...)}
	}
	waitTimeout, err := c.waitTimeout()
	if err != nil {
		return err
	}
	// Types the program lacks are looked up in the task catalogue, read
	// once over the connection the tasks are then enqueued on.
	types, lazy := c.lazyTypes(ctx, fs)
	defer lazy.close()
	list, bad, err := c.checkLines(ctx, r, types)
	if err != nil {
		return badInput("--file %s: %w", name, err)
	}
	if err := types.failed(); err != nil {
		if hint := types.typoHint(); hint != "" {
			return fmt.Errorf("%w\n  %s", err, hint)
		}
		return err
	}
	if len(bad) > 0 {
		return &inputError{
			err:   fmt.Errorf("--file %s: %d bad %s; nothing was enqueued", name, len(bad), plural(len(bad), "line", "lines")),
			lines: bad,
		}
	}
	flows := 0
	for _, t := range list {
		if t.wf != nil {
			flows++
		}
	}
	if c.f.wait && flows == 0 {
		return badInput("--wait with --file follows the file's workflows, and --file %s has none; nothing was enqueued", name)
	}
	k, err := lazy.get()
	if err != nil {
		return err
	}
	bc := k.bulk()
	defer bc.close()
	bc.workflows(workflow.CatalogTypes(c.reg, tasks.NewCatalog(k.m.Client())))

	taken, err := c.takenIDs(ctx, bc.insp, list)
	if err != nil {
		return err
	}
	if len(taken) > 0 {
		return &inputError{
			err:   fmt.Errorf("--file %s: %d task %s already in use; nothing was enqueued", name, len(taken), plural(len(taken), "id is", "ids are")),
			lines: taken,
		}
	}
	if taken, err = c.takenWorkflowIDs(ctx, bc.flowLookup, list); err != nil {
		return err
	}
	if len(taken) > 0 {
		return &inputError{
			err:   fmt.Errorf("--file %s: %d workflow %s already in use; nothing was enqueued", name, len(taken), plural(len(taken), "id is", "ids are")),
			lines: taken,
		}
	}
	queues := make(map[string]bool)
	for _, t := range list {
		if t.wf == nil {
			queues[t.queue] = true
		}
	}
	c.warnUnserved(k, sortedKeys(queues), false)

	res := c.enqueueAll(ctx, bc.io(), list)
	rf := c.resend(res)
	if !c.f.wait || res.enqueued != len(res.tasks) {
		return c.report(res, rf)
	}
	// Every line is in: follow the workflows, then report them with their
	// ends.
	c.warnNoWorker(k)
	var infos []*workflow.Info
	var idx []int
	for i, info := range res.flows {
		if info != nil {
			infos, idx = append(infos, info), append(idx, i)
		}
	}
	ends, err := c.waitWorkflows(ctx, k, workflow.NewClient(k.m.Client(), workflow.Options{}), infos, waitTimeout)
	if err != nil {
		return err
	}
	res.ends = make([]*finalState, len(res.tasks))
	var errs []error
	for j, i := range idx {
		res.ends[i] = &ends[j]
		if err := finalError(ends[j]); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", res.tasks[i].line, err))
		}
	}
	if err := c.report(res, rf); err != nil {
		return err
	}
	if len(errs) > 0 {
		err := fmt.Errorf("%d of %d %s did not succeed: %w", len(errs), len(infos), plural(len(infos), "workflow", "workflows"), errors.Join(errs...))
		if c.f.json {
			return silentError{err}
		}
		return err
	}
	return nil
}

// checkLines reads and checks every line of r, finding their task types
// in types. It returns the tasks, or the bad lines; err is a failure to
// read r at all. The lines are checked in parallel, then in order for ids
// and unique tasks used twice.
func (c *cli) checkLines(ctx context.Context, r io.Reader, types *typeSource) (list []bulkTask, bad []lineError, err error) {
	// All of r is needed before anything is enqueued, and the tasks take
	// more memory than their text: read it in one piece.
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, err
	}
	// Some editors start a UTF-8 file with a byte order mark.
	data = bytes.TrimPrefix(data, byteOrderMark)
	type line struct {
		n    int
		text []byte
	}
	var lines []line
	for n := 1; len(data) > 0; n++ {
		text := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			text, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(bytes.TrimSpace(text)) > 0 {
			lines = append(lines, line{n, text})
		}
	}

	type checked struct {
		task bulkTask
		errs []error
	}
	results := make([]checked, len(lines))
	now := c.now()
	chk := newWorkflowChecker(types)
	defer chk.close()
	const chunk = 256
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), (len(lines)+chunk-1)/chunk) {
		wg.Go(func() {
			for {
				from := int(next.Add(chunk)) - chunk
				if from >= len(lines) {
					return
				}
				for i := from; i < min(from+chunk, len(lines)); i++ {
					res := &results[i]
					text := lines[i].text
					flow := isWorkflowLine(text)
					switch {
					case flow && len(text) > maxWorkflowSize:
						res.errs = []error{fmt.Errorf("%d bytes, over the %d-byte limit of a workflow", len(text), maxWorkflowSize)}
						continue
					case !flow && len(text) > maxLineSize:
						res.errs = []error{fmt.Errorf("%d bytes, over the %d-byte limit of a line (a payload may have at most %d)", len(text), maxLineSize, tasks.MaxPayloadSize)}
						continue
					case flow:
						res.task, res.errs = c.checkWorkflowLine(ctx, text, chk)
					default:
						res.task, res.errs = c.checkLine(text, now, types)
					}
					res.task.line, res.task.text = lines[i].n, lines[i].text
				}
			}
		})
	}
	wg.Wait()

	ids := make(map[string]int)     // task id: first line
	flowIDs := make(map[string]int) // workflow id: first line
	uniques := make(map[string]int) // queue, type and payload of a unique task: first line
	list = make([]bulkTask, 0, len(lines))
	for i, res := range results {
		n, t, errs := lines[i].n, res.task, res.errs
		if len(errs) == 0 && t.wf != nil && !t.ownID {
			if first, dup := flowIDs[t.id]; dup {
				errs = append(errs, fmt.Errorf("workflow id %q: already used on line %d", t.id, first))
			} else {
				flowIDs[t.id] = n
			}
		}
		if len(errs) == 0 && t.wf == nil && !t.ownID {
			if first, dup := ids[t.id]; dup {
				errs = append(errs, fmt.Errorf("field \"id\" %q: already used on line %d", t.id, first))
			} else {
				ids[t.id] = n
			}
		}
		if len(errs) == 0 && t.unique {
			key := t.queue + "\x00" + t.typ + "\x00" + string(t.task.Payload())
			if first, dup := uniques[key]; dup {
				errs = append(errs, fmt.Errorf("same queue, type and payload as line %d, under unique: asynq would refuse the second", first))
			} else {
				uniques[key] = n
			}
		}
		if len(errs) > 0 {
			msgs := make([]string, len(errs))
			for i, e := range errs {
				msgs[i] = e.Error()
			}
			bad = append(bad, lineError{n, strings.Join(msgs, "; ")})
			continue
		}
		list = append(list, t)
	}
	return list, bad, nil
}

// lineJSON is a --file line. The durations are strings or numbers, so
// they stay raw until checked.
type lineJSON struct {
	Type      *string         `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	Queue     *string         `json:"queue"`
	Delay     json.RawMessage `json:"delay"`
	At        *string         `json:"at"`
	MaxRetry  *int            `json:"max_retry"`
	Timeout   json.RawMessage `json:"timeout"`
	Deadline  json.RawMessage `json:"deadline"`
	Unique    json.RawMessage `json:"unique"`
	ID        *string         `json:"id"`
	Retention json.RawMessage `json:"retention"`
	Group     *string         `json:"group"`

	DedupKey      *string         `json:"dedup_key"`
	DedupMode     *string         `json:"dedup_mode"`
	DedupRelease  *string         `json:"dedup_release"`
	DedupMaxDelay json.RawMessage `json:"dedup_max_delay"`
}

// lineFields lists the fields of lineJSON, for messages.
const lineFields = "type, payload, queue, delay, at, max_retry, timeout, deadline, unique, id, retention, group, dedup_key, dedup_mode, dedup_release, dedup_max_delay"

// checkLine checks one line and builds its task.
func (c *cli) checkLine(line []byte, now time.Time, types *typeSource) (bulkTask, []error) {
	var (
		t    bulkTask
		errs []error
		l    lineJSON
	)
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	err := dec.Decode(&l)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value on the line")
	}
	var (
		syn     *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case err == nil:
	case errors.As(err, &syn):
		return t, []error{fmt.Errorf("malformed JSON at byte %d: %v", syn.Offset, err)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return t, []error{errors.New("malformed JSON: the line ends inside a value")}
	case errors.As(err, &typeErr) && typeErr.Field != "":
		want := typeErr.Type.String()
		switch typeErr.Type.Kind() {
		case reflect.Pointer:
			want = typeErr.Type.Elem().String()
		}
		if want == "int" {
			want = "a whole number"
		}
		return t, []error{fmt.Errorf("field %q: want %s, got %s", typeErr.Field, want, typeErr.Value)}
	case errors.As(err, &typeErr):
		return t, []error{fmt.Errorf("want a JSON object such as {\"type\": \"...\", \"payload\": {...}}, got %q", abbrev(string(bytes.TrimSpace(line))))}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return t, []error{fmt.Errorf("unknown field %s; a line has %s", strings.TrimPrefix(err.Error(), "json: unknown field "), lineFields)}
	default:
		return t, []error{err}
	}
	// encoding/json keeps the last of a field given twice; the payload's
	// own fields are checked as a payload.
	if err := tasks.CheckEnvelope(line); err != nil {
		return t, []error{err}
	}
	// A duration is a string or a number of seconds.
	dur := func(field string, raw json.RawMessage) *string {
		if len(raw) == 0 || string(raw) == "null" {
			return nil
		}
		var s string
		if raw[0] != '"' {
			s = string(raw) // a number: parseDuration reads it as seconds
		} else if err := json.Unmarshal(raw, &s); err != nil {
			errs = append(errs, fmt.Errorf("field %q: want a duration string (\"90s\") or a number of seconds, got %s", field, abbrev(string(raw))))
			return nil
		}
		return &s
	}
	raw := rawOptions{
		Queue: l.Queue, At: l.At, ID: l.ID, Group: l.Group, MaxRetry: l.MaxRetry,
		Delay: dur("delay", l.Delay), Timeout: dur("timeout", l.Timeout), Unique: dur("unique", l.Unique),
		Retention: dur("retention", l.Retention), Deadline: dur("deadline", l.Deadline),
		DedupKey: l.DedupKey, DedupMode: l.DedupMode, DedupRelease: l.DedupRelease,
		DedupMaxDelay: dur("dedup_max_delay", l.DedupMaxDelay),
	}
	typ := l.Type
	payload := l.Payload
	if string(payload) == "null" {
		payload = nil
	}
	opts, optErrs := c.f.opts.over(raw).parse(now, func(opt string) string {
		if lineHas(raw, opt) {
			return fieldName(opt)
		}
		return flagName(opt)
	})
	errs = append(errs, optErrs...)

	var def taskType
	switch {
	case typ == nil:
		errs = append(errs, errors.New("missing field \"type\""))
	default:
		d, err := types.lookup(*typ)
		if err != nil {
			errs = append(errs, fmt.Errorf("field \"type\": %w", err))
		}
		def = d
	}
	if def == nil || len(errs) > 0 {
		return t, errs
	}
	// Pick the ids of tasks that give none here rather than in asynq, so
	// that a conflict on one can be recognised as a retried write of our
	// own (see enqueueAll).
	ownID := opts.id == ""
	if ownID {
		opts.id = uuid.NewString()
	}
	aopts := opts.asynq()
	task, err := def.newTask(payload, aopts...)
	if err != nil {
		return t, []error{fmt.Errorf("field \"payload\": %w", err)}
	}
	unique := opts.unique > 0 || hasOption(def.defaults(), asynq.UniqueOpt)
	if unique && opts.dedup != nil {
		return t, []error{fmt.Errorf("%s %q: the task type's unique option cannot be combined with it", fieldOrFlag(raw, "dedup_key"), opts.dedup.Key)}
	}
	t = bulkTask{typ: def.name(), queue: def.queue(), id: opts.id, ownID: ownID, task: task, unique: unique,
		item: tasks.BatchItem{Type: task.Type(), Payload: task.Payload(), Options: append(def.defaults(), aopts...), Dedup: opts.dedup}}
	if opts.queue != "" {
		t.queue = opts.queue
	}
	return t, nil
}

// fieldOrFlag names option opt as the line gave it, or as the flag.
func fieldOrFlag(o rawOptions, opt string) string {
	if lineHas(o, opt) {
		return fieldName(opt)
	}
	return flagName(opt)
}

// lineHas reports whether the line itself gave option opt.
func lineHas(o rawOptions, opt string) bool {
	switch opt {
	case "dedup_key":
		return o.DedupKey != nil
	case "dedup_mode":
		return o.DedupMode != nil
	case "dedup_release":
		return o.DedupRelease != nil
	case "dedup_max_delay":
		return o.DedupMaxDelay != nil
	case "queue":
		return o.Queue != nil
	case "delay":
		return o.Delay != nil
	case "at":
		return o.At != nil
	case "max_retry":
		return o.MaxRetry != nil
	case "timeout":
		return o.Timeout != nil
	case "deadline":
		return o.Deadline != nil
	case "unique":
		return o.Unique != nil
	case "id":
		return o.ID != nil
	case "retention":
		return o.Retention != nil
	case "group":
		return o.Group != nil
	}
	return false
}

// takenIDs returns a lineError for every task whose id is already used in
// its queue in Redis by another task. A task with the same id, type and
// payload is not an error: it is this line, enqueued by an earlier run (a
// rerun of a resend file); takenIDs sets its there, and enqueueAll counts
// it as enqueued without sending it again.
func (c *cli) takenIDs(ctx context.Context, insp taskLookup, list []bulkTask) ([]lineError, error) {
	var withID []bulkTask
	for _, t := range list {
		if !t.ownID && t.wf == nil {
			withID = append(withID, t)
		}
	}
	var (
		mu    sync.Mutex
		taken []lineError
		there = make(map[int]string) // line: state of the task already in Redis
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.f.concurrency)
	for _, t := range withID {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			ti, err := insp.GetTaskInfo(t.queue, t.id)
			switch {
			case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
				return nil
			case err != nil:
				return fmt.Errorf("line %d: look up task id %q: %w", t.line, t.id, err)
			case sameTask(ti, t):
				mu.Lock()
				there[t.line] = ti.State.String()
				mu.Unlock()
				return nil
			}
			mu.Lock()
			taken = append(taken, lineError{t.line, fmt.Sprintf("field \"id\" %q: queue %q already has a task with this id (a %s task, %s)", t.id, t.queue, ti.Type, ti.State)})
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sort.Slice(taken, func(i, j int) bool { return taken[i].Line < taken[j].Line })
	for i := range list {
		if state, ok := there[list[i].line]; ok {
			list[i].there = state
		}
	}
	return taken, nil
}

// outcome is what became of one task of a --file.
type outcome int

const (
	notAttempted outcome = iota
	enqueued             // in Redis
	failed               // refused, or looked up and not in Redis: resend it
	unknown              // written, but whether Redis has it is not known
)

// bulkResult is the outcome of enqueueAll.
type bulkResult struct {
	tasks    []bulkTask
	outcomes []outcome         // by index of tasks
	states   []string          // by index of tasks: the state of an enqueued task, else ""
	flows    []*workflow.Info  // by index of tasks: a submitted workflow, else nil
	ends     []*finalState     // by index of tasks: a workflow's end under --wait, else nil
	errs     []error           // by index of tasks
	dedup    []tasks.DedupMode // by index of tasks: how a deduplicated task was, else ""
	took     time.Duration
	enqueued int
	failed   int
	unknown  int
	stopped  error // why enqueueing stopped early, if it did
}

// count sets the counts of r from its outcomes.
func (r *bulkResult) count() {
	r.enqueued, r.failed, r.unknown = 0, 0, 0
	for _, o := range r.outcomes {
		switch o {
		case enqueued:
			r.enqueued++
		case failed:
			r.failed++
		case unknown:
			r.unknown++
		}
	}
}

// taskLookup finds a task by queue and id: an *asynq.Inspector.
type taskLookup interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

// bulkIO is what enqueueAll uses of Redis.
type bulkIO struct {
	// batch writes a batch (tasks.EnqueueBatch); each call fails within
	// about a socket timeout.
	batch func(ctx context.Context, items []tasks.BatchItem) ([]tasks.BatchResult, error)
	insp  taskLookup // look-ups, each within about a socket timeout
	// probe reports whether Redis answers.
	probe func(ctx context.Context) error
	// settle ends the writes and waits until Redis has run everything they
	// sent; an error means some may still be run.
	settle func(ctx context.Context) error
	// submit submits a workflow, with the writes; findWorkflow reads a
	// workflow's state, with the look-ups (workflow.ErrNotFound when it
	// does not exist). nil when the run has no workflows.
	submit       func(ctx context.Context, node workflow.Node, so workflow.SubmitOptions) (*workflow.Info, error)
	findWorkflow func(ctx context.Context, id string) (*workflow.State, error)
}

// batchConcurrency is how many --file batches are sent at once: Redis
// runs their scripts one after the other, while the next ones are encoded
// and on the wire.
const batchConcurrency = 4

// enqueueAll enqueues the task lines of list in batches of c.f.batchSize
// lines (0: one batch), each with tasks.EnqueueBatch: one script per batch
// (per queue on a cluster), all or nothing. A conflict that the checks
// before could not see (a uniqueness lock in Redis, an id taken since, a
// dedup key held by a task it cannot replace) fails its whole batch, and
// names its line. Then the workflow lines are submitted with
// c.f.concurrency goroutines.
//
// Any other error leaves the outcome of its batch unknown: the script may
// sit in a socket that Redis reads later. It stops the run, since it means
// Redis is in trouble; the calls in flight end within about two socket
// timeouts. Then the unknown outcomes are resolved (see resolve).
//
// A task may reach Redis twice, when a rerun sends it again. takenIDs
// found those sent before the run (bulkTask.there); one that another
// process sends meanwhile conflicts on its id, and is looked up: when its
// queue holds a task of that id with the same type and payload, the task is
// there, counts as enqueued, and its batch is sent again without it.
func (c *cli) enqueueAll(ctx context.Context, io bulkIO, list []bulkTask) bulkResult {
	res := bulkResult{tasks: list, outcomes: make([]outcome, len(list)), states: make([]string, len(list)),
		flows: make([]*workflow.Info, len(list)), errs: make([]error, len(list)), dedup: make([]tasks.DedupMode, len(list))}
	bar := c.newCountBar(len(list))
	start := time.Now()
	var (
		stop      atomic.Bool
		stopOnce  sync.Once
		probing   bool // set under stopOnce
		probeDone = make(chan error, 1)
		wg        sync.WaitGroup
	)
	halt := func(line int, err error) {
		stopOnce.Do(func() {
			stop.Store(true)
			probing = true
			res.stopped = fmt.Errorf("line %d: %w", line, err)
			// Learn at once whether Redis answers, while the calls in
			// flight time out.
			go func() { probeDone <- io.probe(ctx) }()
		})
	}
	var taskIdx, flowIdx []int
	for i, t := range list {
		switch {
		case t.wf != nil:
			flowIdx = append(flowIdx, i)
		case t.there != "":
			res.outcomes[i], res.states[i] = enqueued, t.there
			if bar != nil {
				_ = bar.Add(1)
			}
		default:
			taskIdx = append(taskIdx, i)
		}
	}
	size := c.f.batchSize
	if size <= 0 {
		size = max(len(taskIdx), 1)
	}
	var batches [][]int
	for from := 0; from < len(taskIdx); from += size {
		batches = append(batches, taskIdx[from:min(from+size, len(taskIdx))])
	}
	var nextBatch atomic.Int64
	for range min(batchConcurrency, c.f.concurrency, len(batches)) {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				b := int(nextBatch.Add(1) - 1)
				if b >= len(batches) {
					return
				}
				if line, err := c.enqueueBatch(ctx, io, &res, batches[b]); err != nil {
					halt(line, err)
				}
				if bar != nil {
					_ = bar.Add(len(batches[b]))
				}
			}
		})
	}
	wg.Wait()

	var next atomic.Int64
	for range min(c.f.concurrency, len(flowIdx)) {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				j := int(next.Add(1) - 1)
				if j >= len(flowIdx) {
					return
				}
				i := flowIdx[j]
				o, info, err := submitOne(ctx, io, list[i])
				state := ""
				if o == enqueued {
					state = submittedState
				}
				res.outcomes[i], res.states[i], res.flows[i], res.errs[i] = o, state, info, err
				if bar != nil {
					_ = bar.Add(1)
				}
				if o == unknown {
					halt(list[i].line, err)
				}
			}
		})
	}
	wg.Wait()
	if res.stopped == nil && ctx.Err() != nil {
		res.stopped = ctx.Err()
	}
	if bar != nil {
		_ = bar.Exit()
		fmt.Fprintln(c.stderr)
	}
	if probing {
		c.resolve(ctx, io, &res, <-probeDone)
	}
	res.took = time.Since(start)
	res.count()
	return res
}

// enqueueBatch enqueues the tasks of res at idx as one batch, and sets
// their outcomes. When Redis fails it returns the error and the first
// line of the batch, and leaves the outcomes of the tasks not known to be
// in unknown.
func (c *cli) enqueueBatch(ctx context.Context, io bulkIO, res *bulkResult, idx []int) (int, error) {
	in := func(i int, r tasks.BatchResult) {
		res.outcomes[i], res.states[i], res.dedup[i] = enqueued, r.State.String(), r.Deduplicated
		if r.Deduplicated != "" {
			res.tasks[i].id = r.ID // the task that holds the line's dedup key
		}
	}
	for len(idx) > 0 {
		items := make([]tasks.BatchItem, len(idx))
		for j, i := range idx {
			items[j] = res.tasks[i].item
		}
		results, err := io.batch(ctx, items)
		var (
			be   *tasks.BatchError
			rest []int // not in
		)
		for j, i := range idx {
			if err == nil || (results != nil && results[j].ID != "") {
				in(i, results[j])
			} else {
				rest = append(rest, i)
			}
		}
		switch {
		case err == nil:
			return 0, nil
		case !errors.As(err, &be) || be.Index < 0 || be.Index >= len(idx):
			for _, i := range rest {
				res.outcomes[i], res.errs[i] = unknown, fmt.Errorf("outcome unknown: %w", err)
			}
			return res.tasks[idx[0]].line, err
		}
		bad := idx[be.Index]
		t := res.tasks[bad]
		cause := error(be)
		if isConflict(be.Err) {
			state, lerr := landed(io.insp, t, be.Err)
			if lerr == nil { // an earlier send of this very task: send the others again
				res.outcomes[bad], res.states[bad] = enqueued, state
				idx = slices.DeleteFunc(rest, func(i int) bool { return i == bad })
				continue
			}
			cause = lerr
		} else {
			cause = be.Err
		}
		first, last := res.tasks[idx[0]].line, res.tasks[idx[len(idx)-1]].line
		for _, i := range rest {
			res.outcomes[i] = failed
			if i == bad {
				res.errs[i] = cause
			} else {
				res.errs[i] = fmt.Errorf("not enqueued: line %d conflicts, and its batch (lines %d to %d) is all or nothing", t.line, first, last)
			}
		}
		return 0, nil
	}
	return 0, nil
}

// resolve looks up the tasks whose outcome is unknown, when Redis answered
// the probe (perr nil) and within about a socket timeout each. A task in
// its queue with its id, type and payload is enqueued. One that is not
// there failed, if settle confirmed that Redis has run every write sent;
// otherwise, or if it cannot be looked up, its outcome stays unknown.
func (c *cli) resolve(ctx context.Context, io bulkIO, res *bulkResult, perr error) {
	var idx []int
	for i, o := range res.outcomes {
		if o == unknown {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return
	}
	if perr != nil {
		for _, i := range idx {
			res.errs[i] = fmt.Errorf("%w; not looked up: Redis did not answer (%v)", res.errs[i], perr)
		}
		return
	}
	serr := io.settle(ctx)
	var wg sync.WaitGroup
	sem := make(chan struct{}, c.f.concurrency)
	for _, i := range idx {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t, cause := res.tasks[i], res.errs[i]
			if t.wf != nil {
				resolveWorkflow(ctx, io, res, i, serr)
				return
			}
			ti, err := io.insp.GetTaskInfo(t.queue, t.id)
			switch {
			case err == nil && sameTask(ti, t):
				res.outcomes[i], res.states[i], res.errs[i] = enqueued, ti.State.String(), nil
			case err == nil:
				res.outcomes[i] = failed
				res.errs[i] = fmt.Errorf("%w; queue %q holds another task (%s) with id %q", cause, t.queue, ti.Type, t.id)
			case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
				if serr == nil {
					res.outcomes[i] = failed
					res.errs[i] = fmt.Errorf("%w; looked up: not enqueued", cause)
				} else {
					res.errs[i] = fmt.Errorf("%w; not in Redis yet, but Redis may still run the write: %v", cause, serr)
				}
			default:
				res.errs[i] = fmt.Errorf("%w; look up task id %q: %v", cause, t.id, err)
			}
		})
	}
	wg.Wait()
}

// newCountBar returns a bar counting n tasks, or nil when bars are off.
func (c *cli) newCountBar(n int) *progressbar.ProgressBar {
	if !c.showProgress() || n == 0 {
		return nil
	}
	return progressbar.NewOptions(n,
		progressbar.OptionSetWriter(c.stderr),
		progressbar.OptionSetDescription("enqueue"),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("tasks"),
		progressbar.OptionThrottle(65*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
	)
}

// bulkJSON is --json's summary of a --file. Every line, a task or a
// workflow, is counted once: enqueued (a workflow: submitted), failed
// (refused, or not in Redis when looked up), unknown (written, but whether
// Redis has it could not be learnt) or not attempted.
type bulkJSON struct {
	Enqueued     int                `json:"enqueued"`
	Failed       int                `json:"failed"`
	Unknown      int                `json:"unknown"`
	NotAttempted int                `json:"not_attempted"`
	TookSeconds  float64            `json:"took_seconds"`
	PerSecond    float64            `json:"tasks_per_second"`
	Tasks        []bulkTaskJSON     `json:"tasks"`
	Workflows    []bulkWorkflowJSON `json:"workflows,omitempty"`
	Errors       []lineError        `json:"errors,omitempty"`
	// ResendFile holds the lines of the tasks not enqueued, for a rerun
	// with --file; ResendError says why it could not be written.
	ResendFile  string `json:"resend_file,omitempty"`
	ResendLines int    `json:"resend_lines,omitempty"`
	ResendError string `json:"resend_error,omitempty"`
}

type bulkTaskJSON struct {
	Line  int    `json:"line"`
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue"`
	State string `json:"state"`
	// Deduplicated is the mode applied to the task that held the line's
	// dedup key (ID is that task's); empty for a new task.
	Deduplicated string `json:"deduplicated,omitempty"`
}

// bulkWorkflowJSON is a submitted workflow of a --file; under --wait, State
// is its end.
type bulkWorkflowJSON struct {
	Line      int           `json:"line"`
	ID        string        `json:"id"`
	Name      string        `json:"name,omitempty"`
	Total     int           `json:"total"`
	Started   int           `json:"started"`
	StatusURL string        `json:"status_url"`
	State     *workflowJSON `json:"state,omitempty"`
	// WaitError says why --wait did not see the workflow end.
	WaitError string `json:"wait_error,omitempty"`
}

// report prints the summary of res and where its resend file rf is; its
// error is non-nil unless every line was enqueued.
func (c *cli) report(res bulkResult, rf resendFile) error {
	total := len(res.tasks)
	notAttempted := total - res.enqueued - res.failed - res.unknown
	var nTasks, nFlows, tasksIn, flowsIn int
	for i, t := range res.tasks {
		in := res.outcomes[i] == enqueued
		if t.wf != nil {
			nFlows++
			if in {
				flowsIn++
			}
		} else {
			nTasks++
			if in {
				tasksIn++
			}
		}
	}
	rate := 0.0
	if res.took > 0 {
		rate = float64(tasksIn) / res.took.Seconds()
	}
	var errs []lineError
	for i, err := range res.errs {
		if err != nil {
			errs = append(errs, lineError{res.tasks[i].line, err.Error()})
		}
	}
	rerun := ""
	if rf.path != "" && rf.err == nil && rf.lines > 0 {
		rerun = fmt.Sprintf("%s --file %s", c.prog, shellQuote(rf.path))
	}
	if c.f.json {
		out := bulkJSON{
			Enqueued: res.enqueued, Failed: res.failed, Unknown: res.unknown, NotAttempted: notAttempted,
			TookSeconds: res.took.Seconds(), PerSecond: rate, Tasks: []bulkTaskJSON{}, Errors: errs,
		}
		if rf.path != "" && rf.err == nil {
			out.ResendFile, out.ResendLines = rf.path, rf.lines
		}
		if rf.err != nil {
			out.ResendError = rf.err.Error()
		}
		for i, state := range res.states {
			t := res.tasks[i]
			switch {
			case state == "":
			case t.wf != nil:
				out.Workflows = append(out.Workflows, c.workflowLineJSON(res, i))
			default:
				out.Tasks = append(out.Tasks, bulkTaskJSON{t.line, t.id, t.typ, t.queue, state, string(res.dedup[i])})
			}
		}
		writeJSON(c.stdout, out)
	} else {
		for _, e := range errs {
			fmt.Fprintf(c.stderr, "%s: line %d: %s\n", c.prog, e.Line, termtext.Escape(e.Error))
		}
		took := res.took.Round(time.Millisecond)
		switch {
		case nFlows == 0:
			fmt.Fprintf(c.stdout, "enqueued %d of %d %s in %v (%.0f tasks/s)", tasksIn, nTasks, plural(nTasks, "task", "tasks"), took, rate)
		case nTasks == 0:
			fmt.Fprintf(c.stdout, "submitted %d of %d %s in %v", flowsIn, nFlows, plural(nFlows, "workflow", "workflows"), took)
		default:
			fmt.Fprintf(c.stdout, "enqueued %d of %d %s and submitted %d of %d %s in %v",
				tasksIn, nTasks, plural(nTasks, "task", "tasks"), flowsIn, nFlows, plural(nFlows, "workflow", "workflows"), took)
		}
		if n := countDeduplicated(res); n > 0 {
			fmt.Fprintf(c.stdout, "; %d deduplicated (their dedup key held by a waiting task)", n)
		}
		if res.failed > 0 {
			fmt.Fprintf(c.stdout, "; %d failed", res.failed)
		}
		if res.unknown > 0 {
			fmt.Fprintf(c.stdout, "; %d unknown (sent, but Redis could not be asked whether it has them)", res.unknown)
		}
		if notAttempted > 0 {
			fmt.Fprintf(c.stdout, "; %d not attempted", notAttempted)
		}
		fmt.Fprintln(c.stdout)
		for i, info := range res.flows {
			if info == nil {
				continue
			}
			fmt.Fprintf(c.stdout, "line %d: workflow %s, %d %s\n", res.tasks[i].line, termtext.Escape(info.ID), info.Total, plural(info.Total, "step", "steps"))
			if res.ends != nil && res.ends[i] != nil {
				c.printFinalText(*res.ends[i])
			}
		}
		if rerun != "" {
			one, many, id := "task", "tasks", "task id"
			if nFlows > 0 {
				one, many, id = "line", "lines", "task or workflow id"
			}
			fmt.Fprintf(c.stdout, "the %d %s not enqueued %s in %s, each with its %s; resend them with:\n  %s\n",
				rf.lines, plural(rf.lines, one, many), plural(rf.lines, "is", "are"), termtext.Escape(rf.path), id, termtext.Escape(rerun))
		}
	}
	if rf.err != nil {
		fmt.Fprintf(c.stderr, "%s: write the resend file %s: %s\n", c.prog, termtext.Escape(rf.path), termtext.Escape(rf.err.Error()))
	}
	if res.enqueued == total {
		return nil
	}
	what := "tasks"
	if nFlows > 0 {
		what = "lines"
	}
	var err error
	if res.stopped != nil {
		err = fmt.Errorf("enqueued %d of %d %s, then stopped: %w", res.enqueued, total, what, res.stopped)
	} else {
		err = fmt.Errorf("enqueued %d of %d %s; %d failed", res.enqueued, total, what, res.failed)
	}
	if c.f.json {
		return silentError{err}
	}
	return err
}

// countDeduplicated counts the lines of res that found their dedup key
// held, and made no new task.
func countDeduplicated(res bulkResult) int {
	n := 0
	for _, m := range res.dedup {
		if m != "" {
			n++
		}
	}
	return n
}

// workflowLineJSON describes the workflow of res.tasks[i], submitted.
func (c *cli) workflowLineJSON(res bulkResult, i int) bulkWorkflowJSON {
	info := res.flows[i]
	out := bulkWorkflowJSON{Line: res.tasks[i].line, ID: info.ID, Name: info.Name, Total: info.Total,
		Started: info.Started, StatusURL: statusURL(info.ID)}
	if res.ends != nil && res.ends[i] != nil {
		end := res.ends[i]
		if end.state != nil {
			st := describeWorkflow(end.state)
			waited := end.took.Seconds()
			st.Waited = &waited
			out.State = &st
		}
		if end.err != nil {
			out.WaitError = end.err.Error()
		}
	}
	return out
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:+,=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// isConflict reports whether err is a task id or uniqueness conflict.
func isConflict(err error) bool {
	return errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask)
}

// landed looks up t after its enqueue failed with conflict. When t's queue
// holds a task with t's id, type and payload (an earlier send of t itself),
// it returns that task's state. Otherwise it returns conflict saying what
// holds the id or the lock, or the lookup's error.
func landed(insp taskLookup, t bulkTask, conflict error) (state string, err error) {
	ti, err := insp.GetTaskInfo(t.queue, t.id)
	switch {
	case err == nil && sameTask(ti, t):
		return ti.State.String(), nil
	case err == nil && errors.Is(conflict, asynq.ErrTaskIDConflict):
		// takenIDs found the id free: another producer took it since.
		return "", fmt.Errorf("%w: queue %q got another task (%s) with id %q after the check", conflict, t.queue, ti.Type, t.id)
	case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		if errors.Is(conflict, asynq.ErrTaskIDConflict) {
			return "", fmt.Errorf("%w: queue %q had a task with id %q when this one was enqueued", conflict, t.queue, t.id)
		}
		// asynq offers no public way to look for a uniqueness lock, so
		// only the enqueue finds one.
		return "", fmt.Errorf("%w: an earlier %s task with the same payload holds its uniqueness lock on queue %q", conflict, t.typ, t.queue)
	}
	return "", fmt.Errorf("look up task id %q after %v: %w", t.id, conflict, err)
}

// sameTask reports whether ti, found under t's id, is t: same type and
// payload.
func sameTask(ti *asynq.TaskInfo, t bulkTask) bool {
	return ti.Type == t.typ && bytes.Equal(ti.Payload, t.task.Payload())
}
