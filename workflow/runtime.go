package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/internal/taskctx"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
)

// MaxResultBytes is the largest result a step may return: a bigger one
// fails the step (keep big results elsewhere and return a reference).
const MaxResultBytes = 1 << 20

// maxErrorBytes is how much of a failed step's error is kept.
const maxErrorBytes = 4 << 10

// Middleware returns the asynq middleware that runs workflow steps:
// worker.App installs it around every handler, inside its logging,
// metrics and recovery middleware and outside the App's own. A panic of
// the handler is recorded as a failure on the step's last attempt and
// passed on. A task that is not a
// workflow step passes through untouched. For a step it
//
//   - skips the handler when the step has already finished (a duplicate
//     delivery) or the workflow is final (cancelled, failed);
//   - gives the handler Previous and Results;
//   - once the handler succeeded, or failed with no retry left, records
//     the step in one script on the workflow's hash slot, which counts it
//     once however often it is delivered, and enqueues the steps that
//     start next.
//
// A step whose handler succeeded but whose record could not be written
// (Redis failing) returns an error wrapping ErrNotRecorded, so asynq runs
// it again (see ErrNotRecorded).
func (c *Client) Middleware() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			taskID, _ := asynq.GetTaskID(ctx)
			id, path, ok := parseTaskID(taskID)
			if !ok {
				return next.ProcessTask(ctx, t)
			}
			return c.run(ctx, next, t, id, path)
		})
	}
}

func (c *Client) run(ctx context.Context, next asynq.Handler, t *asynq.Task, id, path string) error {
	// The task's trace_id, span_id and request_id tie the step's lines
	// to its trace (package telemetry).
	log := c.log.With(append([]zap.Field{zap.String("workflow_id", id), zap.String("step", path), zap.String("task_type", t.Type())},
		telemetry.LogFields(ctx)...)...)
	r := scriptReply{code: "run"}
	if c.mustBegin(ctx, id, path) {
		var err error
		r, err = parseReply(beginScript.Run(ctx, c.rdb, keys(id), path, c.now().UnixMilli()).Result())
		if err != nil {
			return fmt.Errorf("workflow %s step %s: read the workflow: %w", id, path, err)
		}
		if r.code == "run" {
			c.noteBegan(id)
		}
	}
	switch r.code {
	case "gone":
		log.Warn("workflow step skipped: its workflow no longer exists (retention ran out)")
		return nil
	case "done":
		log.Info("workflow step skipped: already finished (a duplicate delivery)")
		return nil
	case "stopped":
		log.Info("workflow step skipped: the workflow is " + r.status)
		return nil
	}

	var result []byte
	sctx := context.WithValue(ctx, stepKey{}, &stepCtx{c: c, id: id, path: path})
	sctx = taskctx.WithResult(sctx, func(b []byte) { result = b })
	herr, panicked := call(sctx, next, t)
	if panicked != nil {
		// Recorded as the failure it is on a last attempt, then passed
		// on to the middleware outside, which counts and logs panics.
		defer panic(panicked)
		herr = fmt.Errorf("%s: handler panic: %v", t.Type(), panicked)
	}

	var okStep bool
	var msg string
	switch tasks.Outcome(ctx, herr) {
	case tasks.OutcomeDone:
		okStep = true
		if len(result) > MaxResultBytes {
			okStep = false
			msg = fmt.Sprintf("result of %d bytes: a workflow step's result may hold at most %d (MaxResultBytes)", len(result), MaxResultBytes)
			herr = fmt.Errorf("workflow step %s: %s: %w", path, msg, asynq.SkipRetry)
		}
	case tasks.OutcomeArchived, tasks.OutcomeSkipRetry, tasks.OutcomeCancelled:
		if herr == nil {
			herr = ctx.Err()
		}
		msg = herr.Error()
	default:
		return herr // asynq retries or requeues it; nothing to record yet
	}
	if len(msg) > maxErrorBytes {
		msg = strings.ToValidUTF8(msg[:maxErrorBytes], "")
	}
	value := string(result)
	if !okStep {
		value = msg
	}
	// The task's ctx may be at its deadline: the record gets its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	r, err := c.complete(rctx, id, path, okStep, value)
	if err != nil {
		if okStep {
			return fmt.Errorf("workflow %s step %s: %w: %w", id, path, ErrNotRecorded, err)
		}
		log.Warn("workflow step failed and could not be recorded; the reconciler records it", zap.Error(err))
		return herr
	}
	switch r.code {
	case "dup":
		log.Info("workflow step finished again: counted once")
	case "ok":
		if err := c.start(rctx, id, r.pairs); err != nil {
			log.Warn("workflow: next steps not enqueued; the reconciler enqueues them", zap.Error(err))
		}
		if Status(r.status).Final() {
			c.rdb.ZRem(rctx, RunningKey, id) // best effort: the reconciler drops it too
			log.Info("workflow finished", zap.String("status", r.status))
		}
	}
	return herr
}

