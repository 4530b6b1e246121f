package enqueue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
)

// waitRetention is how long --wait keeps a finished task (and so its
// result) when neither --retention nor the task type sets it.
const waitRetention = time.Hour

// single enqueues the task of the command line: enqueue TYPE [PAYLOAD].
// A type the program lacks is looked up in the task catalogue once Redis
// is reached; one of its own is checked before.
func (c *cli) single(ctx context.Context, fs *pflag.FlagSet) error {
	typ := c.f.args[0]
	def, local := c.reg.Lookup(typ)
	payload, from, err := c.payload()
	if err != nil {
		return err
	}
	now := c.now()
	opts, errs := c.f.opts.parse(now, flagName)
	if len(errs) > 0 {
		return &inputError{err: errors.Join(errs...)}
	}
	waitTimeout, err := c.waitTimeout()
	if err != nil {
		return err
	}
	// Pick the id here rather than in asynq: a conflict on it can then only
	// be our own write sent twice by go-redis after a dropped connection.
	ownID := opts.id == ""
	if ownID {
		opts.id = uuid.NewString()
	}
	build := func(tt taskType) (*asynq.Task, error) {
		aopts := opts.asynq()
		if c.f.wait && opts.retention == nil && !hasOption(tt.defaults(), asynq.RetentionOpt) {
			aopts = append(aopts, asynq.Retention(waitRetention))
		}
		task, err := tt.newTask(payload, aopts...)
		if err != nil {
			return nil, badInput("payload (%s): %w", from, err)
		}
		return task, nil
	}
	var (
		tt   taskType
		task *asynq.Task
	)
	if local {
		tt = localType{def}
		if task, err = build(tt); err != nil {
			return err
		}
	}
	cfg, err := c.loadConfig(fs)
	if err != nil {
		return err
	}

	k, err := c.connect(ctx, cfg)
	if err != nil {
		if hint := c.typoHint(typ); !local && hint != "" {
			return fmt.Errorf("%w\n  %s", err, hint)
		}
		return err
	}
	defer k.close()
	if !local {
		p, err := c.lookupPublished(ctx, k, typ)
		if err != nil {
			return err
		}
		tt = p
		if task, err = build(tt); err != nil {
			return err
		}
	}

	queue := tt.queue()
	if opts.queue != "" {
		queue = opts.queue
	}
	var (
		info  *asynq.TaskInfo
		dedup tasks.DedupMode
	)
	if opts.dedup != nil {
		info, dedup, err = c.enqueueDedup(ctx, k, tt, task, opts)
	} else {
		info, err = k.enq.EnqueueContext(ctx, task)
	}
	if errors.Is(err, asynq.ErrTaskIDConflict) && ownID {
		info, err = k.insp.GetTaskInfo(queue, opts.id)
	}
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		state := ""
		if ti, err := k.insp.GetTaskInfo(queue, opts.id); err == nil {
			state = fmt.Sprintf(" (a %s task, %s)", ti.Type, ti.State)
		}
		return badInput("--id %q: queue %q already has a task with this id%s; asynq keeps an id until its task is deleted", opts.id, queue, state)
	case errors.Is(err, asynq.ErrDuplicateTask):
		return badInput("unique task: queue %q already has a %q task with the same payload, and its uniqueness lock (--unique) has not expired", queue, typ)
	case errors.Is(err, tasks.ErrDedupConflict):
		var be *tasks.BatchError
		if errors.As(err, &be) {
			err = be.Err
		}
		return fmt.Errorf("--dedup-key %q: %w", opts.dedup.Key, err)
	case err != nil:
		return fmt.Errorf("enqueue %q on queue %q: %w", typ, queue, err)
	}

	if dedup != "" {
		c.printDeduplicated(info, dedup)
	} else if !c.f.json || !c.f.wait {
		c.printEnqueued(info)
	}
	c.warnUnserved(k, []string{info.Queue}, c.f.wait)
	if !c.f.wait {
		return nil
	}
	return c.wait(ctx, k, info, waitTimeout)
}

// payload returns the payload bytes and where they came from: the PAYLOAD
// argument, --payload-file, or stdin when PAYLOAD is "-" or when neither is
// given and stdin is not a terminal. No payload at all is empty.
func (c *cli) payload() ([]byte, string, error) {
	f := &c.f
	switch {
	case len(f.args) == 2 && f.args[1] != "-":
		return []byte(f.args[1]), "argument", nil
	case len(f.args) == 2 || f.payloadFile == "-":
		return c.readPayload(c.stdin, "stdin")
	case f.payloadFile != "":
		file, err := os.Open(f.payloadFile)
		if err != nil {
			return nil, "", badInput("--payload-file: %w", err)
		}
		defer file.Close()
		return c.readPayload(file, fmt.Sprintf("--payload-file %q", f.payloadFile))
	case !isTerminal(c.stdin):
		return c.readPayload(c.stdin, "stdin")
	default:
		return nil, "none given", nil
	}
}

