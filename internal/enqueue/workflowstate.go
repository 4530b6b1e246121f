package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/workflow"
)

// Workflow settings of the command.
const (
	// waitParallel is how many workflows --wait reads at once.
	waitParallel = 64
	// statusSteps is how many steps --workflow-status lists.
	statusSteps = 100
	// workflowPoll is how often --wait reads a workflow's state when it
	// cannot count on its steps' events, as it did before the events.
	workflowPoll = 50 * time.Millisecond
)

// workflowJSON is --json's description of a workflow's state.
type workflowJSON struct {
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"`
	Status     string    `json:"status"`
	Total      int       `json:"total"`
	Done       int       `json:"done"`
	Failed     int       `json:"failed"`
	FailedStep string    `json:"failed_step,omitempty"`
	Error      string    `json:"error,omitempty"`
	Created    time.Time `json:"created"`
	Started    time.Time `json:"started,omitzero"`
	Updated    time.Time `json:"updated"`
	Finished   time.Time `json:"finished,omitzero"`
	// RetentionSeconds is how long the workflow stays readable once final.
	RetentionSeconds float64 `json:"retention_seconds"`
	StatusURL        string  `json:"status_url"`
	// Waited is how long --wait waited.
	Waited *float64 `json:"waited_seconds,omitempty"`
	// Steps are the first steps (--workflow-status); MoreSteps how many
	// more there are.
	Steps     []workflow.Step `json:"steps,omitempty"`
	MoreSteps int             `json:"more_steps,omitempty"`
}

func describeWorkflow(st *workflow.State) workflowJSON {
	return workflowJSON{
		ID: st.ID, Name: st.Name, Status: string(st.Status), Total: st.Total, Done: st.Done, Failed: st.Failed,
		FailedStep: st.FailedStep, Error: st.Error, Created: st.Created, Started: st.Started, Updated: st.Updated,
		Finished: st.Finished, RetentionSeconds: st.Retention.Seconds(), StatusURL: statusURL(st.ID),
	}
}

// finalState is the end of a wait for one workflow.
type finalState struct {
	state *workflow.State // the last state read; nil if none was
	took  time.Duration
	err   error // the wait ended before the workflow did
}

// waitWorkflows follows the workflows of flows (followWorkflow, reading
// the step events through k, unless its settings have events off) until
// each is final, showing one bar of their steps done out of their steps in
// all. limit > 0 bounds the wait. It returns the end of each, in order;
// err is a wait that ctx, not the limit, ended.
func (c *cli) waitWorkflows(ctx context.Context, k *conn, wc *workflow.Client, flows []*workflow.Info, limit time.Duration) ([]finalState, error) {
	start := time.Now()
	wctx := ctx
	if limit > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	total := 0
	for _, f := range flows {
		total += f.Total
	}
	desc := fmt.Sprintf("%d workflows", len(flows))
	if len(flows) == 1 {
		desc = "workflow " + flows[0].ID
	}
	bar := c.newStepsBar(total, desc)
	var (
		mu   sync.Mutex
		done = make([]int, len(flows))
		sum  int
	)
	out := make([]finalState, len(flows))
	reader := stepEvents(k)
	sem := make(chan struct{}, waitParallel)
	var wg sync.WaitGroup
	for i, f := range flows {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := c.followWorkflow(wctx, reader, wc, f.ID, func(st *workflow.State) {
				mu.Lock()
				defer mu.Unlock()
				sum += st.Done - done[i]
				done[i] = st.Done
				if bar != nil {
					_ = bar.Set(sum)
				}
			})
			out[i] = finalState{state: st, took: time.Since(start), err: err}
		})
	}
	wg.Wait()
	if bar != nil {
		_ = bar.Exit()
		fmt.Fprintln(c.stderr)
	}
	if ctx.Err() != nil {
		return out, fmt.Errorf("stopped waiting: %w", ctx.Err())
	}
	for i, f := range out {
		switch {
		case f.err == nil:
		case errors.Is(f.err, context.DeadlineExceeded) && limit > 0:
			out[i].err = fmt.Errorf("gave up waiting after %v (--wait-timeout): workflow %s is still %s", limit, flows[i].ID, lastStatus(f.state))
		case errors.Is(f.err, workflow.ErrNotFound):
			out[i].err = fmt.Errorf("workflow %s is gone from Redis (deleted, or its retention ran out)", flows[i].ID)
		default:
			out[i].err = fmt.Errorf("wait for workflow %s: %w", flows[i].ID, f.err)
		}
	}
	return out, nil
}