// call runs next, returning the value of its panic, if any, apart.
func call(ctx context.Context, next asynq.Handler, t *asynq.Task) (err error, panicked any) {
	defer func() {
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	return next.ProcessTask(ctx, t), nil
}

// beganFor is how long a process skips the begin script for the group
// members of a workflow it has begun a step of.
const beganFor = 5 * time.Second

// mustBegin reports whether the step at path of workflow id runs the
// begin script before its handler: it marks the workflow running, and
// skips a step already finished (a duplicate delivery) or a workflow no
// longer live. Every chain step and callback runs it, and every retried
// attempt; a group's member skips it when this process began a step of
// the workflow within beganFor, since a 10,000-member group would
// otherwise pay a round trip per member for what its first members
// established. Such a member, delivered again after it finished, runs
// again and is counted once (at-least-once, as any asynq task).
func (c *Client) mustBegin(ctx context.Context, id, path string) bool {
	if !strings.HasPrefix(last(path), "m") {
		return true
	}
	if _, ok := c.cancelled.Load(id); ok {
		return true
	}
	if n, _ := asynq.GetRetryCount(ctx); n > 0 {
		return true
	}
	v, ok := c.began.Load(id)
	if !ok {
		return true
	}
	if c.now().Sub(v.(time.Time)) > beganFor {
		c.began.Delete(id)
		return true
	}
	return false
}

// noteBegan records that this process began a step of workflow id now;
// every 1024th call drops the entries older than beganFor, so that a
// long-running worker keeps only the workflows it works on.
func (c *Client) noteBegan(id string) {
	now := c.now()
	c.began.Store(id, now)
	if c.beganStores.Add(1)%1024 != 0 {
		return
	}
	for _, m := range []*sync.Map{&c.began, &c.cancelled} {
		m.Range(func(k, v any) bool {
			if now.Sub(v.(time.Time)) > beganFor {
				m.Delete(k)
			}
			return true
		})
	}
}

// complete records the end of the step at path, retrying a failing Redis
// for a little while.
func (c *Client) complete(ctx context.Context, id, path string, ok bool, value string) (scriptReply, error) {
	flag := "0"
	if ok {
		flag = "1"
	}
	var err error
	for attempt, wait := 0, 50*time.Millisecond; attempt < 5; attempt, wait = attempt+1, wait*2 {
		var r scriptReply
		r, err = parseReply(completeScript.Run(ctx, c.rdb, keys(id), path, flag, value, c.now().UnixMilli()).Result())
		if err == nil {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
	}
	return scriptReply{}, err
}

// Reconcile repairs, once, what a crash or a failing Redis left half done
// in the workflows due for a check (RunningKey): a step marked active
// whose task does not exist is enqueued (a worker died between recording
// a step and enqueuing the next, or Submit between its two writes); a
// step whose task asynq archived or completed without the step being
// recorded (its worker died at its last attempt) is recorded. A workflow
// is checked every 15 seconds while it runs, and only its steps active for
// longer than that. Every worker runs it (RunReconciler); the checks are
// claimed atomically, so workers do not repeat each other's.
func (c *Client) Reconcile(ctx context.Context) error {
	now := c.now()
	ids, err := c.rdb.ZRangeArgs(ctx, redisZRangeDue(now)).Result()
	if err != nil {
		return fmt.Errorf("workflow: reconcile: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if err := c.reconcile(ctx, id, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Client) reconcile(ctx context.Context, id string, now time.Time) error {
	if checkID(id) != nil {
		return c.rdb.ZRem(ctx, RunningKey, id).Err()
	}
	r, err := parseReply(scanScript.Run(ctx, c.rdb, keys(id), now.UnixMilli(), reconcileAfter.Milliseconds(), scanLimit).Result())
	if err != nil {
		return fmt.Errorf("workflow: reconcile %s: %w", id, err)
	}
	if r.code != "live" {
		return c.rdb.ZRem(ctx, RunningKey, id).Err()
	}
	next := reconcileAfter
	if len(r.pairs)/2 >= scanLimit {
		next = time.Second // more to check: soon
	}
	for i := 0; i+1 < len(r.pairs); i += 2 {
		path, spec := r.pairs[i], r.pairs[i+1]
		if err := c.repair(ctx, id, path, spec); err != nil {
			c.log.Warn("workflow: reconcile step", zap.String("workflow_id", id), zap.String("step", path), zap.Error(err))
			next = time.Second
		}
	}
	// XX: a repair that finished the workflow removed it.
	return c.rdb.ZAddXX(ctx, RunningKey, redisZ(id, now.Add(next))).Err()
}

// repair checks the task of one step active for a while.
func (c *Client) repair(ctx context.Context, id, path, spec string) error {
	var s taskSpecLite
	if err := decodeSpec(spec, &s); err != nil {
		return err
	}
	info, err := c.insp.GetTaskInfo(s.Queue, TaskID(id, path))
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		// The step may have finished (and its task been deleted) since
		// the scan: it is then no longer active.
		active, err := c.rdb.HExists(ctx, keys(id)[kAct], path).Result()
		if err != nil || !active {
			return err
		}
		c.log.Info("workflow: enqueuing a step whose task is missing", zap.String("workflow_id", id), zap.String("step", path))
		return c.start(ctx, id, []string{path, spec})
	case err != nil:
		return err
	}
	var ok bool
	var value string
	switch info.State {
	case asynq.TaskStateArchived:
		value = info.LastErr
		if value == "" {
			value = "archived"
		}
	case asynq.TaskStateCompleted:
		ok, value = true, string(info.Result)
	default:
		return nil // pending, active, scheduled, retry: asynq has it
	}
	r, err := c.complete(ctx, id, path, ok, value)
	if err != nil {
		return err
	}
	if r.code == "ok" {
		if err := c.start(ctx, id, r.pairs); err != nil {
			return err
		}
		if Status(r.status).Final() {
			c.rdb.ZRem(ctx, RunningKey, id)
		}
	}
	return nil
}

// scanLimit is how many steps of one workflow a Reconcile checks.
const scanLimit = 1000

// ReconcileInterval is how often RunReconciler runs Reconcile.
const ReconcileInterval = 5 * time.Second

// RunReconciler runs Reconcile every ReconcileInterval until ctx ends,
// logging its failures, and listens on CancelChannel meanwhile, so that
// this process stops starting the steps of a cancelled workflow at once;
// worker.App runs it in every worker.
func (c *Client) RunReconciler(ctx context.Context) {
	sub := c.rdb.Subscribe(ctx, CancelChannel)
	defer sub.Close()
	go func() {
		for msg := range sub.Channel() {
			c.cancelled.Store(msg.Payload, c.now())
			c.began.Delete(msg.Payload)
		}
	}()
	t := time.NewTicker(ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("workflow: reconcile", zap.Error(err))
		}
	}
}
