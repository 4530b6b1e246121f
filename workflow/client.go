package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
)

// DefaultRetention is how long a final workflow stays readable when
// neither SubmitOptions nor Options set it.
const DefaultRetention = 24 * time.Hour

// MaxRetention is the longest retention a workflow may ask for.
const MaxRetention = 366 * 24 * time.Hour

// enqueueParallel is how many enqueues of the steps that start together
// are in flight at once.
const enqueueParallel = 32

// Options configures a Client. The zero value of a field means its
// default.
type Options struct {
	// Types finds the task type of each step to check it (Submit). nil:
	// Submit refuses every workflow (a worker-side Client, which only
	// runs steps, needs none).
	Types Types
	// Cache, when set, is read for the steps' own progress reports
	// (Steps); *cachemgr.Manager satisfies it.
	Cache tasks.Cache
	// Retention is how long a final workflow stays readable, unless
	// SubmitOptions sets it; default DefaultRetention.
	Retention time.Duration
	// Logger logs what the worker side does on its own (reconciling,
	// enqueue failures it will retry); nil: nothing.
	Logger *zap.Logger
	// Events, when set, receives the "enqueued" event of every step
	// enqueued (package events).
	Events *events.Publisher
}

// Client submits workflows, reads their state and cancels them; in a
// worker it also runs their steps (Middleware) and repairs what a crash
// left half done (Reconciler). It is safe for concurrent use.
type Client struct {
	rdb  redis.UniversalClient
	enq  *tasks.Client
	insp *asynq.Inspector
	o    Options
	log  *zap.Logger
	now  func() time.Time
	// began holds, by workflow id, when this process last ran the begin
	// script of one of its steps (mustBegin).
	began       sync.Map
	beganStores atomic.Int64
	// cancelled holds, by workflow id, when this process heard of its
	// cancellation (CancelChannel): its steps run the begin script.
	cancelled sync.Map
}

// NewClient returns a Client on rdb: a single node, Sentinel or a Redis
// Cluster. The Client shares rdb (asynq's client and inspector included)
// and never closes it.
func NewClient(rdb redis.UniversalClient, o Options) *Client {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Client{
		rdb: rdb, enq: tasks.NewClient(asynq.NewClientFromRedisClient(rdb), tasks.ClientOptions{Events: o.Events}), insp: asynq.NewInspectorFromRedisClient(rdb),
		o: o, log: log, now: time.Now,
	}
}

// SubmitOptions are the settings of one workflow.
type SubmitOptions struct {
	// ID is the workflow's id: 1 to MaxIDLen of A-Z a-z 0-9 . _ -; empty:
	// a random UUID. An id in use makes Submit fail with ErrExists, so
	// it can make a submission idempotent.
	ID string
	// Name is a label shown in listings.
	Name string
	// Retention is how long the workflow, its steps' results and errors
	// stay readable once it is final; 0: the Client's.
	Retention time.Duration
}

// Info is what Submit returns.
type Info struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Total int    `json:"total"`
	// Started is how many steps Submit enqueued (the first stage).
	Started int `json:"started"`
}

