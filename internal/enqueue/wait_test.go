package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/taskctx"
	"github.com/forgeq/forgeq/tasks"
)

// startWorker runs an asynq server with forgeq's handlers on url until the
// test ends, checking for new tasks every 10ms.
func startWorker(tb testing.TB, url string) {
	tb.Helper()
	m, err := cachemgr.New(cachemgr.Options{URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	log := zaptest.NewLogger(tb)
	srv := asynq.NewServerFromRedisClient(m.Client(), asynq.Config{
		Concurrency:       4,
		Queues:            map[string]int{"default": 1, "low": 1},
		TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout:   time.Second,
		Logger:            log.Sugar(),
		LogLevel:          asynq.WarnLevel,
	})
	pub := events.NewPublisher(m.Client(), events.PublisherOptions{})
	mux := tasks.NewMux(tasks.Default(), tasks.Deps{Cache: m, Logger: log})
	mux.Use(publishEvents(pub))
	if err := srv.Start(mux); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		srv.Shutdown()
		pub.Close()
		m.Close()
	})
	waitServed(tb, m, "default")
}

// publishEvents publishes the task events a worker publishes (package
// events) with pub, as the worker's own middleware does, which this
// package's tests cannot import: started, progress (through the ctx), and
// succeeded, or failed then retried or archived.
func publishEvents(pub *events.Publisher) asynq.MiddlewareFunc {
	return func(h asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			id, _ := asynq.GetTaskID(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			retried, _ := asynq.GetRetryCount(ctx)
			maxRetry, _ := asynq.GetMaxRetry(ctx)
			base := events.Event{Queue: queue, TaskID: id, Type: t.Type(), Attempt: retried + 1}
			publish := func(k events.Kind, err error, result []byte) {
				e := base
				e.Kind, e.Time, e.Result = k, time.Now(), result
				if err != nil {
					e.Error = err.Error()
				}
				pub.Publish(e)
			}
			publish(events.Started, nil, nil)
			var result []byte
			ctx = taskctx.WithResult(ctx, func(b []byte) { result = b })
			err := h.ProcessTask(taskctx.WithAttempt(ctx, &taskctx.Attempt{Pub: pub, Base: base}), t)
			switch {
			case err == nil:
				publish(events.Succeeded, nil, result)
			case retried >= maxRetry || errors.Is(err, asynq.SkipRetry):
				publish(events.Failed, err, nil)
				publish(events.Archived, err, nil)
			default:
				publish(events.Failed, err, nil)
				publish(events.Retried, err, nil)
			}
			return err
		})
	}
}

// waitServed waits for the heartbeat of a server of queue, which --wait
// looks for.
func waitServed(tb testing.TB, m *cachemgr.Manager, queue string) {
	tb.Helper()
	insp := asynq.NewInspectorFromRedisClient(m.Client())
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		servers, _ := insp.Servers()
		for _, s := range servers {
			if _, ok := s.Queues[queue]; ok {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no server of queue %q wrote a heartbeat within 5s", queue)
		}
	}
}

