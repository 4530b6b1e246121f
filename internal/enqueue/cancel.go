package enqueue

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/internal/termtext"
)

// cancelNoValue is --cancel's value when it is given without one: the ids
// are the arguments, or the lines of --file.
const cancelNoValue = "..."

// cancelParallel bounds the tasks --cancel cancels at once: a running one
// may take up to control.Wait.
const cancelParallel = 32

// cancelTarget is one task to cancel: from the command line, or line Line
// of --file.
type cancelTarget struct {
	ID    string `json:"id"`
	Queue string `json:"queue"`
	Line  int    `json:"-"`
}

// cancelAnswer is what --cancel prints for one task: control.Cancel's
// result, or its error.
type cancelAnswer struct {
	control.Result
	Error string `json:"error,omitempty"`

	err error // the error, for the exit code
}

// checkCancel checks the flags given with --cancel.
func (c *cli) checkCancel(fs *pflag.FlagSet, only func(string, ...string) error) error {
	f := &c.f
	if f.cancel == cancelNoValue && len(f.args) == 0 && f.file == "" {
		return badInput("--cancel needs a task ID: --cancel ID, --cancel ID ID..., or --cancel --file FILE")
	}
	if f.file != "" && (f.cancel != cancelNoValue || len(f.args) > 0) {
		return badInput("--cancel --file takes the ids from the file only, not from the command line")
	}
	for _, id := range f.args {
		if id == "" {
			return badInput("--cancel: an empty task id")
		}
	}
	if fs.Changed("queue") && *f.opts.Queue == "" {
		return badInput("--queue \"\": want a queue name")
	}
	return only("--cancel", "cancel", "queue", "file", "concurrency")
}

// cancel cancels the tasks of --cancel (control.Cancel), on behalf of
// "$USER via PROG" (or PROG), and prints what became of each.
func (c *cli) cancel(ctx context.Context, fs *pflag.FlagSet) error {
	targets, err := c.cancelTargets()
	if err != nil {
		return err
	}
	cfg, err := c.loadConfig(fs)
	if err != nil {
		return err
	}
	k, err := c.connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer k.close()
	by := c.prog
	if u := c.getenv("USER"); u != "" {
		by = u + " via " + c.prog
	}
	rdb := k.m.Client()

	answers := make([]cancelAnswer, len(targets))
	var g errgroup.Group
	g.SetLimit(min(cancelParallel, c.f.concurrency))
	for i, t := range targets {
		g.Go(func() error {
			answers[i] = c.cancelOne(ctx, rdb, t, by)
			return nil
		})
	}
	_ = g.Wait()

	var notFound, failed int
	var last error
	for _, a := range answers {
		switch {
		case a.err == nil:
		case isBadTarget(a.err):
			notFound++
			last = a.err
		default:
			failed++
			last = a.err
		}
		if c.f.json {
			writeJSON(c.stdout, a)
			continue
		}
		if a.err == nil {
			fmt.Fprintln(c.stdout, describeCancel(a.Result))
		} else if len(answers) > 1 {
			fmt.Fprintf(c.stderr, "%s: %s\n", c.prog, termtext.Escape(a.err.Error()))
		}
	}
	if notFound+failed == 0 {
		return nil
	}
	err = last
	if len(answers) > 1 || c.f.json {
		err = silentError{fmt.Errorf("%d of %d tasks not cancelled (%d unknown, %d finished or failed)",
			notFound+failed, len(answers), notFound, failed)}
	}
	if notFound > 0 {
		return &inputError{err: err}
	}
	return err
}

// isBadTarget reports whether err means the task named does not exist.
func isBadTarget(err error) bool {
	var ambiguous *ambiguousError
	return errors.Is(err, control.ErrNotFound) || errors.As(err, &ambiguous)
}

// ambiguousError is a task id without --queue that several queues hold.
type ambiguousError struct {
	id     string
	queues []string
}

func (e *ambiguousError) Error() string {
	return fmt.Sprintf("task %q is in queues %s: give --queue (or a queue on its --file line)", e.id, strings.Join(e.queues, ", "))
}

