package worker

import (
	"context"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
)

// How a worker handles a cancelled task's handler: one that has not
// returned cancelIgnoredAfter after its context was cancelled is reported
// as ignoring it (a warning, forgeq_tasks_cancel_ignored_total); one still
// running after cancelGrace is left to finish on its own, and the task is
// archived as cancelled without it.
const (
	cancelIgnoredAfter = time.Second
	cancelGrace        = 5 * time.Second
)

// cancelEarlyFor is how long a worker keeps a cancellation of a task it
// does not run: the task may have been fetched and not have reached the
// middleware yet.
const cancelEarlyFor = 15 * time.Second

// taskRef names a task: ids are unique within a queue.
type taskRef struct{ queue, id string }

// cancelling is a task running in this worker, with what a cancellation
// of it needs.
type cancelling struct {
	cancel context.CancelFunc
	stop   chan struct{} // closed when it is cancelled
	by     string        // set with stop
	at     time.Time
}

// cancels stops the tasks that control.Cancel cancels while they run in
// this worker: its listen receives the requests on control.Channel, and
// its middleware runs each task's handler under a context it cancels on
// request. A cancelled task's error is a *tasks.CancelledError, which
// asynq archives without a retry. cancels is safe for concurrent use.
type cancels struct {
	log     *zap.Logger
	ignored func(taskType, queue string) // counts a handler that ignores its context
	meta    func(context.Context) taskMeta
	now     func() time.Time
	// The delays above, fields for the tests.
	ignoredAfter, grace, earlyFor time.Duration

	// requested, when not nil, reads a cancellation asked while a task
	// ran (control.Requested): checked before a retried task runs.
	requested func(ctx context.Context, queue, id string) (by string, ok bool, err error)

	mu      sync.Mutex
	running map[taskRef]*cancelling
	early   map[taskRef]control.Request // requests for tasks not running here, by when they came
	earlyAt map[taskRef]time.Time
}

func newCancels(log *zap.Logger, ignored func(taskType, queue string)) *cancels {
	return &cancels{
		log: log, ignored: ignored, meta: asynqMeta, now: time.Now,
		ignoredAfter: cancelIgnoredAfter, grace: cancelGrace, earlyFor: cancelEarlyFor,
		running: make(map[taskRef]*cancelling),
		early:   make(map[taskRef]control.Request),
		earlyAt: make(map[taskRef]time.Time),
	}
}

// subscribe subscribes to control.Channel and waits up to timeout for
// Redis to confirm, so that the tasks the server starts next can be
// cancelled. A failure is logged: go-redis subscribes again on its own.
func (c *cancels) subscribe(ctx context.Context, rdb redis.UniversalClient, timeout time.Duration) *redis.PubSub {
	sub := rdb.Subscribe(ctx, control.Channel)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := sub.Receive(rctx); err != nil {
		c.log.Warn("cancellation channel: subscribe failed; retrying in the background",
			zap.String("channel", control.Channel), zap.Error(err))
	}
	return sub
}

// listen passes every request of sub to signal until ctx ends, then closes
// sub.
func (c *cancels) listen(ctx context.Context, sub *redis.PubSub) {
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			r, err := control.ParseRequest(msg.Payload)
			if err != nil {
				c.log.Warn("cancellation channel: bad message", zap.Error(err))
				continue
			}
			c.signal(r)
		}
	}
}

// signal cancels the task of r if it runs here, else keeps r for earlyFor.
func (c *cancels) signal(r control.Request) {
	ref := taskRef{r.Queue, r.ID}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.running[ref]; ok {
		t.stopWith(r.By, now)
		return
	}
	for k, at := range c.earlyAt { // few: the tasks cancelled in the last earlyFor
		if now.Sub(at) > c.earlyFor {
			delete(c.early, k)
			delete(c.earlyAt, k)
		}
	}
	c.early[ref], c.earlyAt[ref] = r, now
}

// stopWith cancels t's handler on behalf of by, once. Call it with the
// cancels' lock held.
func (t *cancelling) stopWith(by string, now time.Time) {
	select {
	case <-t.stop:
		return // already
	default:
	}
	t.by, t.at = by, now
	close(t.stop)
	t.cancel()
}

// handlerEnd is how a handler call ended.
type handlerEnd struct {
	err      error
	panicked any
	stopped  bool // it was cancelled before it returned
}

