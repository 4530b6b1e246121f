package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/tasks"
)

// cancelBundle is a cancels whose middleware serves task "t-1" of queue
// "q", with its log and ignored count.
type cancelBundle struct {
	c       *cancels
	logs    *observer.ObservedLogs
	ignored atomic.Int32
}

func setupCancels(tb testing.TB) *cancelBundle {
	tb.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	b := &cancelBundle{logs: logs}
	b.c = newCancels(zap.New(core), func(typ, queue string) {
		if typ == "t:x" && queue == "q" {
			b.ignored.Add(1)
		}
	})
	b.c.meta = func(context.Context) taskMeta { return taskMeta{id: "t-1", queue: "q"} }
	b.c.ignoredAfter = time.Hour // the tests that want a report set it
	b.c.grace = time.Hour
	return b
}

// run runs h through the middleware in a goroutine and returns its error
// channel, once h has started.
func (b *cancelBundle) run(tb testing.TB, h func(ctx context.Context) error) <-chan error {
	tb.Helper()
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- b.c.middleware(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
			close(started)
			return h(ctx)
		})).ProcessTask(context.Background(), asynq.NewTask("t:x", nil))
	}()
	<-started
	return errc
}

func wantCancelled(tb testing.TB, err error, by string) {
	tb.Helper()
	var ce *tasks.CancelledError
	if !errors.As(err, &ce) || ce.By != by {
		tb.Fatalf("error = %v, want a *tasks.CancelledError by %q", err, by)
	}
	if !errors.Is(err, asynq.SkipRetry) {
		tb.Errorf("error %v does not wrap asynq.SkipRetry: asynq would retry it", err)
	}
	if err.Error() != "cancelled by "+by {
		tb.Errorf("error = %q, want %q (the archived task's reason)", err, "cancelled by "+by)
	}
	if got := tasks.Outcome(context.Background(), err); got != tasks.OutcomeCancelled {
		tb.Errorf("Outcome = %q, want %q", got, tasks.OutcomeCancelled)
	}
}

func TestCancelsStopARunningTask(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	errc := b.run(t, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	b.c.signal(control.Request{Queue: "other", ID: "t-1", By: "eve"}) // another task: kept, no effect
	b.c.signal(control.Request{Queue: "q", ID: "t-1", By: "alice"})
	b.c.signal(control.Request{Queue: "q", ID: "t-1", By: "bob"}) // a repeat changes nothing
	wantCancelled(t, <-errc, "alice")
	if n := b.ignored.Load(); n != 0 {
		t.Errorf("ignored count = %d, want 0: the handler stopped", n)
	}
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if len(b.c.running) != 0 {
		t.Errorf("running = %v, want none left", b.c.running)
	}
}

func TestCancelsStopATaskSignalledBeforeItStarts(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	b.c.signal(control.Request{Queue: "q", ID: "t-1", By: "alice"})
	errc := b.run(t, func(ctx context.Context) error {
		<-ctx.Done()
		return nil // a nil after a cancellation is no success
	})
	wantCancelled(t, <-errc, "alice")
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if len(b.c.early) != 0 {
		t.Errorf("early = %v, want the request used up", b.c.early)
	}
}

func TestCancelsForgetOldEarlyRequests(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	now := time.Now()
	b.c.now = func() time.Time { return now }
	b.c.signal(control.Request{Queue: "q", ID: "old", By: "alice"})
	now = now.Add(cancelEarlyFor + time.Second)
	b.c.signal(control.Request{Queue: "q", ID: "new", By: "alice"})
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if _, ok := b.c.early[taskRef{"q", "old"}]; ok || len(b.c.early) != 1 {
		t.Errorf("early = %v, want only the new request", b.c.early)
	}
}

func TestCancelsLeaveOtherTasksAlone(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	boom := errors.New("boom")
	if err := <-b.run(t, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("error = %v, want the handler's", err)
	}
	if err := <-b.run(t, func(context.Context) error { return nil }); err != nil {
		t.Errorf("error = %v, want nil", err)
	}

	// A panic reaches the middleware outside, which counts and logs it.
	defer func() {
		if p := recover(); p != "oops" {
			t.Errorf("recovered %v, want the handler's panic", p)
		}
	}()
	_ = b.c.middleware(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { panic("oops") })).
		ProcessTask(context.Background(), asynq.NewTask("t:x", nil))
}

func TestCancelsPassTasksWithoutID(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	b.c.meta = asynqMeta // outside a server: no id
	var sawCtx context.Context
	ctx := context.WithValue(context.Background(), taskRef{}, "mine")
	err := b.c.middleware(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		sawCtx = ctx
		return nil
	})).ProcessTask(ctx, asynq.NewTask("t:x", nil))
	if err != nil || sawCtx != ctx {
		t.Errorf("error %v, ctx %v: want the call passed on as it is", err, sawCtx)
	}
}