// Submit checks root, every step's type, payload and options, the shape
// and the limits (MaxTasks, MaxDepth, MaxBytes), then writes the workflow
// and enqueues its first steps. It is all or nothing: a refusal (an error
// wrapping ErrInvalid, a *StepError naming the step) or ErrExists wrote
// nothing. Once the workflow is written it runs: a first step that could
// not be enqueued (Redis failing between the two writes) is enqueued by a
// worker's Reconciler, and Submit still returns the workflow with the
// error.
func (c *Client) Submit(ctx context.Context, root Node, so SubmitOptions) (*Info, error) {
	if so.ID == "" {
		so.ID = uuid.NewString()
	}
	p, so, err := c.check(ctx, root, so)
	if err != nil {
		return nil, err
	}
	now := c.now()

	args := make([]any, 0, 5+2*len(p.shapes)+2*len(p.order))
	args = append(args, now.UnixMilli(), so.Name, len(p.order), int64(so.Retention/time.Second), len(p.shapes))
	paths := make([]string, 0, len(p.shapes))
	for path := range p.shapes {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	for _, path := range paths {
		args = append(args, path, p.shapes[path])
	}
	for _, path := range p.order {
		b, err := json.Marshal(p.specs[path])
		if err != nil {
			return nil, fmt.Errorf("workflow: encode step %s: %w", path, err)
		}
		args = append(args, path, b)
	}

	// The indexes first: a workflow written without them could not be
	// listed or reconciled; an index entry without a workflow is dropped
	// when met.
	ms := now.UnixMilli()
	if _, err := c.rdb.Pipelined(ctx, func(pp redis.Pipeliner) error {
		// NX: a taken id (refused below) keeps its entries as they are.
		pp.ZAddNX(ctx, RunningKey, redis.Z{Score: float64(ms + reconcileAfter.Milliseconds()), Member: so.ID})
		pp.ZAddNX(ctx, RecentKey, redis.Z{Score: float64(ms), Member: so.ID})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("workflow: submit %s: %w", so.ID, err)
	}
	r, err := parseReply(submitScript.Run(ctx, c.rdb, keys(so.ID), args...).Result())
	if err != nil {
		return nil, fmt.Errorf("workflow: submit %s: %w", so.ID, err)
	}
	if r.code == "exists" {
		return nil, fmt.Errorf("%w: %q", ErrExists, so.ID)
	}
	info := &Info{ID: so.ID, Name: so.Name, Total: len(p.order), Started: len(r.pairs)}
	c.rdb.ZRemRangeByRank(ctx, RecentKey, 0, -MaxRecent-1) // best effort: listings drop the excess too
	if err := c.startSpecs(ctx, so.ID, r.pairs, func(path string) (taskSpec, error) { return p.specs[path], nil }); err != nil {
		return info, fmt.Errorf("workflow: %s is submitted; a worker will enqueue its first steps: %w", so.ID, err)
	}
	return info, nil
}

// Check checks root and so as Submit does, without writing anything, and
// returns how many task steps root holds: a producer that must check a
// batch of workflows before submitting any (the enqueue command's --file)
// calls it first. Errors are Submit's refusals (ErrInvalid, a *StepError
// naming the step), or the task catalogue's when it cannot be read.
func (c *Client) Check(ctx context.Context, root Node, so SubmitOptions) (int, error) {
	p, _, err := c.check(ctx, root, so)
	if err != nil {
		return 0, err
	}
	return len(p.order), nil
}

// check checks so (an empty ID is fine) and compiles root; it returns so
// with its defaults.
func (c *Client) check(ctx context.Context, root Node, so SubmitOptions) (*plan, SubmitOptions, error) {
	if c.o.Types == nil {
		return nil, so, fmt.Errorf("%w: this client has no Types to check steps against", ErrInvalid)
	}
	if so.ID != "" {
		if err := checkID(so.ID); err != nil {
			return nil, so, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if so.Retention == 0 {
		so.Retention = c.o.Retention
	}
	if so.Retention < time.Second || so.Retention > MaxRetention {
		return nil, so, fmt.Errorf("%w: retention %s: must be 1s to %s", ErrInvalid, so.Retention, MaxRetention)
	}
	if len(so.Name) > 200 {
		return nil, so, fmt.Errorf("%w: name of %d bytes: at most 200", ErrInvalid, len(so.Name))
	}
	p, err := compile(ctx, root, c.o.Types, c.now())
	return p, so, err
}

// reconcileAfter is how long a step may stay active before a worker's
// Reconciler checks that its task exists.
const reconcileAfter = 15 * time.Second

// start enqueues the steps of pairs (path, spec) of workflow id; a step
// already enqueued (a task id conflict) is fine.
func (c *Client) start(ctx context.Context, id string, pairs []string) error {
	paths := make([]string, 0, len(pairs)/2)
	specs := make(map[string]string, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		paths = append(paths, pairs[i])
		specs[pairs[i]] = pairs[i+1]
	}
	return c.startSpecs(ctx, id, paths, func(path string) (taskSpec, error) {
		var s taskSpec
		if err := json.Unmarshal([]byte(specs[path]), &s); err != nil {
			return s, fmt.Errorf("step %s: decode: %w", path, err)
		}
		return s, nil
	})
}

// startSpecs enqueues the steps at paths of workflow id, whose specs spec
// returns, enqueueParallel at a time.
func (c *Client) startSpecs(ctx context.Context, id string, paths []string, spec func(path string) (taskSpec, error)) error {
	enqueue := func(path string) error {
		s, err := spec(path)
		if err != nil {
			return err
		}
		_, err = c.enq.EnqueueContext(ctx, s.task(id, path))
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return fmt.Errorf("enqueue step %s: %w", path, err)
		}
		return nil
	}
	switch len(paths) {
	case 0:
		return nil
	case 1:
		return enqueue(paths[0])
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(enqueueParallel)
	for _, path := range paths {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return enqueue(path) })
	}
	return g.Wait()
}

// Get returns the state of workflow id; ErrNotFound when it does not
// exist or its retention ran out.
func (c *Client) Get(ctx context.Context, id string) (*State, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	h, err := c.rdb.HGetAll(ctx, keys(id)[kMeta]).Result()
	if err != nil {
		return nil, fmt.Errorf("workflow: get %s: %w", id, err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return stateOf(id, h), nil
}

// List returns up to limit workflows, the most recently created first
// (at most MaxRecent are kept in the listing).
func (c *Client) List(ctx context.Context, limit int) ([]*State, error) {
	if limit <= 0 {
		limit = 50
	}
	ids, err := c.rdb.ZRevRange(ctx, RecentKey, 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("workflow: list: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, keys(id)[kMeta])
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("workflow: list: %w", err)
	}
	out := make([]*State, 0, len(ids))
	var gone []any
	for i, id := range ids {
		h := cmds[i].Val()
		if len(h) == 0 {
			gone = append(gone, id)
			continue
		}
		out = append(out, stateOf(id, h))
	}
	if len(gone) > 0 {
		c.rdb.ZRem(ctx, RecentKey, gone...) // best effort
	}
	return out, nil
}

// Steps returns up to limit task steps of workflow id from offset, in
// the order of the workflow's tree, and how many there are.
func (c *Client) Steps(ctx context.Context, id string, offset, limit int) ([]Step, int, error) {
	if err := checkID(id); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	k := keys(id)
	var (
		exists *redis.IntCmd
		total  *redis.IntCmd
		order  *redis.StringSliceCmd
	)
	if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		exists = p.Exists(ctx, k[kMeta])
		total = p.LLen(ctx, k[kOrder])
		order = p.LRange(ctx, k[kOrder], int64(offset), int64(offset+limit-1))
		return nil
	}); err != nil {
		return nil, 0, fmt.Errorf("workflow: steps of %s: %w", id, err)
	}
	if exists.Val() == 0 {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	paths := order.Val()
	if len(paths) == 0 {
		return nil, int(total.Val()), nil
	}
	var (
		specs, act, errs, cancelled *redis.SliceCmd
	)
	xs := make([]string, len(paths))
	for i, path := range paths {
		xs[i] = "x:" + path
	}
	if _, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		specs = p.HMGet(ctx, k[kSpec], paths...)
		act = p.HMGet(ctx, k[kAct], paths...)
		errs = p.HMGet(ctx, k[kErr], paths...)
		cancelled = p.HMGet(ctx, k[kCnt], xs...)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("workflow: steps of %s: %w", id, err)
	}
	isDone, err := c.rdb.SMIsMember(ctx, k[kDone], toAny(paths)...).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("workflow: steps of %s: %w", id, err)
	}
	steps := make([]Step, len(paths))
	var progressKeys []string
	for i, path := range paths {
		var s taskSpec
		if v, ok := specs.Val()[i].(string); ok {
			_ = json.Unmarshal([]byte(v), &s)
		}
		st := Step{Path: path, Type: s.Type, Queue: s.Queue, TaskID: TaskID(id, path), Status: StepWaiting}
		switch {
		case errs.Val()[i] != nil:
			st.Status = StepFailed
			e, _ := errs.Val()[i].(string)
			_, st.Error, _ = strings.Cut(e, "\n")
		case isDone[i]:
			st.Status = StepSucceeded
		case act.Val()[i] != nil:
			st.Status = StepActive
			progressKeys = append(progressKeys, st.TaskID)
		case cancelled.Val()[i] != nil:
			st.Status = StepCancelled
		}
		steps[i] = st
	}
	if c.o.Cache != nil && len(progressKeys) > 0 && len(progressKeys) <= 100 {
		for i := range steps {
			if steps[i].Status != StepActive {
				continue
			}
			if p, err := tasks.ReadProgress(ctx, c.o.Cache, steps[i].TaskID); err == nil {
				steps[i].Progress = &Progress{Percent: p.Percent, Message: p.Message, Updated: p.Updated}
			}
		}
	}
	return steps, int(total.Val()), nil
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

// Cancel cancels workflow id: the state becomes cancelled, with reason
// as its Error, in one script, and from then on no chain step or
// callback starts; the workers are told (CancelChannel), so that they no
// longer start its group members either; the steps waiting in their
// queues are deleted (32 at a time), and those running are told to stop
// (control.Publish: their handler's ctx ends and their task is archived,
// "cancelled by workflow", without a retry; a step that still finishes
// is recorded, and nothing after it starts). Errors:
// ErrNotFound, ErrFinished.
func (c *Client) Cancel(ctx context.Context, id, reason string) (*State, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if reason == "" {
		reason = "cancelled"
	}
	now := c.now().UnixMilli()
	r, err := parseReply(cancelScript.Run(ctx, c.rdb, keys(id), now, reason).Result())
	if err != nil {
		return nil, fmt.Errorf("workflow: cancel %s: %w", id, err)
	}
	switch r.code {
	case "gone":
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	case "final":
		return nil, fmt.Errorf("%w: %q is %s", ErrFinished, id, r.status)
	}
	// Best effort: the reconciler drops it from RunningKey too, and a
	// worker that misses the message runs the begin script of the
	// workflow's steps within beganFor anyway.
	c.rdb.ZRem(ctx, RunningKey, id)
	if err := c.rdb.Publish(ctx, CancelChannel, id).Err(); err != nil {
		c.log.Warn("workflow: cancel: could not tell the workers", zap.String("workflow_id", id), zap.Error(err))
	}
	var (
		mu   sync.Mutex
		errs []error
		g    errgroup.Group
	)
	g.SetLimit(enqueueParallel)
	for i := 0; i+1 < len(r.pairs); i += 2 {
		taskID, queue := TaskID(id, r.pairs[i]), r.pairs[i+1]
		g.Go(func() error {
			if err := c.removeTask(ctx, queue, taskID); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	st, err := c.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return st, fmt.Errorf("workflow: %s is cancelled; some steps could not be removed from their queue (they will not start further steps): %w", id, errors.Join(errs...))
	}
	return st, nil
}

// removeTask deletes a waiting step's task, or tells a running one to
// stop.
func (c *Client) removeTask(ctx context.Context, queue, taskID string) error {
	info, err := c.insp.GetTaskInfo(queue, taskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("task %s: %w", taskID, err)
	}
	if info.State == asynq.TaskStateActive {
		// The worker running it stops it and archives it, "cancelled by
		// workflow", without a retry (package control).
		if err := control.Publish(ctx, c.rdb, control.Request{Queue: queue, ID: taskID, By: "workflow"}); err != nil {
			return fmt.Errorf("cancel task %s: %w", taskID, err)
		}
		return nil
	}
	if info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived {
		return nil
	}
	if err := c.insp.DeleteTask(queue, taskID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
		return fmt.Errorf("delete task %s: %w", taskID, err)
	}
	return nil
}

// Wait reads workflow id's state every interval (0: 100ms) until it is
// final or ctx ends, calling progress (when not nil) with each state that
// changed, and returns the last one.
func (c *Client) Wait(ctx context.Context, id string, interval time.Duration, progress func(*State)) (*State, error) {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last *State
	for {
		st, err := c.Get(ctx, id)
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
		case <-t.C:
		}
	}
}

// Result returns the result of the step (or chain or group) at path of
// workflow id, as Previous reads it: a task step's handler's bytes (nil:
// none), a chain's last step's, a group's callback's, or for a group
// without one the JSON array of its members' results.
func (c *Client) Result(ctx context.Context, id, path string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return c.resultOf(ctx, id, path, false)
}
