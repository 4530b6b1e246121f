package worker

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/internal/pickup"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// serverConfig maps the configuration onto the asynq server's. It sets no
// ErrorHandler: tasks.NewMux's middleware logs each task once, and the
// metrics middleware counts failures by type, queue and outcome.
func serverConfig(cfg config.Config, log *zap.Logger) asynq.Config {
	alog := log.Named("asynq")
	c := asynq.Config{
		Concurrency:       cfg.Worker.Concurrency, // 0: one per CPU, as asynq does
		Queues:            maps.Clone(cfg.Worker.Queues),
		StrictPriority:    cfg.Worker.StrictPriority,
		ShutdownTimeout:   cfg.Worker.ShutdownTimeout,
		TaskCheckInterval: cfg.Worker.TaskCheckInterval,
		// Retries: each task carries its own MaxRetry (the type's default,
		// else WORKER_MAX_RETRY where the scheduler enqueues it); the delay
		// is WORKER_RETRY_DELAY_MIN doubling up to WORKER_RETRY_DELAY_MAX.
		DelayedTaskCheckInterval: delayedTaskCheckInterval,
		Logger:                   asynqLogger{alog.Sugar()},
		LogLevel:                 asynqLevel(cfg.Log.Level),
		HealthCheckFunc:          healthCheck(alog),
		// A workflow step done but not recorded runs again without
		// using up a retry, so it is never archived for it.
		// A postponed task (tasks.Postpone: a declared limit, or its
		// handler) runs again after its delay (retryDelayOf), also
		// without using up a retry.
		IsFailure: func(err error) bool {
			_, postponed := tasks.AsPostpone(err)
			return !postponed && !errors.Is(err, workflow.ErrNotRecorded)
		},
	}
	if cfg.Worker.Pickup != config.PickupPoll {
		// The pickup paces the fetches (docs/pickup.md); asynq's pause
		// after an empty one would only delay the next.
		c.TaskCheckInterval = pickup.TaskCheckInterval
	}
	if w := cfg.Worker; w.RetryDelayMin > 0 { // zero: asynq's default
		c.RetryDelayFunc = retryDelay(w.RetryDelayMin, max(w.RetryDelayMin, w.RetryDelayMax), rand.Int64N)
	}
	c.RetryDelayFunc = retriedEvents(postponeDelay(c.RetryDelayFunc))
	return c
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

// newMux returns the worker's handler for every type of reg: tasks.NewMux,
// whose middleware logs each task once, then x's metrics middleware, then
// rec's (when not nil), which logs and counts the tasks recovered from a
// dead worker, then flows (when not nil: the workflow middleware, which
// passes a panic on), then cancel (when not nil: the cancellation
// middleware, worker/cancel.go), then lim's (when not nil: the declared
// rate limits and concurrency caps, worker/limits.go), then the App's own
// middleware; and, when evs is not nil, the task events middleware around
// it all (worker/events.go), which publishes each attempt's end as the
// logging middleware returns it (a panic made an error). asynq runs middleware
// in the order of Use, the first outermost, so the metrics middleware sees
// a panic of a handler (or of the App's middleware) before the logging one
// turns it into an error, and counts it with outcome "panic".
func newMux(reg *tasks.Registry, deps tasks.Deps, x *metrics.Metrics, evs *events.Publisher, rec *recoveries, flows, cancel asynq.MiddlewareFunc, lim *limiter, own []asynq.MiddlewareFunc) asynq.Handler {
	mux := tasks.NewMux(reg, deps)
	mux.Use(x.TaskMiddleware())
	if rec != nil {
		mux.Use(rec.middleware)
	}
	if flows != nil {
		mux.Use(flows)
	}
	if cancel != nil {
		mux.Use(cancel)
	}
	if lim != nil {
		mux.Use(lim.middleware())
	}
	if len(own) > 0 {
		mux.Use(own...)
	}
	if evs == nil {
		return mux
	}
	// Task events (worker/events.go), around the mux: the end of an
	// attempt as the logging middleware returns it, the start once past
	// the limits.
	return taskEvents{pub: evs, limited: lim.limits}.middleware(mux)
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
