package faults

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/tasks"
)

// Test-only task types, served only by the in-process servers below, never
// by tasks.Default().
const (
	typePanic    = "fault:panic"
	typeStubborn = "fault:stubborn"
)

// panicArgs is the payload of fault:panic, whose handler panics with
// Message.
type panicArgs struct {
	Message string `json:"message"`
}

// stubbornArgs is the payload of fault:stubborn, whose handler sleeps
// SleepMS milliseconds whatever its ctx says.
type stubbornArgs struct {
	SleepMS int `json:"sleep_ms"`
}

// calls records the handler calls of the test-only types by task id (how
// many began, how many ran at most at once, which still run) and counts
// the calls of the whole mux still running, log line included.
type calls struct {
	mu      sync.Mutex
	begun   map[string]int
	running map[string]int
	peak    map[string]int
	inMux   int
	started chan string
}

func newCalls() *calls {
	return &calls{begun: map[string]int{}, running: map[string]int{}, peak: map[string]int{}, started: make(chan string, 100)}
}

func (c *calls) enter(ctx context.Context) (leave func()) {
	id, _ := asynq.GetTaskID(ctx)
	c.mu.Lock()
	c.begun[id]++
	c.running[id]++
	c.peak[id] = max(c.peak[id], c.running[id])
	c.mu.Unlock()
	select {
	case c.started <- id:
	default:
	}
	return func() {
		c.mu.Lock()
		c.running[id]--
		c.mu.Unlock()
	}
}

// track wraps the mux so that waitIdle can wait for every call, its log
// line included.
func (c *calls) track(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		c.mu.Lock()
		c.inMux++
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.inMux--
			c.mu.Unlock()
		}()
		return h.ProcessTask(ctx, t)
	})
}

// waitIdle waits up to timeout until no call of the mux runs, and reports
// whether none does.
func (c *calls) waitIdle(timeout time.Duration) bool {
	return waitUntil(timeout, 10*time.Millisecond, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.inMux == 0
	})
}

// get returns how many calls of id began, ran at most at once, and run now.
func (c *calls) get(id string) (begun, peak, running int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.begun[id], c.peak[id], c.running[id]
}

// faultRegistry returns the test-only types and data:process, recording
// the calls of the former in c. fault:panic keeps asynq's retry policy to
// 2 retries; fault:stubborn has 1 retry and a 1s timeout.
func faultRegistry(tb testing.TB, c *calls) *tasks.Registry {
	tb.Helper()
	panicking := tasks.Define(typePanic, "test only: panics",
		func(ctx context.Context, _ tasks.Deps, p panicArgs) ([]byte, error) {
			defer c.enter(ctx)()
			panic(p.Message)
		},
		asynq.Queue("default"), asynq.MaxRetry(2))
	stubborn := tasks.Define(typeStubborn, "test only: sleeps, ignoring its context",
		func(ctx context.Context, _ tasks.Deps, p stubbornArgs) ([]byte, error) {
			defer c.enter(ctx)()
			time.Sleep(time.Duration(p.SleepMS) * time.Millisecond) // ignores ctx on purpose
			return nil, nil
		},
		asynq.Queue("default"), asynq.MaxRetry(1), asynq.Timeout(time.Second)) // asynq counts whole seconds
	process, ok := tasks.Default().Lookup(tasks.TypeProcessData)
	if !ok {
		tb.Fatal("no data:process in tasks.Default()")
	}
	reg, err := tasks.NewRegistry(panicking, stubborn, process)
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

// inProcess is an asynq server with tasks.NewMux in the test process, on
// a private Redis, configured as cmd/worker configures its own, except for
// short retry delays.
type inProcess struct {
	reg    *tasks.Registry
	srv    *asynq.Server
	client *asynq.Client
	in     *asynq.Inspector
	logs   *observer.ObservedLogs
}

func startInProcess(t *testing.T, c *calls, shutdownTimeout time.Duration) *inProcess {
	t.Helper()
	r := proctest.RedisServer(t)
	rdb := redisClient(t, r.URL())
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	reg := faultRegistry(t, c)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       4,
		Queues:            map[string]int{"default": 1},
		ShutdownTimeout:   shutdownTimeout,
		TaskCheckInterval: 10 * time.Millisecond,
		// Not the worker's: retries and their forwarding come at once, so
		// that retry policies play out in seconds.
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		Logger:                   asynqLogger{log.Named("asynq").Sugar()},
		LogLevel:                 asynq.WarnLevel,
	})
	if err := srv.Start(c.track(tasks.NewMux(reg, tasks.Deps{Cache: m, Logger: log}))); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the server stops, the handlers it gave up
	// on finish (and log, before the test's logger goes), then the manager
	// closes.
	t.Cleanup(func() { _ = m.Close() })
	t.Cleanup(func() {
		if !c.waitIdle(30 * time.Second) {
			t.Error("handlers still running 30s after the server's shutdown")
		}
	})
	t.Cleanup(srv.Shutdown)
	return &inProcess{reg: reg, srv: srv, client: asynq.NewClientFromRedisClient(rdb), in: asynq.NewInspectorFromRedisClient(rdb), logs: logs}
}

