package worker

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/taskctx"
	"github.com/forgeq/forgeq/tasks"
)

// taskEvents publishes the lifecycle events of the tasks the worker runs
// (package events): a middleware around the mux, a call from the limits,
// and a hook on the retry delay.
//
//   - middleware, around the mux and so outside its logging middleware,
//     sees what every middleware made of the handler's error (a panic
//     made an error by the logging one) and publishes the end of the
//     attempt: succeeded with the result, failed then archived, failed
//     then (through retriedEvents) retried, or cancelled. It puts the
//     attempt in the ctx for the progress reports (tasks.ReportProgress)
//     and the result (taskctx.SetResult). A postponed task, or one
//     requeued by a shutdown, publishes nothing.
//   - started: middleware publishes it as the attempt begins, but for
//     the types with limits, whose tasks the limits may postpone: the
//     limits publish it (publishStarted) once past them. A task the
//     limits postpone has not started.
//   - retriedEvents, around the server's RetryDelayFunc, publishes
//     retried with the time of the next attempt.
//
// Nothing of it stays on the handler's stack but middleware's small
// frame: the work is done in helpers that are not inlined (an Event is a
// few hundred bytes), and asynq starts a goroutine with a small stack for
// each task, which a deeper handler stack would make grow (a copy) more
// often.
type taskEvents struct {
	pub     *events.Publisher
	limited func(taskType string) bool // the types with limits
}

// middleware publishes the start (but see taskEvents) and the end of each
// attempt.
func (te taskEvents) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		hctx, a := te.begin(ctx, t)
		if a == nil {
			return next.ProcessTask(ctx, t)
		}
		return te.end(ctx, a, next.ProcessTask(hctx, t))
	})
}

// begin returns the handler's ctx and the attempt of the task under ctx,
// or a nil attempt outside an asynq server, and publishes the attempt's
// started event unless the task's type has limits.
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
	hctx := taskctx.WithAttempt(ctx, a)
	if te.limited == nil || !te.limited(t.Type()) {
		publishStarted(hctx)
	}
	return hctx, a
}

// publishStarted publishes the started event of the attempt under ctx, if
// any: begin calls it, or, for the types with limits, the limits once a
// task is past them.
//
//go:noinline
func publishStarted(ctx context.Context) {
	if pub, base, ok := taskctx.Events(ctx); ok {
		e := *base
		e.Kind = events.Started
		pub.Publish(e)
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