// cancelOne cancels t, finding its queue first when it has none.
func (c *cli) cancelOne(ctx context.Context, rdb redis.UniversalClient, t cancelTarget, by string) cancelAnswer {
	a := cancelAnswer{Result: control.Result{ID: t.ID, Queue: t.Queue}}
	fail := func(err error) cancelAnswer {
		where := "--cancel " + quoteID(t.ID)
		if t.Line > 0 {
			where = fmt.Sprintf("--file line %d (%s)", t.Line, quoteID(t.ID))
		}
		a.err = fmt.Errorf("%s: %w", where, err)
		a.Error = a.err.Error()
		return a
	}
	if a.Queue == "" {
		queues, err := control.FindQueues(ctx, rdb, t.ID)
		switch {
		case errors.Is(err, control.ErrNotFound):
			return fail(fmt.Errorf("%w: no queue holds this task, and none recorded its cancellation", control.ErrNotFound))
		case err != nil:
			return fail(err)
		case len(queues) > 1:
			return fail(&ambiguousError{id: t.ID, queues: queues})
		}
		a.Queue = queues[0]
	}
	res, err := control.Cancel(ctx, rdb, a.Queue, t.ID, by)
	if res.Queue != "" {
		a.Result = res
	}
	if err != nil {
		return fail(cancelMessage(err, res))
	}
	return a
}

// cancelMessage says what control.Cancel's err means for res.
func cancelMessage(err error, res control.Result) error {
	switch {
	case errors.Is(err, control.ErrNotFound):
		return fmt.Errorf("%w: queue %q has no such task (it never existed, or its retention ran out)", control.ErrNotFound, res.Queue)
	case errors.Is(err, control.ErrFinished):
		msg := fmt.Sprintf("the task has already finished: it is %s", res.State)
		if res.Reason != "" {
			msg += " (" + res.Reason + ")"
		}
		return fmt.Errorf("%w: %s; nothing to cancel", control.ErrFinished, msg)
	}
	return err
}

// describeCancel is the text line of a cancelled task.
func describeCancel(r control.Result) string {
	head := fmt.Sprintf("task %s (%s) in queue %s", termtext.Escape(r.ID), termtext.Escape(r.Type), termtext.Escape(r.Queue))
	switch r.State {
	case control.StateCancelled:
		return fmt.Sprintf("cancelled %s: removed while %s", head, r.Was)
	case "active":
		return fmt.Sprintf("cancelling %s: its worker has been told, but its handler still runs; the worker archives it as cancelled after its grace period", head)
	default:
		return fmt.Sprintf("cancelled %s: stopped while it ran, now %s (%s)", head, r.State, termtext.Escape(r.Reason))
	}
}

func quoteID(id string) string { return termtext.Escape(fmt.Sprintf("%q", id)) }

// cancelTargets reads the tasks to cancel: --cancel ID and the arguments,
// or the lines of --file. A --file line is a task id, or a JSON object
// {"id": ..., "queue": ...}; blank lines and lines starting with # are
// skipped. Every bad line is reported, and nothing is cancelled.
func (c *cli) cancelTargets() ([]cancelTarget, error) {
	f := &c.f
	queue := ""
	if f.opts.Queue != nil {
		queue = *f.opts.Queue
	}
	if f.file == "" {
		var ts []cancelTarget
		if f.cancel != cancelNoValue {
			ts = append(ts, cancelTarget{ID: f.cancel, Queue: queue})
		}
		for _, id := range f.args {
			ts = append(ts, cancelTarget{ID: id, Queue: queue})
		}
		return ts, nil
	}
	var r io.Reader = c.stdin
	if f.file != "-" {
		b, err := os.ReadFile(f.file)
		if err != nil {
			return nil, badInput("--file: %v", err)
		}
		r = bytes.NewReader(b)
	}
	var (
		ts  []cancelTarget
		bad []lineError
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t := cancelTarget{ID: line, Queue: queue, Line: n}
		if strings.HasPrefix(line, "{") {
			t = cancelTarget{Queue: queue, Line: n}
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&t); err != nil {
				bad = append(bad, lineError{Line: n, Error: fmt.Sprintf("want a task id or {\"id\": ..., \"queue\": ...}: %v", err)})
				continue
			}
			if t.Queue == "" {
				t.Queue = queue
			}
		}
		if t.ID == "" {
			bad = append(bad, lineError{Line: n, Error: "no task id"})
			continue
		}
		ts = append(ts, t)
	}
	if err := sc.Err(); err != nil {
		return nil, badInput("--file %s: %v", termtext.Escape(f.file), err)
	}
	if len(bad) > 0 {
		return nil, &inputError{err: fmt.Errorf("--file %s: %d bad line(s); nothing was cancelled", termtext.Escape(f.file), len(bad)), lines: bad}
	}
	if len(ts) == 0 {
		return nil, badInput("--file %s: no task id in it", termtext.Escape(f.file))
	}
	return ts, nil
}