// enqueue enqueues a task of the registry with id.
func (p *inProcess) enqueue(t *testing.T, typ, payload, id string, opts ...asynq.Option) {
	t.Helper()
	task, err := p.reg.NewTask(typ, []byte(payload), append(opts, asynq.TaskID(id))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.client.EnqueueContext(context.Background(), task); err != nil {
		t.Fatal(err)
	}
}

// enqueueProcess enqueues n data:process tasks, kept once done; it returns
// their ids.
func (p *inProcess) enqueueProcess(t *testing.T, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		p.enqueue(t, tasks.TypeProcessData, fmt.Sprintf(`{"key":%q,"work":2000}`, id), id, asynq.Retention(time.Hour))
		ids = append(ids, id)
	}
	return ids
}

// waitState waits up to timeout for task id to reach state.
func (p *inProcess) waitState(t *testing.T, id string, state asynq.TaskState, timeout time.Duration) *asynq.TaskInfo {
	t.Helper()
	var (
		info *asynq.TaskInfo
		err  error
	)
	if !waitUntil(timeout, 20*time.Millisecond, func() bool {
		info, err = p.in.GetTaskInfo("default", id)
		return err == nil && info.State == state
	}) {
		t.Fatalf("task %s: %+v, %v after %v; want %v", id, info, err, timeout, state)
	}
	return info
}

// lines returns the mux's log lines of task id.
func (p *inProcess) lines(id string) []string {
	var out []string
	for _, e := range p.logs.All() {
		if e.ContextMap()["task_id"] == id {
			out = append(out, fmt.Sprintf("%s (%v)", e.Message, e.ContextMap()["outcome"]))
		}
	}
	return out
}

