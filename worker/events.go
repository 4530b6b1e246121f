package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
//     failed then archived, failed then (through retried) retried, or
//     cancelled. It puts the publisher in the ctx for the progress
//     reports (tasks.ReportProgress). A postponed task, or one requeued
//     by a shutdown, publishes nothing.
//   - started, inside the limits, publishes started once the handler
//     really runs: a task the limits postpone has not started.
//   - retried, around the server's RetryDelayFunc, publishes retried with
//     the time of the next attempt.
type taskEvents struct {
	pub *events.Publisher
}

// base returns the event of the task under ctx without its kind, and
// false outside an asynq server.
func (te taskEvents) base(ctx context.Context, t *asynq.Task) (events.Event, bool) {
	id, ok := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	if !ok || queue == "" {
		return events.Event{}, false
	}
	retried, _ := asynq.GetRetryCount(ctx)
	e := events.Event{Queue: queue, TaskID: id, Type: t.Type(), Attempt: retried + 1}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		e.TraceID = sc.TraceID().String()
	}
	return e, true
}

// resultSink keeps the result a handler set (taskctx.SetResult). The
// cancellation middleware may return before its handler does: hence the
// lock.
type resultSink struct {
	mu sync.Mutex
	b  []byte
}

func (s *resultSink) set(b []byte) { s.mu.Lock(); s.b = b; s.mu.Unlock() }

func (s *resultSink) get() []byte { s.mu.Lock(); defer s.mu.Unlock(); return s.b }

// middleware publishes the end of each attempt; see taskEvents.
func (te taskEvents) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
		base, ok := te.base(ctx, t)
		if !ok {
			return next.ProcessTask(ctx, t)
		}
		result := &resultSink{}
		hctx := taskctx.WithEvents(taskctx.WithResult(ctx, result.set), te.pub, base)
		defer func() {
			if p := recover(); p != nil {
				// The logging middleware outside turns it into this error.
				perr := te.end(ctx, base, fmt.Errorf("%s: handler panic: %v", t.Type(), p), nil)
				if note, ok := perr.(*retryNote); ok {
					// asynq retries it, but no retryNote reaches its
					// RetryDelayFunc: retried, without the time.
					e := note.e
					e.Kind = events.Retried
					te.pub.Publish(e)
				}
				panic(p)
			}
		}()
		err = next.ProcessTask(hctx, t)
		return te.end(ctx, base, err, result.get())
	})
}

// started publishes the started event of each attempt that runs.
func (te taskEvents) started(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if _, e, ok := taskctx.Events(ctx); ok {
			e.Kind = events.Started
			te.pub.Publish(e)
		}
		return next.ProcessTask(ctx, t)
	})
}

// end publishes the events of an attempt that returned err under ctx, and
// returns the error to give asynq: err, wrapped for retried when asynq
// retries the task.
func (te taskEvents) end(ctx context.Context, e events.Event, err error, result []byte) error {
	switch tasks.Outcome(ctx, err) {
	case tasks.OutcomeDone:
		e.Kind, e.Result = events.Succeeded, result
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
