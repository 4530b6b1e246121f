package main

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/config"
)

// serverConfig maps the configuration onto the asynq server's. Tasks are
// logged by tasks.NewMux's middleware; failures only count in failures.
func serverConfig(cfg config.Config, log *zap.Logger, failures *failureCounts) asynq.Config {
	alog := log.Named("asynq")
	return asynq.Config{
		Concurrency:       cfg.Worker.Concurrency, // 0: one per CPU, as asynq does
		Queues:            maps.Clone(cfg.Worker.Queues),
		StrictPriority:    cfg.Worker.StrictPriority,
		ShutdownTimeout:   cfg.Worker.ShutdownTimeout,
		TaskCheckInterval: cfg.Worker.TaskCheckInterval,
		// Retries: each task carries its own MaxRetry (the type's default,
		// else WORKER_MAX_RETRY where this process enqueues it); the delay
		// is asynq's exponential backoff.
		ErrorHandler:    failures,
		Logger:          asynqLogger{alog.Sugar()},
		LogLevel:        asynqLevel(cfg.Log.Level),
		HealthCheckFunc: healthCheck(alog),
	}
}

// asynqLogger passes asynq's own logs to zap. Fatal is logged as an error:
// only run decides when the process exits.
type asynqLogger struct{ s *zap.SugaredLogger }

var _ asynq.Logger = asynqLogger{}

func (l asynqLogger) Debug(args ...any) { l.s.Debug(args...) }
func (l asynqLogger) Info(args ...any)  { l.s.Info(args...) }
func (l asynqLogger) Warn(args ...any)  { l.s.Warn(args...) }
func (l asynqLogger) Error(args ...any) { l.s.Error(args...) }
func (l asynqLogger) Fatal(args ...any) { l.s.Error(args...) }

// asynqLevel maps a config log level onto asynq's.
func asynqLevel(level string) asynq.LogLevel {
	switch level {
	case "debug":
		return asynq.DebugLevel
	case "warn":
		return asynq.WarnLevel
	case "error":
		return asynq.ErrorLevel
	default:
		return asynq.InfoLevel
	}
}

// healthCheck returns asynq's periodic Redis health callback: it logs when
// Redis stops answering and when it answers again, not on every check.
func healthCheck(log *zap.Logger) func(error) {
	var failing atomic.Bool
	return func(err error) {
		switch {
		case err != nil && !failing.Swap(true):
			log.Warn("redis health check failing", zap.Error(err))
		case err == nil && failing.Swap(false):
			log.Info("redis health check passing again")
		}
	}
}

// Outcomes of a failed task, as failureCounts counts them.
const (
	outcomeRetry    = "retry"    // asynq will run it again
	outcomeArchived = "archived" // failed for good: SkipRetry or no retries left
	outcomeRevoked  = "revoked"  // the handler returned asynq.RevokeTask
)

// failureCounts counts failed tasks by type and outcome: the worker's
// asynq.ErrorHandler, for metrics. It does not log; the mux's middleware
// logs each task once. Safe for concurrent use.
type failureCounts struct {
	mu sync.Mutex
	n  map[string]map[string]int64 // task type: outcome: count
}

func newFailureCounts() *failureCounts {
	return &failureCounts{n: make(map[string]map[string]int64)}
}

// HandleError implements asynq.ErrorHandler.
func (f *failureCounts) HandleError(ctx context.Context, t *asynq.Task, err error) {
	outcome := outcomeRetry
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	switch {
	case errors.Is(err, asynq.RevokeTask):
		outcome = outcomeRevoked
	case errors.Is(err, asynq.SkipRetry), retried >= maxRetry:
		outcome = outcomeArchived
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[t.Type()] == nil {
		f.n[t.Type()] = make(map[string]int64)
	}
	f.n[t.Type()][outcome]++
}

// snapshot returns a copy of the counts.
func (f *failureCounts) snapshot() map[string]map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]map[string]int64, len(f.n))
	for typ, byOutcome := range f.n {
		out[typ] = maps.Clone(byOutcome)
	}
	return out
}

// inflight wraps the worker's handler and counts the calls still running,
// so that run can wait, after the server's shutdown, for the handlers whose
// tasks asynq gave up on.
type inflight struct {
	h       asynq.Handler
	mu      sync.Mutex
	running int
	idle    chan struct{} // closed when running drops to 0; nil while 0
}

func newInflight(h asynq.Handler) *inflight { return &inflight{h: h} }

// ProcessTask implements asynq.Handler.
func (f *inflight) ProcessTask(ctx context.Context, t *asynq.Task) error {
	f.mu.Lock()
	f.running++
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		if f.running == 0 {
			close(f.idle)
			f.idle = nil
		}
		f.mu.Unlock()
	}()
	return f.h.ProcessTask(ctx, t)
}

// wait waits up to d for every call to return and reports how many are
// still running.
func (f *inflight) wait(d time.Duration) int {
	f.mu.Lock()
	idle := f.idle
	f.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-time.After(d):
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}