// middleware runs next in a goroutine under a context that a cancellation
// ends; see cancels.
func (c *cancels) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		m := c.meta(ctx)
		if m.id == "" || m.queue == "" {
			return next.ProcessTask(ctx, t)
		}
		ref := taskRef{m.queue, m.id}
		if m.retried > 0 && c.requested != nil {
			// Cancelled while it ran on a worker that died before it
			// heard of it: asynq's lease recovery gave it back.
			if by, ok, err := c.requested(ctx, m.queue, m.id); err != nil {
				return err // retried, as any failure to start
			} else if ok {
				c.log.Warn("task cancelled before it ran again", append(telemetry.LogFields(ctx), zap.String("task_id", m.id),
					zap.String("task_type", t.Type()), zap.String("queue", m.queue), zap.String("cancelled_by", by))...)
				return &tasks.CancelledError{By: by}
			}
		}
		hctx, cancel := context.WithCancel(ctx)
		defer cancel()
		run := &cancelling{cancel: cancel, stop: make(chan struct{})}
		c.mu.Lock()
		c.running[ref] = run
		if r, ok := c.early[ref]; ok {
			delete(c.early, ref)
			delete(c.earlyAt, ref)
			run.stopWith(r.By, c.now())
		}
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			if c.running[ref] == run {
				delete(c.running, ref)
			}
			c.mu.Unlock()
		}()

		done := make(chan handlerEnd, 1)
		go func() {
			end := handlerEnd{}
			defer func() {
				if p := recover(); p != nil {
					end.panicked = p
				}
				// From here on a cancellation does not stop it.
				c.mu.Lock()
				end.stopped = isClosed(run.stop)
				if c.running[ref] == run {
					delete(c.running, ref)
				}
				c.mu.Unlock()
				done <- end
			}()
			end.err = next.ProcessTask(hctx, t)
		}()

		stop := run.stop
		var ignoredC, graceC <-chan time.Time
		reported := false
		for {
			select {
			case end := <-done:
				if !end.stopped {
					if end.panicked != nil {
						panic(end.panicked) // for the metrics and logging middleware
					}
					return end.err
				}
				c.mu.Lock()
				by, at := run.by, run.at
				c.mu.Unlock()
				if !reported && c.now().Sub(at) >= c.ignoredAfter {
					c.reportIgnored(ctx, t, m, by, at)
				}
				return &tasks.CancelledError{By: by}
			case <-stop:
				stop = nil
				ti := time.NewTimer(c.ignoredAfter)
				defer ti.Stop()
				tg := time.NewTimer(c.grace)
				defer tg.Stop()
				ignoredC, graceC = ti.C, tg.C
			case <-ignoredC:
				ignoredC = nil
				c.mu.Lock()
				by, at := run.by, run.at
				c.mu.Unlock()
				reported = true
				c.reportIgnored(ctx, t, m, by, at)
			case <-graceC:
				c.mu.Lock()
				by, at := run.by, run.at
				c.mu.Unlock()
				if !reported {
					c.reportIgnored(ctx, t, m, by, at)
				}
				c.log.Warn("cancelled task archived while its handler still runs", append(telemetry.LogFields(ctx),
					zap.String("task_id", m.id), zap.String("task_type", t.Type()), zap.String("queue", m.queue),
					zap.String("cancelled_by", by), zap.Duration("grace", c.grace))...)
				go func() {
					<-done
					c.log.Warn("handler of a cancelled task returned at last", append(telemetry.LogFields(ctx),
						zap.String("task_id", m.id), zap.String("task_type", t.Type()), zap.String("queue", m.queue),
						zap.Duration("after", c.now().Sub(at)))...)
				}()
				return &tasks.CancelledError{By: by}
			}
		}
	})
}

// reportIgnored logs and counts a handler that went on after its
// cancellation; ctx is the task's.
func (c *cancels) reportIgnored(ctx context.Context, t *asynq.Task, m taskMeta, by string, at time.Time) {
	if c.ignored != nil {
		c.ignored(t.Type(), m.queue)
	}
	c.log.Warn("cancelled task's handler ignores its context", append(telemetry.LogFields(ctx),
		zap.String("task_id", m.id), zap.String("task_type", t.Type()), zap.String("queue", m.queue),
		zap.String("cancelled_by", by), zap.Duration("after", c.now().Sub(at)))...)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