// readPayload reads r, refusing more than tasks.MaxPayloadSize bytes.
func (c *cli) readPayload(r io.Reader, from string) ([]byte, string, error) {
	b, err := io.ReadAll(io.LimitReader(r, tasks.MaxPayloadSize+1))
	if err != nil {
		return nil, "", badInput("payload (%s): %w", from, err)
	}
	if len(b) > tasks.MaxPayloadSize {
		return nil, "", badInput("payload (%s): over the %d-byte limit", from, tasks.MaxPayloadSize)
	}
	return bytes.TrimPrefix(b, byteOrderMark), from, nil
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// hasOption reports whether opts has an option of type t.
func hasOption(opts []asynq.Option, t asynq.OptionType) bool {
	for _, o := range opts {
		if o.Type() == t {
			return true
		}
	}
	return false
}

// taskJSON is --json's description of one task.
type taskJSON struct {
	ID        string     `json:"id"`
	Type      string     `json:"type"`
	Queue     string     `json:"queue"`
	State     string     `json:"state"`
	ProcessAt *time.Time `json:"process_at,omitempty"`
	Group     string     `json:"group,omitempty"`
	MaxRetry  int        `json:"max_retry"`
	Retried   int        `json:"retried,omitempty"`
	LastError string     `json:"last_error,omitempty"`
	Result    any        `json:"result,omitempty"`
	Waited    *float64   `json:"waited_seconds,omitempty"`
	// Deduplicated is the mode applied to the task that held the dedup
	// key (keep, replace or debounce); empty for a new task.
	Deduplicated string `json:"deduplicated,omitempty"`
}

func describe(info *asynq.TaskInfo) taskJSON {
	t := taskJSON{
		ID: info.ID, Type: info.Type, Queue: info.Queue, State: info.State.String(),
		Group: info.Group, MaxRetry: info.MaxRetry, Retried: info.Retried, LastError: info.LastErr,
	}
	if info.State == asynq.TaskStateScheduled && !info.NextProcessAt.IsZero() {
		at := info.NextProcessAt.UTC()
		t.ProcessAt = &at
	}
	return t
}

// enqueueDedup enqueues task, of type tt with opts, with its dedup key
// (tasks.EnqueueBatch): it returns the task holding the key, and the mode
// applied when it was held ("": the task is new).
func (c *cli) enqueueDedup(ctx context.Context, k *conn, tt taskType, task *asynq.Task, opts taskOptions) (*asynq.TaskInfo, tasks.DedupMode, error) {
	aopts := append(tt.defaults(), opts.asynq()...)
	if c.f.wait && opts.retention == nil && !hasOption(tt.defaults(), asynq.RetentionOpt) {
		aopts = append(aopts, asynq.Retention(waitRetention))
	}
	res, err := k.enq.EnqueueBatch(ctx, k.m.Client(), []tasks.BatchItem{{Type: task.Type(), Payload: task.Payload(), Options: aopts, Dedup: opts.dedup}})
	if err != nil {
		return nil, "", err
	}
	r := res[0]
	return &asynq.TaskInfo{ID: r.ID, Queue: r.Queue, Type: r.Type, State: r.State, NextProcessAt: r.ProcessAt}, r.Deduplicated, nil
}

// printDeduplicated reports a task whose dedup key was held by info, and
// what was done to it.
func (c *cli) printDeduplicated(info *asynq.TaskInfo, mode tasks.DedupMode) {
	if c.f.json {
		t := describe(info)
		t.Deduplicated = string(mode)
		writeJSON(c.stdout, t)
		return
	}
	what := map[tasks.DedupMode]string{tasks.DedupKeep: "kept as it is", tasks.DedupReplace: "replaced", tasks.DedupDebounce: "replaced and pushed back"}[mode]
	fmt.Fprintf(c.stdout, "deduplicated: task %s holds the dedup key, %s\n  type:  %s\n  queue: %s\n  state: %s\n",
		termtext.Escape(info.ID), what, termtext.Escape(info.Type), termtext.Escape(info.Queue), info.State)
}

// printEnqueued reports a newly enqueued task.
func (c *cli) printEnqueued(info *asynq.TaskInfo) {
	if c.f.json {
		writeJSON(c.stdout, describe(info))
		return
	}
	when := ""
	switch info.State {
	case asynq.TaskStateScheduled:
		when = fmt.Sprintf(", runs at %s (in %v)", info.NextProcessAt.UTC().Format(time.RFC3339),
			info.NextProcessAt.Sub(c.now()).Round(time.Second))
	case asynq.TaskStateAggregating:
		when = fmt.Sprintf(", in group %q", info.Group)
	}
	fmt.Fprintf(c.stdout, "enqueued task %s\n  type:  %s\n  queue: %s\n  state: %s%s\n",
		termtext.Escape(info.ID), termtext.Escape(info.Type), termtext.Escape(info.Queue), info.State, when)
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
