package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/telemetry"
)

// NewMux returns an asynq.ServeMux serving every type of r with deps, behind
// a middleware that logs one line per task (task_id, task_type, queue,
// retry, took, outcome, and trace_id, span_id and request_id when known)
// and turns a handler panic into a task error.
// Outcomes: "done", "retry" (failed, asynq will retry), "archived"
// (failed with no retry left: asynq archives it), "skip_retry" (failed
// for good, archived), "canceled" (interrupted by shutdown or a lost
// lease; asynq requeues it), "postponed" (a PostponeError: run again
// later without counting a retry) and "cancelled" (stopped by a cancellation,
// see CancelledError; archived).
func NewMux(r *Registry, deps Deps) *asynq.ServeMux {
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	mux := asynq.NewServeMux()
	mux.Use(logTasks(deps.Logger))
	for _, d := range r.Definitions() {
		mux.Handle(d.typ, exactType(d.typ, d.Handler(deps)))
	}
	return mux
}

// exactType serves only tasks of type typ with h. asynq's ServeMux routes a
// task to the handler of the longest registered prefix of its type, so
// without this an unregistered "email:welcome:v2" would run the handler
// of "email:welcome", decoded as its payload. Such a task fails as asynq
// fails a type with no handler at all, and is retried: a worker that has
// the type may take it.
func exactType(typ string, h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if t.Type() != typ {
			return fmt.Errorf("no handler for task type %q (this worker's nearest is %q)", t.Type(), typ)
		}
		return h.ProcessTask(ctx, t)
	})
}

// Outcomes of a handler call, as NewMux's log lines and the task metrics
// name them.
const (
	OutcomeDone      = "done"       // the task completed
	OutcomeRetry     = "retry"      // failed; asynq will retry it
	OutcomeArchived  = "archived"   // failed with no retry left; asynq archives it
	OutcomeSkipRetry = "skip_retry" // failed for good (asynq.SkipRetry); archived
	OutcomeCanceled  = "canceled"   // interrupted by shutdown or a lost lease; requeued
)

// Outcome classifies how asynq ends a handler call under ctx that returned
// err. asynq gives up on a call at its timeout or at shutdown without
// waiting for it, so a call that returns nil after ctx ended did not
// complete the task: it is classified by ctx's error.
func Outcome(ctx context.Context, err error) string {
	if err == nil {
		if err = ctx.Err(); err == nil {
			return OutcomeDone
		}
	}
	var pe *PostponeError
	switch {
	case errors.As(err, &pe):
		return OutcomePostponed
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return OutcomeCanceled
	case IsCancelled(err):
		return OutcomeCancelled
	case errors.Is(err, asynq.SkipRetry):
		return OutcomeSkipRetry
	case LastAttempt(ctx):
		return OutcomeArchived
	default:
		return OutcomeRetry
	}
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
				// trace_id, span_id and the request id of the HTTP
				// request that enqueued the task (package telemetry).
				fields = append(fields, telemetry.LogFields(ctx)...)
				// A nil returned after ctx ended is logged as the failure
				// it is (see Outcome); the error returned to asynq stays.
				outcome := Outcome(ctx, err)
				logged := err
				if logged == nil && ctx.Err() != nil {
					logged = fmt.Errorf("%s: handler returned after its context ended: %w", t.Type(), ctx.Err())
				}
				fields = append(fields, zap.String("outcome", outcome))
				switch outcome {
				case OutcomeDone:
					log.Info("task done", fields...)
				case OutcomeCanceled:
					log.Warn("task interrupted", append(fields, zap.Error(logged))...)
				case OutcomePostponed:
					pe, _ := AsPostpone(err)
					log.Info("task postponed", append(fields,
						zap.String("reason", pe.Reason), zap.Duration("delay", pe.Delay))...)
				case OutcomeCancelled:
					log.Warn("task cancelled", append(fields, zap.Error(logged))...)
				case OutcomeSkipRetry, OutcomeArchived:
					log.Error("task failed", append(fields, zap.Error(logged))...)
				default:
					log.Warn("task failed", append(fields, zap.Error(logged))...)
				}
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}
