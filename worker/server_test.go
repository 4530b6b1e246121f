package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/internal/pickup"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

func TestServerConfig(t *testing.T) {
	t.Parallel()

	var cfg config.Config
	cfg.Worker = config.Worker{
		Concurrency: 7, Queues: map[string]int{"a": 2, "b": 1}, StrictPriority: true,
		ShutdownTimeout: 3 * time.Second, TaskCheckInterval: 15 * time.Millisecond, Pickup: config.PickupPoll,
	}
	cfg.Log.Level = "warn"
	if got := serverConfig(cfg, zap.NewNop()); got.TaskCheckInterval != 15*time.Millisecond {
		t.Errorf("WORKER_PICKUP=poll: TaskCheckInterval = %v, want the configured 15ms", got.TaskCheckInterval)
	}
	cfg.Worker.Pickup = config.PickupEvents
	got := serverConfig(cfg, zap.NewNop())
	if got.Concurrency != 7 || !got.StrictPriority || got.ShutdownTimeout != 3*time.Second ||
		got.TaskCheckInterval != pickup.TaskCheckInterval || got.LogLevel != asynq.WarnLevel || got.ErrorHandler != nil {
		t.Errorf("serverConfig = %+v", got)
	}
	if d := cmp.Diff(cfg.Worker.Queues, got.Queues); d != "" {
		t.Errorf("Queues (-want +got)\n%s", d)
	}
	got.Queues["c"] = 1
	if _, ok := cfg.Worker.Queues["c"]; ok {
		t.Error("Queues shares the config's map")
	}
	// With no retry delay configured, a failure waits as asynq's default
	// has it (15 s plus up to 30 s for the first retry); a postponement
	// waits its own delay.
	if d := got.RetryDelayFunc(0, errors.New("fail"), asynq.NewTask("t", nil)); d < 15*time.Second || d > 45*time.Second {
		t.Errorf("first retry after %v, want asynq's default of 15-45s", d)
	}
	if d := got.RetryDelayFunc(3, tasks.Postpone(300*time.Millisecond, tasks.PostponedConcurrency), asynq.NewTask("t", nil)); d != 300*time.Millisecond {
		t.Errorf("postponed for %v, want 300ms", d)
	}
	if got.DelayedTaskCheckInterval != time.Second {
		t.Errorf("DelayedTaskCheckInterval = %v, want 1s", got.DelayedTaskCheckInterval)
	}
}

func TestServerConfigRetryDelay(t *testing.T) {
	t.Parallel()

	var cfg config.Config
	cfg.Worker.RetryDelayMin, cfg.Worker.RetryDelayMax = 2*time.Second, 5*time.Second
	f := serverConfig(cfg, zap.NewNop()).RetryDelayFunc
	if f == nil {
		t.Fatal("no RetryDelayFunc")
	}
	for _, tt := range []struct {
		giveRetried    int
		wantLo, wantHi time.Duration
	}{
		{0, 2 * time.Second, 3 * time.Second},
		{1, 4 * time.Second, 5 * time.Second},
		{2, 5 * time.Second, 5 * time.Second},
	} {
		for range 100 {
			if d := f(tt.giveRetried, errors.New("fail"), asynq.NewTask("t", nil)); d < tt.wantLo || d > tt.wantHi {
				t.Fatalf("retry after %d: delay %v outside [%v, %v]", tt.giveRetried, d, tt.wantLo, tt.wantHi)
			}
		}
	}
}

func TestAsynqLevel(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give string
		want asynq.LogLevel
	}{
		{"debug", asynq.DebugLevel},
		{"info", asynq.InfoLevel},
		{"warn", asynq.WarnLevel},
		{"error", asynq.ErrorLevel},
		{"", asynq.InfoLevel},
	}
	for _, tt := range tests {
		if got := asynqLevel(tt.give); got != tt.want {
			t.Errorf("asynqLevel(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

func TestAsynqLoggerFatalDoesNotExit(t *testing.T) {
	t.Parallel()

	core, logs := observer.New(zapcore.DebugLevel)
	l := asynqLogger{zap.New(core).Sugar()}
	l.Debug("d")
	l.Info("i")
	l.Warn("w")
	l.Error("e")
	l.Fatal("f") // would end the test binary if it exited
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.Level.String()+":"+e.Message)
	}
	if d := cmp.Diff([]string{"debug:d", "info:i", "warn:w", "error:e", "error:f"}, got); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
}

func TestHealthCheckLogsTransitions(t *testing.T) {
	t.Parallel()

	core, logs := observer.New(zapcore.DebugLevel)
	check := healthCheck(zap.New(core))
	down := errors.New("connection refused")
	for _, err := range []error{nil, down, down, down, nil, nil, down} {
		check(err)
	}
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.Message)
	}
	want := []string{"redis health check failing", "redis health check passing again", "redis health check failing"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
}

