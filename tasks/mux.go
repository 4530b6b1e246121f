package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
)

// NewMux returns an asynq.ServeMux serving every type of r with deps, behind
// a middleware that logs one line per task (task_id, task_type, queue,
// retry, took, outcome) and turns a handler panic into a task error.
// Outcomes: "done", "retry" (failed, asynq will retry), "archived"
// (failed with no retry left: asynq archives it), "skip_retry" (failed
// for good, archived) and "canceled" (interrupted by shutdown or a lost
// lease; asynq requeues it).
func NewMux(r *Registry, deps Deps) *asynq.ServeMux {
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	mux := asynq.NewServeMux()
	mux.Use(logTasks(deps.Logger))
	for _, d := range r.Definitions() {
		mux.Handle(d.typ, d.Handler(deps))
	}
	return mux
}

// LastAttempt reports whether the task being processed under ctx has no
// retry left, so that asynq archives it if this attempt fails. It is false
// outside an asynq server.
func LastAttempt(ctx context.Context) bool {
	retried, ok := asynq.GetRetryCount(ctx)
	if !ok {
		return false
	}
	max, ok := asynq.GetMaxRetry(ctx)
	return ok && retried >= max
}

func logTasks(log *zap.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			id, _ := asynq.GetTaskID(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			retry, _ := asynq.GetRetryCount(ctx)
			start := time.Now()
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("%s: handler panic: %v", t.Type(), p)
				}
				fields := []zap.Field{
					zap.String("task_id", id), zap.String("task_type", t.Type()),
					zap.String("queue", queue), zap.Int("retry", retry),
					zap.Duration("took", time.Since(start)),
				}
				// asynq gives up on a call at its timeout or at shutdown
				// without waiting for it; a call that returns nil after
				// that did not complete the task, so it is not logged as
				// done. The error returned to asynq stays as it is.
				logged := err
				if logged == nil && ctx.Err() != nil {
					logged = fmt.Errorf("%s: handler returned after its context ended: %w", t.Type(), ctx.Err())
				}
				switch {
				case logged == nil:
					log.Info("task done", append(fields, zap.String("outcome", "done"))...)
				case ctx.Err() != nil && errors.Is(logged, context.Canceled):
					// Shutdown or a lost lease: asynq puts the task back
					// on its queue without counting a retry.
					log.Warn("task interrupted", append(fields, zap.String("outcome", "canceled"), zap.Error(logged))...)
				case errors.Is(logged, asynq.SkipRetry):
					log.Error("task failed", append(fields, zap.String("outcome", "skip_retry"), zap.Error(logged))...)
				case LastAttempt(ctx):
					log.Error("task failed", append(fields, zap.String("outcome", "archived"), zap.Error(logged))...)
				default:
					log.Warn("task failed", append(fields, zap.String("outcome", "retry"), zap.Error(logged))...)
				}
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}
