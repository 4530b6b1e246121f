package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/taskctx"
	"github.com/forgeq/forgeq/tasks"
)

// taskEvents publishes the lifecycle events of the tasks the worker runs
// (package events): two middlewares and a hook on the retry delay.
//
//   - middleware, just inside the mux's logging one, sees what every
//     other middleware made of the handler's error (and its panic) and
//     publishes the end of the attempt: succeeded with the result,
//     failed then archived, failed then (through retriedEvents) retried,
//     or cancelled. It puts the publisher in the ctx for the progress
//     reports (tasks.ReportProgress). A postponed task, or one requeued
//     by a shutdown, publishes nothing.
//   - started, inside the limits, publishes started once the handler
//     really runs: a task the limits postpone has not started.
//   - retriedEvents, around the server's RetryDelayFunc, publishes
//     retried with the time of the next attempt.
//
// The work is done in helpers that are not inlined: an Event is a few
// hundred bytes, and the middlewares' own frames stay on the stack under
// the handler, whose goroutine asynq starts for each task with a small
// stack.
type taskEvents struct {
	pub *events.Publisher
}

// middleware publishes the end of each attempt; see taskEvents.
func (te taskEvents) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		hctx, a := te.begin(ctx, t)
		if a == nil {
			return next.ProcessTask(ctx, t)
		}
		defer func() {
			if p := recover(); p != nil {
				te.panicked(ctx, a, t, p)
				panic(p)
			}
		}()
		return te.end(ctx, a, next.ProcessTask(hctx, t))
	})
}

// begin returns the handler's ctx and the attempt of the task under ctx,
// or a nil attempt outside an asynq server.
//
//go:noinline
func (te taskEvents) begin(ctx context.Context, t *asynq.Task) (context.Context, *taskctx.Attempt) {
	id, ok := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	if !ok || queue == "" {
		return ctx, nil
	}
	retried, _ := asynq.GetRetryCount(ctx)
	a := &taskctx.Attempt{Pub: te.pub, Base: events.Event{Queue: queue, TaskID: id, Type: t.Type(), Attempt: retried + 1}}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		a.Base.TraceID = sc.TraceID().String()
	}
	return taskctx.WithAttempt(ctx, a), a
}

// started publishes the started event of each attempt that runs.
func (te taskEvents) started(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		publishStarted(ctx)
		return next.ProcessTask(ctx, t)
	})
}

// publishStarted publishes the started event of the attempt under ctx.
//
//go:noinline
func publishStarted(ctx context.Context) {
	if pub, base, ok := taskctx.Events(ctx); ok {
		e := *base
		e.Kind = events.Started
		pub.Publish(e)
	}
}

// panicked publishes the end of an attempt whose handler panicked with p
// (the logging middleware outside turns it into this error).
//
//go:noinline
func (te taskEvents) panicked(ctx context.Context, a *taskctx.Attempt, t *asynq.Task, p any) {
	err := te.end(ctx, a, fmt.Errorf("%s: handler panic: %v", t.Type(), p))
	if note, ok := err.(*retryNote); ok {
		// asynq retries it, but no retryNote reaches its RetryDelayFunc:
		// retried, without the time.
		e := note.e
		e.Kind = events.Retried
		te.pub.Publish(e)
	}
}

// end publishes the events of attempt a that returned err under ctx, and
// returns the error to give asynq: err, wrapped for retriedEvents when
// asynq retries the task.
//
//go:noinline
func (te taskEvents) end(ctx context.Context, a *taskctx.Attempt, err error) error {
	e := a.Base
	if errors.Is(err, asynq.RevokeTask) {
		// asynq neither retries nor archives a revoked task (it marks
		// it done, without a result): no end event; readers learn it
		// from the task's state.
		return err
	}
	switch tasks.Outcome(ctx, err) {
	case tasks.OutcomeDone:
		e.Kind, e.Result = events.Succeeded, a.Result()
		te.pub.Publish(e)
	case tasks.OutcomeRetry:
		e.Kind, e.Error = events.Failed, errText(ctx, err)
		te.pub.Publish(e)
		if err != nil {
			return &retryNote{err: err, pub: te.pub, e: e}
		}
	case tasks.OutcomeArchived, tasks.OutcomeSkipRetry:
		e.Kind, e.Error = events.Failed, errText(ctx, err)
		te.pub.Publish(e)
		e.Kind = events.Archived
		te.pub.Publish(e)
	case tasks.OutcomeCancelled:
		e.Kind, e.Error = events.Cancelled, errText(ctx, err)
		te.pub.Publish(e)
	}
	// Postponed, or requeued by a shutdown or a lost lease: it runs again
	// as if it had not run.
	return err
}

// errText is the error of a failed attempt, as asynq records it.
func errText(ctx context.Context, err error) string {
	if err == nil {
		err = ctx.Err() // a handler that returned nil after its deadline
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// retryNote is the error of an attempt asynq retries, carrying its failed
// event to the server's RetryDelayFunc, which publishes the retried event
// with the next attempt's time (retriedEvents). It is the error it wraps
// to everything else: same message, errors.Is and errors.As see through.
type retryNote struct {
	err error
	pub *events.Publisher
	e   events.Event
}

func (n *retryNote) Error() string { return n.err.Error() }
func (n *retryNote) Unwrap() error { return n.err }

// retriedEvents wraps the server's RetryDelayFunc: for a task whose
// attempt left a retryNote, it publishes the retried event at the delay
// next returns.
func retriedEvents(next asynq.RetryDelayFunc) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		d := next(n, err, t)
		var note *retryNote
		if errors.As(err, &note) {
			e := note.e
			e.Kind, e.NextAt = events.Retried, time.Now().Add(d)
			note.pub.Publish(e)
		}
		return d
	}
}