// TestHandlerFaults runs handlers that panic or ignore their context on an
// in-process asynq server with tasks.NewMux: the server survives and keeps
// serving other tasks, and asynq retries and archives the faulty tasks by
// their policy.
func TestHandlerFaults(t *testing.T) {
	t.Parallel()

	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		c := newCalls()
		p := startInProcess(t, c, 8*time.Second)
		p.enqueue(t, typePanic, `{"message":"boom"}`, "panic-1")
		others := p.enqueueProcess(t, "beside-panic", 20)

		info := p.waitState(t, "panic-1", asynq.TaskStateArchived, 30*time.Second)
		if info.Retried != 2 || info.MaxRetry != 2 {
			t.Errorf("archived after %d of %d retries, want 2 of 2", info.Retried, info.MaxRetry)
		}
		if !strings.Contains(info.LastErr, "panic") || !strings.Contains(info.LastErr, "boom") {
			t.Errorf("last error %q, want the panic's", info.LastErr)
		}
		if begun, peak, _ := c.get("panic-1"); begun != 3 || peak != 1 {
			t.Errorf("handler called %d times, at most %d at once; want 3, one at a time", begun, peak)
		}
		if got := p.lines("panic-1"); len(got) != 3 || !allHavePrefix(got, msgFailed) ||
			got[0] != msgFailed+" (retry)" || got[2] != msgFailed+" (archived)" {
			t.Errorf("log lines %q, want 3 %q, the first with outcome retry, the last archived", got, msgFailed)
		}
		waitCompleted(t, p.in, "default", others, 30*time.Second)
		after := p.enqueueProcess(t, "after-panic", 5)
		waitCompleted(t, p.in, "default", after, 30*time.Second)
		t.Logf("panic-1: %q; archived with %q; the %d other tasks completed", p.lines("panic-1"), info.LastErr, len(others)+len(after))
	})

	t.Run("ignores its context past its timeout", func(t *testing.T) {
		t.Parallel()
		c := newCalls()
		p := startInProcess(t, c, 8*time.Second)
		start := time.Now()
		p.enqueue(t, typeStubborn, `{"sleep_ms":4000}`, "stubborn-1")
		others := p.enqueueProcess(t, "beside-stubborn", 20)

		info := p.waitState(t, "stubborn-1", asynq.TaskStateArchived, 30*time.Second)
		archived := time.Since(start)
		if info.Retried != 1 || !strings.Contains(info.LastErr, "deadline exceeded") {
			t.Errorf("archived after %d retries with %q, want 1 retry and a deadline error", info.Retried, info.LastErr)
		}
		begun, peak, running := c.get("stubborn-1")
		t.Logf("archived %v after enqueueing (timeout 1s, 1 retry); handler calls: %d begun, %d at once, %d still running",
			archived.Round(time.Millisecond), begun, peak, running)
		if begun != 2 {
			t.Errorf("handler called %d times, want 2 (the call and its retry)", begun)
		}
		// asynq gives up on a call at its timeout without waiting for it
		// to return: the retry runs while the first call still sleeps.
		// Handlers that ignore ctx can so run twice at once; forgeq's
		// handlers respect it.
		if peak != 2 {
			t.Errorf("at most %d calls at once, want 2: asynq retried without waiting for the stubborn call", peak)
		}
		waitCompleted(t, p.in, "default", others, 30*time.Second)
		after := p.enqueueProcess(t, "after-stubborn", 5)
		waitCompleted(t, p.in, "default", after, 30*time.Second)

		if !c.waitIdle(30 * time.Second) { // the stubborn calls return in the end...
			t.Fatal("the stubborn calls never returned")
		}
		lines := p.lines("stubborn-1")
		t.Logf("the mux logged for stubborn-1: %q", lines)
		// ...and the mux logs each as it returns. Each call failed in
		// asynq's eyes (deadline exceeded), so none may say done.
		if len(lines) != 2 || !allHavePrefix(lines, msgFailed) {
			knownBug(t, muxLogsLateDone, "tasks/mux.go logged %q for two calls asynq counted as failed", lines)
		}
	})

	t.Run("ignores its context at shutdown", func(t *testing.T) {
		t.Parallel()
		const shutdownTimeout = time.Second
		c := newCalls()
		p := startInProcess(t, c, shutdownTimeout)
		p.enqueue(t, typeStubborn, `{"sleep_ms":6000}`, "stubborn-2", asynq.Timeout(time.Minute))
		select {
		case <-c.started:
		case <-time.After(30 * time.Second):
			t.Fatal("the stubborn task never started")
		}
		start := time.Now()
		p.srv.Shutdown()
		took := time.Since(start)
		_, _, running := c.get("stubborn-2")
		t.Logf("Shutdown returned after %v (ShutdownTimeout %v), the handler still running: %v", took.Round(time.Millisecond), shutdownTimeout, running == 1)
		if limit := shutdownTimeout + 1500*time.Millisecond; took > limit {
			t.Errorf("Shutdown took %v, want at most %v", took, limit)
		}
		if running != 1 {
			t.Errorf("%d calls running after Shutdown, want the stubborn one", running)
		}
		info, err := p.in.GetTaskInfo("default", "stubborn-2")
		if err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
			t.Errorf("after Shutdown: %+v, %v; want pending again, no retry", info, err)
		}
		if !c.waitIdle(30 * time.Second) {
			t.Fatal("the stubborn call never returned")
		}
		if lines := p.lines("stubborn-2"); len(lines) != 1 || !strings.HasPrefix(lines[0], msgInterrupted) {
			knownBug(t, muxLogsLateDone, "tasks/mux.go logged %q for a call asynq gave up on at shutdown, its task back in the queue", lines)
		}
	})
}

func allHavePrefix(ss []string, prefix string) bool {
	for _, s := range ss {
		if !strings.HasPrefix(s, prefix) {
			return false
		}
	}
	return true
}

// asynqLogger passes asynq's logs to zap; Fatal is logged as an error, as
// cmd/worker does, so that asynq cannot end the test process.
type asynqLogger struct{ *zap.SugaredLogger }

func (l asynqLogger) Fatal(args ...any) { l.Error(args...) }