// TestWait runs a worker and follows tasks with --wait to each end.
func TestWait(t *testing.T) {
	tb := setup(t, dbWait)
	startWorker(t, tb.url)

	t.Run("completes", func(t *testing.T) {
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:1", "work": 1000}`, "--wait")
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		want := tasks.Digest("wait:1", 1000)
		for _, s := range []string{"enqueued task", "completed after", `"value":"` + want + `"`, `"source":"computed"`} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
			}
		}
		if r.stderr != "" {
			t.Errorf("stderr = %q, want nothing without a terminal", r.stderr)
		}
	})

	t.Run("json", func(t *testing.T) {
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:1", "work": 1000}`, "--wait", "--json")
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		out := decodeJSON[taskJSON](t, r.stdout)
		res, _ := json.Marshal(out.Result)
		var got tasks.ProcessDataResult
		if err := json.Unmarshal(res, &got); err != nil {
			t.Fatalf("result %s: %v", res, err)
		}
		if out.State != "completed" || out.Waited == nil || got.Key != "wait:1" || got.Source != tasks.SourceCache {
			t.Errorf("output %+v, result %+v; want completed, the cached value of wait:1", out, got)
		}
	})

	t.Run("no retention", func(t *testing.T) {
		// asynq deletes a task that completes with no retention, and its
		// result with it: the command prints the result its succeeded
		// event carried, and exits 0.
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:5", "work": 1}`, "--wait", "--retention", "0")
		if r.code != exitOK || !strings.Contains(r.stdout, "completed after") || !strings.Contains(r.stdout, tasks.Digest("wait:5", 1)) {
			t.Errorf("exit %d, stdout %q, stderr %q; want completed with the result", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("progress bar", func(t *testing.T) {
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:2", "work": 2000000}`, "--wait", "--progress", "always")
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, s := range []string{"100%", "computed and cached"} {
			if !strings.Contains(r.stderr, s) {
				t.Errorf("stderr lacks %q: %q", s, abbrev2k(r.stderr))
			}
		}
		// Whether a poll catches a report while the task runs depends on
		// timing here: "progress while running" makes sure of it.
	})

	t.Run("progress while running", func(t *testing.T) {
		testWaitShowsProgress(t, tb)
	})

	t.Run("archived", func(t *testing.T) {
		start := time.Now()
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:slow", "work": 50000000}`, "--wait", "--timeout", "1", "--max-retry", "0")
		if r.code != exitFailure {
			t.Fatalf("exit %d, want 1; stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "failed and was archived") || !strings.Contains(r.stderr, "deadline exceeded") {
			t.Errorf("stderr = %q, want the archived task's last error", r.stderr)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("took %v", took)
		}
	})

	t.Run("archived json", func(t *testing.T) {
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:slow2", "work": 50000000}`, "--wait", "--timeout", "1", "--max-retry", "0", "--json")
		if r.code != exitFailure {
			t.Fatalf("exit %d, want 1; stderr %q", r.code, r.stderr)
		}
		out := decodeJSON[taskJSON](t, r.stdout)
		if out.State != "archived" || !strings.Contains(out.LastError, "deadline exceeded") {
			t.Errorf("output %+v", out)
		}
	})

	t.Run("wait timeout", func(t *testing.T) {
		start := time.Now()
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:3", "work": 1}`, "--wait", "--delay", "1h", "--wait-timeout", "300ms")
		if r.code != exitFailure || !strings.Contains(r.stderr, "gave up waiting after 300ms (--wait-timeout)") || !strings.Contains(r.stderr, "still scheduled") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("took %v", took)
		}
	})

	t.Run("unserved queue", func(t *testing.T) {
		r := runCmd(t, tb.env, "", "data:process", `{"key": "wait:4", "work": 1}`, "--wait", "--queue", "nobody", "--wait-timeout", "100ms")
		if r.code != exitFailure || !strings.Contains(r.stderr, `serves queue "nobody"`) {
			t.Errorf("exit %d, stderr %q; want a warning that no worker serves the queue", r.code, r.stderr)
		}
	})
}

// progressQueue is the queue of testWaitShowsProgress's own server.
const progressQueue = "progress"

// testWaitShowsProgress checks that --wait draws what a running task
// reports, not only the 100% that finishing the bar always draws. Its
// handler, on a server of its own for progressQueue, reports 25%, 50% and
// 75% through tasks.Deps.ReportProgress, as forgeq's handlers do, and after
// each report holds the task until the bar on the command's stderr shows
// that percentage. So the test does not depend on where --wait's polls fall
// between the reports: were the bar not to show a report while the task
// runs, the handler would give up after 30s, the task would be archived
// and the command exit 1. Its server publishes no task events (as a worker
// with WORKER_EVENTS=false): the bar moves through --wait's state check,
// once a second (stateCheck), or on the polling schedule when the queue
// has no event stream when the wait begins. TestWaitFollowsEvents has the
// events; TestWaitWithoutEvents the command with events off.
func testWaitShowsProgress(t *testing.T, tb *testBundle) {
	steps := []int{25, 50, 75}
	const hold = 30 * time.Second

	m, err := cachemgr.New(cachemgr.Options{URL: tb.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var stdout, stderr syncBuffer
	deps := tasks.Deps{Cache: m}
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeProcessData, func(ctx context.Context, _ *asynq.Task) error {
		for _, pct := range steps {
			if err := deps.ReportProgress(ctx, float64(pct), fmt.Sprintf("step to %d", pct)); err != nil {
				return err
			}
			deadline := time.Now().Add(hold)
			for !strings.Contains(stderr.String(), fmt.Sprintf("%d%% |", pct)) {
				if time.Now().After(deadline) {
					return fmt.Errorf("the bar did not show %d%% within %v of the report", pct, hold)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
		return nil
	})
	srv := asynq.NewServerFromRedisClient(m.Client(), asynq.Config{
		Concurrency:       1,
		Queues:            map[string]int{progressQueue: 1},
		TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout:   time.Second,
		Logger:            zaptest.NewLogger(t).Sugar(),
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	waitServed(t, m, progressQueue)

	r := runCmdTo(t, &stdout, &stderr, tb.env, "", "data:process", `{"key": "wait:progress", "work": 1}`,
		"--wait", "--queue", progressQueue, "--max-retry", "0", "--wait-timeout", "2m", "--progress", "always")
	if r.code != exitOK {
		t.Fatalf("exit %d; stdout %q, stderr %q", r.code, r.stdout, abbrev2k(r.stderr))
	}
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("stderr has a warning: %q", abbrev2k(r.stderr))
	}
	// Each report drawn in turn while the task ran, then the full bar.
	at := 0
	for _, want := range []string{"25% |", "step to 25", "50% |", "75% |", "step to 75", "100% |"} {
		i := strings.Index(r.stderr[at:], want)
		if i < 0 {
			t.Fatalf("stderr lacks %q after byte %d: %q", want, at, abbrev2k(r.stderr))
		}
		at += i
	}
}

// Databases of the real test Redis that the waits without events use.
const (
	dbWaitNoEvents     = 58 // TestWaitWithoutEvents
	dbWorkflowNoEvents = 59 // TestWorkflowWaitWithoutEvents
	dbWaitEarlyCheck   = 60 // TestWaitEarlyCheck
)

// silentQueue is the queue of the servers that publish no task events.
const silentQueue = "silent"

// typeHold is the task type of testWaitWithoutEvents's server.
const typeHold = "test:hold"

// waitConn connects as the command does, with env as its whole
// environment, and returns a cli whose waits that follow events read the
// state only once an hour: a wait that ends, or moves its bar, within the
// test did so through another read of the state.
func waitConn(tb testing.TB, env map[string]string, stderr *syncBuffer) (*cli, *conn) {
	tb.Helper()
	c := &cli{prog: "enqueue", getenv: func(k string) string { return env[k] }, stdout: &syncBuffer{}, stderr: stderr,
		now: time.Now, stateCheck: time.Hour}
	c.f.progress = "always"
	cfg, err := c.loadConfig(nil)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := c.connect(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.close)
	return c, k
}

// startSilentServer runs an asynq server for silentQueue on url that
// publishes no task events (as a worker with WORKER_EVENTS=false). Its
// typeHold handler reports 50%, with the message "<task id>", and holds
// the task until stderr shows the report on the bar, for at most hold;
// then it succeeds, else it fails for good.
func startSilentServer(tb testing.TB, url string, stderr *syncBuffer, hold time.Duration) *cachemgr.Manager {
	tb.Helper()
	m, err := cachemgr.New(cachemgr.Options{URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	deps := tasks.Deps{Cache: m}
	mux := asynq.NewServeMux()
	mux.HandleFunc(typeHold, func(ctx context.Context, _ *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		mark := "<" + id + ">"
		if err := deps.ReportProgress(ctx, 50, mark); err != nil {
			return err
		}
		for deadline := time.Now().Add(hold); !strings.Contains(stderr.String(), mark); {
			if time.Now().After(deadline) {
				return fmt.Errorf("the bar did not show the report within %v", hold)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		return nil
	})
	srv := asynq.NewServerFromRedisClient(m.Client(), asynq.Config{
		Concurrency:       1,
		Queues:            map[string]int{silentQueue: 1},
		TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout:   time.Second,
		Logger:            zaptest.NewLogger(tb).Sugar(),
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(mux); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	waitServed(tb, m, silentQueue)
	return m
}

// TestWaitWithoutEvents runs a server that publishes no task events and
// follows its tasks with --wait, whose state check (once a second, once an
// hour here) would be all that moves the bar and ends the wait: with
// events off in the command's settings (WORKER_EVENTS=false) it polls, and
// with events on but no event stream for the queue when the wait begins,
// it reads the state on the polling schedule too. Each wait must show the
// handler's report, which the handler waits for, and end.
func TestWaitWithoutEvents(t *testing.T) {
	tb := setup(t, dbWaitNoEvents)
	var stderr syncBuffer
	m := startSilentServer(t, tb.url, &stderr, 20*time.Second)
	tests := []struct {
		name       string
		giveEnv    map[string]string
		giveStream bool // the queue has an event stream when the wait begins
	}{
		{name: "events off", giveEnv: map[string]string{"WORKER_EVENTS": "false"}, giveStream: true},
		{name: "no event stream", giveStream: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"REDIS_CONNECTION_URL": tb.url}
			maps.Copy(env, tt.giveEnv)
			c, k := waitConn(t, env, &stderr)
			stream := events.StreamKey(silentQueue)
			if err := tb.rdb.Del(context.Background(), stream).Err(); err != nil {
				t.Fatal(err)
			}
			if tt.giveStream {
				if err := tb.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []any{"k", "progress", "i", "other"}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			info, err := asynq.NewClientFromRedisClient(m.Client()).EnqueueContext(context.Background(),
				asynq.NewTask(typeHold, nil), asynq.Queue(silentQueue), asynq.MaxRetry(0), asynq.Retention(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.wait(context.Background(), k, info, time.Minute); err != nil {
				t.Fatalf("wait: %v; stderr %q", err, abbrev2k(stderr.String()))
			}
			if out := c.stdout.(*syncBuffer).String(); !strings.Contains(out, "completed after") {
				t.Errorf("stdout %q, want the completed task", out)
			}
		})
	}
}

// TestWaitEarlyCheck checks the race events.EarlyCheck covers: the task's
// final event is in the stream before the wait reads its position, and
// asynq records the end just after the wait's first state read (here the
// task is archived then). With the state read once an hour otherwise, only
// the early check can see the end.
func TestWaitEarlyCheck(t *testing.T) {
	tb := setup(t, dbWaitEarlyCheck)
	var stderr syncBuffer
	c, k := waitConn(t, map[string]string{"REDIS_CONNECTION_URL": tb.url}, &stderr)
	const queue = "early"
	info, err := asynq.NewClientFromRedisClient(tb.rdb).EnqueueContext(context.Background(),
		asynq.NewTask(typeHold, nil), asynq.Queue(queue), asynq.MaxRetry(0), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pub := events.NewPublisher(tb.rdb, events.PublisherOptions{})
	defer pub.Close()
	pub.Publish(events.Event{Kind: events.Archived, Queue: queue, TaskID: info.ID, Attempt: 1, Error: "boom"})
	if err := pub.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := make(chan error, 1)
	go func() { out <- c.wait(context.Background(), k, info, time.Minute) }()
	time.Sleep(25 * time.Millisecond) // after the first state read, most likely (EarlyCheck is 100 ms)
	if err := asynq.NewInspectorFromRedisClient(tb.rdb).ArchiveTask(queue, info.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-out:
		if err == nil {
			t.Fatalf("wait = nil for an archived task; stdout %q", c.stdout.(*syncBuffer).String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("wait did not read the state again")
	}
}