// stepEvents returns the reader of the step events of the workflows
// waited for on k, nil when k's settings have events off (WORKER_EVENTS,
// the workers' setting): there are none to follow.
func stepEvents(k *conn) *events.Client {
	if !k.cfg.Worker.Events {
		return nil
	}
	return events.NewClient(k.m.Client(), events.ClientOptions{})
}

// followWorkflow waits for workflow id to be final, as wc.Wait does, but
// following the events of its steps (read by reader): it reads the
// workflow's state again as soon as one of its steps ends (its final
// event, which the worker publishes once it has recorded the step), and
// every stateCheck, which covers events trimmed from a stream and the
// workflow's cancellation. When a step's queue has no event stream (or an
// unreadable one) when the wait begins, its workers may have events off:
// the state is read every workflowPoll instead, as polling did. With
// reader nil (events off) it polls, as wc.Wait every workflowPoll.
// progress, when not nil, gets each state whose done count or status
// changed. It returns the last state read, and the error of wc.Get or
// ctx's.
func (c *cli) followWorkflow(ctx context.Context, reader *events.Client, wc *workflow.Client,
	id string, progress func(*workflow.State)) (*workflow.State, error) {
	if reader == nil {
		return wc.Wait(ctx, id, workflowPoll, progress)
	}
	queues, err := stepQueues(ctx, wc, id)
	if err != nil {
		return nil, err
	}
	// Each stream's position before the first read of the state: a step
	// that ends after the read is in a stream after its position.
	every := c.checkEvery()
	after := make([]string, len(queues))
	for i, q := range queues {
		last, err := reader.LastID(ctx, q)
		if err != nil {
			last = "" // unreadable: from when the watch starts
		}
		if last == "" || last == noStream {
			every = min(every, workflowPoll)
		}
		after[i] = last
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wake := make(chan struct{}, 1)
	prefix := workflow.TaskID(id, "")
	for i, q := range queues {
		go func() {
			for e, err := range reader.Watch(wctx, q, "", after[i]) {
				if err != nil {
					return // ctx ended
				}
				if e.Final() && strings.HasPrefix(e.TaskID, prefix) {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var last *workflow.State
	for {
		st, err := wc.Get(ctx, id)
		if err != nil {
			return last, err
		}
		if progress != nil && (last == nil || st.Done != last.Done || st.Status != last.Status) {
			progress(st)
		}
		last = st
		if st.Status.Final() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-wake:
		case <-tick.C:
		}
	}
}

// stepQueues returns the queues of the steps of workflow id.
func stepQueues(ctx context.Context, wc *workflow.Client, id string) ([]string, error) {
	const page = 1000
	seen := make(map[string]bool)
	var queues []string
	for offset := 0; ; offset += page {
		steps, total, err := wc.Steps(ctx, id, offset, page)
		if err != nil {
			return nil, err
		}
		for _, s := range steps {
			if !seen[s.Queue] {
				seen[s.Queue] = true
				queues = append(queues, s.Queue)
			}
		}
		if len(steps) == 0 || offset+len(steps) >= total {
			return queues, nil
		}
	}
}

// lastStatus says what a workflow was last seen doing.
func lastStatus(st *workflow.State) string {
	if st == nil {
		return "pending"
	}
	return fmt.Sprintf("%s (%d of %d steps done)", st.Status, st.Done, st.Total)
}

// newStepsBar returns a bar counting the steps done out of total, or nil
// when bars are off.
func (c *cli) newStepsBar(total int, desc string) *progressbar.ProgressBar {
	if !c.showProgress() || total == 0 {
		return nil
	}
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(c.stderr),
		progressbar.OptionSetDescription(termtext.Escape(desc)),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetRenderBlankState(true),
	)
}

// finalError is the error of a waited-for workflow that did not succeed:
// nil when it did.
func finalError(f finalState) error {
	if f.err != nil {
		return f.err
	}
	st := f.state
	switch st.Status {
	case workflow.StatusSucceeded:
		return nil
	case workflow.StatusFailed:
		return fmt.Errorf("workflow %s failed at step %s: %s", st.ID, st.FailedStep, st.Error)
	case workflow.StatusCancelled:
		return fmt.Errorf("workflow %s was cancelled: %s", st.ID, st.Error)
	}
	return fmt.Errorf("workflow %s ended %s", st.ID, st.Status)
}

// printFinal prints the end of a waited-for workflow: text, or JSON with
// --json. Its error is non-nil unless the workflow succeeded.
func (c *cli) printFinal(f finalState) error {
	err := finalError(f)
	if c.f.json {
		if f.state != nil {
			out := describeWorkflow(f.state)
			waited := f.took.Seconds()
			out.Waited = &waited
			writeJSON(c.stdout, out)
			if err != nil {
				return silentError{err}
			}
		}
		return err
	}
	c.printFinalText(f)
	return err
}

// printFinalText prints the end of a waited-for workflow as text.
func (c *cli) printFinalText(f finalState) {
	st := f.state
	if f.err != nil || st == nil {
		return // the error says it
	}
	esc := termtext.Escape
	took := f.took.Round(time.Millisecond)
	switch st.Status {
	case workflow.StatusSucceeded:
		fmt.Fprintf(c.stdout, "workflow %s succeeded after %v: %d of %d steps done\n", esc(st.ID), took, st.Done, st.Total)
	case workflow.StatusFailed:
		fmt.Fprintf(c.stdout, "workflow %s failed after %v: %d of %d steps done, %d failed\n  failed step: %s\n  error: %s\n",
			esc(st.ID), took, st.Done, st.Total, st.Failed, esc(st.FailedStep), esc(st.Error))
	default:
		fmt.Fprintf(c.stdout, "workflow %s %s after %v: %d of %d steps done\n", esc(st.ID), st.Status, took, st.Done, st.Total)
		if st.Error != "" {
			fmt.Fprintf(c.stdout, "  reason: %s\n", esc(st.Error))
		}
	}
}

// workflowReader connects for --workflow-status and --cancel-workflow.
func (c *cli) workflowReader(ctx context.Context, fs *pflag.FlagSet) (*conn, *workflow.Client, error) {
	cfg, err := c.loadConfig(fs)
	if err != nil {
		return nil, nil, err
	}
	k, err := c.connect(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return k, workflow.NewClient(k.m.Client(), workflow.Options{Cache: k.m}), nil
}

// notFound is the bad input of a workflow id that names none.
func (c *cli) notFound(flag, id string) error {
	return badInput("%s %q: no such workflow (it never existed, or its retention ran out)", flag, id)
}

// workflowStatus prints the state of workflow --workflow-status and its
// first steps.
func (c *cli) workflowStatus(ctx context.Context, fs *pflag.FlagSet) error {
	id := c.f.workflowStatus
	k, wc, err := c.workflowReader(ctx, fs)
	if err != nil {
		return err
	}
	defer k.close()
	st, err := wc.Get(ctx, id)
	if errors.Is(err, workflow.ErrNotFound) {
		return c.notFound("--workflow-status", id)
	}
	if err != nil {
		return fmt.Errorf("read workflow %q: %w", id, err)
	}
	steps, total, err := wc.Steps(ctx, id, 0, statusSteps)
	if errors.Is(err, workflow.ErrNotFound) {
		return c.notFound("--workflow-status", id)
	}
	if err != nil {
		return fmt.Errorf("read the steps of workflow %q: %w", id, err)
	}
	if c.f.json {
		out := describeWorkflow(st)
		out.Steps = steps
		if out.Steps == nil {
			out.Steps = []workflow.Step{}
		}
		out.MoreSteps = max(total-len(steps), 0)
		writeJSON(c.stdout, out)
		return nil
	}
	c.printState(st)
	return c.printSteps(steps, total)
}

// printState prints a workflow's state as text.
func (c *cli) printState(st *workflow.State) {
	esc := termtext.Escape
	w := c.stdout
	fmt.Fprintf(w, "workflow %s\n", esc(st.ID))
	if st.Name != "" {
		fmt.Fprintf(w, "  name:     %s\n", esc(st.Name))
	}
	fmt.Fprintf(w, "  status:   %s, %d of %d steps done, %d failed\n", st.Status, st.Done, st.Total, st.Failed)
	if st.FailedStep != "" {
		fmt.Fprintf(w, "  failed step: %s\n", esc(st.FailedStep))
	}
	if st.Error != "" {
		fmt.Fprintf(w, "  error:    %s\n", esc(st.Error))
	}
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"created", st.Created}, {"started", st.Started}, {"finished", st.Finished}} {
		if !t.at.IsZero() {
			fmt.Fprintf(w, "  %-9s %s\n", t.name+":", t.at.UTC().Format(time.RFC3339))
		}
	}
}

// printSteps prints steps, the first of total, as a table.
func (c *cli) printSteps(steps []workflow.Step, total int) error {
	esc := termtext.Escape
	fmt.Fprintln(c.stdout, "  steps:")
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    PATH\tTYPE\tQUEUE\tSTATUS\tDETAIL")
	for _, s := range steps {
		detail := s.Error
		if s.Progress != nil {
			detail = fmt.Sprintf("%.0f%% %s", s.Progress.Percent, s.Progress.Message)
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\n", esc(s.Path), esc(s.Type), esc(s.Queue), s.Status, esc(detail))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("workflow status: %w", err)
	}
	if total > len(steps) {
		fmt.Fprintf(c.stdout, "  (the first %d of %d steps)\n", len(steps), total)
	}
	return nil
}

// cancelWorkflow cancels workflow --cancel-workflow.
func (c *cli) cancelWorkflow(ctx context.Context, fs *pflag.FlagSet) error {
	id := c.f.cancelWorkflow
	k, wc, err := c.workflowReader(ctx, fs)
	if err != nil {
		return err
	}
	defer k.close()
	st, err := wc.Cancel(ctx, id, "cancelled with "+c.prog+" --cancel-workflow")
	switch {
	case errors.Is(err, workflow.ErrNotFound):
		return c.notFound("--cancel-workflow", id)
	case errors.Is(err, workflow.ErrFinished):
		status := "finished"
		if st, gerr := wc.Get(ctx, id); gerr == nil {
			status = string(st.Status)
		}
		return fmt.Errorf("--cancel-workflow %q: the workflow has already finished (%s); nothing to cancel", id, status)
	case st == nil && err != nil:
		return fmt.Errorf("cancel workflow %q: %w", id, err)
	case err != nil:
		// Cancelled; a step left in its queue is skipped when it runs.
		fmt.Fprintf(c.stderr, "%s: warning: %s\n", c.prog, termtext.Escape(workflowMessage(err)))
	}
	if c.f.json {
		writeJSON(c.stdout, describeWorkflow(st))
		return nil
	}
	fmt.Fprintf(c.stdout, "cancelled workflow %s: %d of %d steps had finished\n", termtext.Escape(st.ID), st.Done, st.Total)
	return nil
}