// TestNewMuxCountsTasks runs tasks through the worker's mux: each is logged
// once and counted once, and a panic is counted as one, which the metrics
// middleware can only see from inside the logging middleware.
func TestNewMuxCountsTasks(t *testing.T) {
	t.Parallel()

	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	x, err := metrics.New(metrics.Options{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	type payload struct{}
	reg, err := tasks.NewRegistry(
		tasks.Define("test:ok", "succeeds", func(context.Context, tasks.Deps, payload) ([]byte, error) { return nil, nil }),
		tasks.Define("test:panic", "panics", func(context.Context, tasks.Deps, payload) ([]byte, error) { panic("boom") }),
		tasks.Define("test:fail", "fails for good", func(context.Context, tasks.Deps, payload) ([]byte, error) {
			return nil, fmt.Errorf("no: %w", asynq.SkipRetry)
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	mux := newMux(reg, tasks.Deps{Cache: m, Logger: zap.New(core)}, x, nil, nil, nil, nil, nil, nil)

	for _, typ := range []string{"test:ok", "test:panic", "test:fail"} {
		err := mux.ProcessTask(context.Background(), asynq.NewTask(typ, []byte("{}")))
		if (err == nil) != (typ == "test:ok") {
			t.Errorf("%s: error %v", typ, err)
		}
	}
	if err := mux.ProcessTask(context.Background(), asynq.NewTask("test:panic", []byte("{}"))); err == nil || !strings.Contains(err.Error(), "test:panic: handler panic: boom") {
		t.Errorf("panic became %v", err)
	}

	var gotLogs []string
	for _, e := range logs.All() {
		gotLogs = append(gotLogs, e.ContextMap()["task_type"].(string)+" "+e.Message+" "+e.ContextMap()["outcome"].(string))
	}
	wantLogs := []string{
		"test:ok task done done",
		"test:panic task failed retry",
		"test:fail task failed skip_retry",
		"test:panic task failed retry",
	}
	if d := cmp.Diff(wantLogs, gotLogs); d != "" {
		t.Errorf("log lines (-want +got)\n%s", d)
	}

	families, err := x.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "forgeq_tasks_") {
			continue
		}
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"forgeq_tasks_processed_total{queue=unknown,task_type=test:ok}":                   1,
		"forgeq_tasks_processed_total{queue=unknown,task_type=test:panic}":                2,
		"forgeq_tasks_processed_total{queue=unknown,task_type=test:fail}":                 1,
		"forgeq_tasks_failed_total{outcome=panic,queue=unknown,task_type=test:panic}":     2,
		"forgeq_tasks_failed_total{outcome=skip_retry,queue=unknown,task_type=test:fail}": 1,
		"forgeq_tasks_in_progress{task_type=test:ok}":                                     0,
		"forgeq_tasks_in_progress{task_type=test:panic}":                                  0,
		"forgeq_tasks_in_progress{task_type=test:fail}":                                   0,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("task metrics (-want +got)\n%s", d)
	}
}

func TestInflight(t *testing.T) {
	t.Parallel()

	release := make(chan struct{})
	started := make(chan struct{}, 2)
	h := newInflight(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		started <- struct{}{}
		<-release
		return nil
	}))
	if n := h.wait(time.Millisecond); n != 0 {
		t.Fatalf("wait with nothing running = %d", n)
	}
	for range 2 {
		go h.ProcessTask(context.Background(), asynq.NewTask("t", nil))
	}
	<-started
	<-started
	if n := h.wait(50 * time.Millisecond); n != 2 {
		t.Errorf("wait while 2 run = %d, want 2", n)
	}
	close(release)
	if n := h.wait(5 * time.Second); n != 0 {
		t.Errorf("wait after release = %d, want 0", n)
	}
}

// A workflow step done but not recorded is no failure to asynq: it runs
// again without using up a retry; every other error is one.
func TestServerConfigIsFailure(t *testing.T) {
	t.Parallel()
	f := serverConfig(config.Config{}, zap.NewNop()).IsFailure
	if f == nil {
		t.Fatal("no IsFailure")
	}
	if f(fmt.Errorf("workflow w step 0: %w: connection refused", workflow.ErrNotRecorded)) {
		t.Error("a step not recorded counts as a failure")
	}
	if !f(errors.New("boom")) {
		t.Error("a handler's error does not count as a failure")
	}
	if f(fmt.Errorf("wrapped: %w", tasks.Postpone(time.Second, tasks.PostponedRate))) {
		t.Error("a postponed task counts as a failure")
	}
}
