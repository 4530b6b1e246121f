package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/config"
)

func TestServerConfig(t *testing.T) {
	t.Parallel()

	var cfg config.Config
	cfg.Worker = config.Worker{
		Concurrency: 7, Queues: map[string]int{"a": 2, "b": 1}, StrictPriority: true,
		ShutdownTimeout: 3 * time.Second, TaskCheckInterval: 15 * time.Millisecond,
	}
	cfg.Log.Level = "warn"
	f := newFailureCounts()
	got := serverConfig(cfg, zap.NewNop(), f)
	if got.Concurrency != 7 || !got.StrictPriority || got.ShutdownTimeout != 3*time.Second ||
		got.TaskCheckInterval != 15*time.Millisecond || got.LogLevel != asynq.WarnLevel || got.ErrorHandler != f {
		t.Errorf("serverConfig = %+v", got)
	}
	if d := cmp.Diff(cfg.Worker.Queues, got.Queues); d != "" {
		t.Errorf("Queues (-want +got)\n%s", d)
	}
	got.Queues["c"] = 1
	if _, ok := cfg.Worker.Queues["c"]; ok {
		t.Error("Queues shares the config's map")
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

// TestFailureCounts feeds the error handler plain contexts, which carry no
// retry metadata (retried 0 of 0), so every failure there is final;
// TestFailureCountsThroughServer sees a retry.
func TestFailureCounts(t *testing.T) {
	t.Parallel()

	f := newFailureCounts()
	ctx := context.Background() // no retry metadata: retried 0, max 0
	typA := asynq.NewTask("a", nil)
	typB := asynq.NewTask("b", nil)
	f.HandleError(ctx, typA, fmt.Errorf("bad payload: %w", asynq.SkipRetry))
	f.HandleError(ctx, typA, fmt.Errorf("gone: %w", asynq.RevokeTask))
	f.HandleError(ctx, typB, errors.New("no retries left")) // max 0 reached
	got := f.snapshot()
	want := map[string]map[string]int64{
		"a": {outcomeArchived: 1, outcomeRevoked: 1},
		"b": {outcomeArchived: 1},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
	got["a"][outcomeArchived] = 99
	if f.snapshot()["a"][outcomeArchived] != 1 {
		t.Error("snapshot shares its maps")
	}
}

func TestFailureCountsThroughServer(t *testing.T) {
	t.Parallel()

	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	f := newFailureCounts()
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              1,
		ErrorHandler:             f,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		TaskCheckInterval:        10 * time.Millisecond,
		LogLevel:                 asynq.ErrorLevel,
		Logger:                   asynqLogger{zap.NewNop().Sugar()},
	})
	calls := make(chan struct{}, 10)
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		calls <- struct{}{}
		return errors.New("boom")
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(rdb)
	info, err := client.EnqueueContext(context.Background(), asynq.NewTask("flaky", nil, asynq.MaxRetry(1)))
	if err != nil {
		t.Fatal(err)
	}
	waitTaskState(t, asynq.NewInspectorFromRedisClient(rdb), info.Queue, info.ID, asynq.TaskStateArchived, 10*time.Second)
	want := map[string]map[string]int64{"flaky": {outcomeRetry: 1, outcomeArchived: 1}}
	if d := cmp.Diff(want, f.snapshot()); d != "" {
		t.Errorf("(-want +got)\n%s", d)
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