// A handler that goes on after the cancellation is reported, and its task
// is still cancelled when it returns.
func TestCancelsReportAHandlerThatIgnoresItsContext(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	b.c.ignoredAfter = time.Nanosecond
	release := make(chan struct{})
	errc := b.run(t, func(context.Context) error {
		<-release // ignores ctx
		return nil
	})
	b.c.signal(control.Request{Queue: "q", ID: "t-1", By: "alice"})
	e := waitLog(t, b.logs, "cancelled task's handler ignores its context")
	if f := e.ContextMap(); f["task_id"] != "t-1" || f["cancelled_by"] != "alice" {
		t.Errorf("log fields = %v", f)
	}
	close(release)
	wantCancelled(t, <-errc, "alice")
	if n := b.ignored.Load(); n != 1 {
		t.Errorf("ignored count = %d, want 1", n)
	}
}

// After the grace period the task is archived as cancelled without its
// handler, which is logged again when it returns at last.
func TestCancelsGiveUpOnAHandlerAfterTheGrace(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	b.c.ignoredAfter, b.c.grace = time.Nanosecond, time.Nanosecond
	release := make(chan struct{})
	errc := b.run(t, func(context.Context) error {
		<-release
		return errors.New("too late")
	})
	b.c.signal(control.Request{Queue: "q", ID: "t-1", By: "alice"})
	wantCancelled(t, <-errc, "alice") // while the handler still runs
	waitLog(t, b.logs, "cancelled task archived while its handler still runs")
	if n := b.ignored.Load(); n != 1 {
		t.Errorf("ignored count = %d, want 1", n)
	}
	close(release)
	waitLog(t, b.logs, "handler of a cancelled task returned at last")
}

// listen passes the requests of the channel to the middleware.
func TestCancelsListen(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	b := setupCancels(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := b.c.subscribe(ctx, rdb, 5*time.Second)
	done := make(chan struct{})
	go func() { b.c.listen(ctx, sub); close(done) }()

	errc := b.run(t, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if err := rdb.Publish(ctx, control.Channel, "not json").Err(); err != nil {
		t.Fatal(err)
	}
	if err := control.Publish(ctx, rdb, control.Request{Queue: "q", ID: "t-1", By: "alice"}); err != nil {
		t.Fatal(err)
	}
	wantCancelled(t, <-errc, "alice")
	waitLog(t, b.logs, "cancellation channel: bad message")
	cancel()
	<-done
}

// BenchmarkCancelsMiddleware is the cost the cancellation middleware adds
// to each task: a map entry and a goroutine for the handler.
func BenchmarkCancelsMiddleware(b *testing.B) {
	c := newCancels(zap.NewNop(), nil)
	var n atomic.Int64
	c.meta = func(context.Context) taskMeta { return taskMeta{id: "t-" + string(rune('a'+n.Add(1)%26)), queue: "q"} }
	h := c.middleware(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	task := asynq.NewTask("t:x", nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = h.ProcessTask(ctx, task)
		}
	})
}

// A task cancelled while it ran on a worker that died before it heard of
// it comes back through asynq's lease recovery as a retry: the worker
// that takes it finds the request in Redis and does not run it again.
func TestCancelsRequestedBeforeARetry(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	// What control.Cancel leaves for an active task (its worker gone):
	// asynq's task hash in state active, then the request.
	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, asynq.NewTask("t:x", nil), asynq.Queue("q"), asynq.TaskID("t-1")); err != nil {
		t.Fatal(err)
	}
	if err := rdb.LRem(ctx, "asynq:{q}:pending", 0, "t-1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.LPush(ctx, "asynq:{q}:active", "t-1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "asynq:{q}:t:t-1", "state", "active").Err(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, _ = control.Cancel(cctx, rdb, "q", "t-1", "alice") // nobody answers: it gives up at ctx's end
	b := setupCancels(t)
	b.c.requested = func(ctx context.Context, queue, id string) (string, bool, error) {
		return control.Requested(ctx, rdb, queue, id)
	}
	ran := false
	h := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { ran = true; return nil })
	// A first attempt is not looked up (costs nothing).
	if err := b.c.middleware(h).ProcessTask(ctx, asynq.NewTask("t:x", nil)); err != nil || !ran {
		t.Fatalf("first attempt: %v, ran %v", err, ran)
	}
	ran = false
	b.c.meta = func(context.Context) taskMeta { return taskMeta{id: "t-1", queue: "q", retried: 1} }
	err := b.c.middleware(h).ProcessTask(ctx, asynq.NewTask("t:x", nil))
	wantCancelled(t, err, "alice")
	if ran {
		t.Fatal("the cancelled task ran again")
	}
}
