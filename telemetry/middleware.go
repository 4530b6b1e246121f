package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Events a task attempt's span may get.
const (
	// EventRetry: the attempt failed and asynq will retry the task.
	EventRetry = "retry"
	// EventArchived: the attempt failed and the task is archived (no
	// retry left, or an error wrapping asynq.SkipRetry).
	EventArchived = "archived"
	// EventPostponed: the handler postponed the task (tasks.Postpone); it
	// runs again later without counting a retry. No error.
	EventPostponed = "postponed"
	// EventInterrupted: the attempt was cut short by shutdown or a lost
	// lease; asynq puts the task back on its queue.
	EventInterrupted = "interrupted"
	// EventRevoked: the handler returned asynq.RevokeTask; the task is
	// neither retried nor archived.
	EventRevoked = "revoked"
)

// postponer is the error of a postponed task (tasks.PostponeError): its
// Postponed method returns the delay.
type postponer interface{ Postponed() time.Duration }

// workflowTaskPrefix begins the task id of a workflow step:
// "wf:<workflow id>:<path>".
const workflowTaskPrefix = "wf:"

// Middleware returns asynq middleware for the worker's whole handler (put
// it outermost, around the mux). It reads the request id from the task's
// x-request-id header into the context (see RequestID), and, when tracing
// is on, runs each attempt at a task in a consumer span "<type> process",
// a child of the span that enqueued it (whose context the task's headers
// carry), with the attributes messaging.system=asynq,
// messaging.destination.name (the queue), messaging.message.id (the task
// id), forgeq.task.attempt (1 for the first attempt), forgeq.request_id,
// and for a workflow step forgeq.workflow.id and forgeq.workflow.step.
//
// Each attempt is a span of its own under the same parent. A failed one
// records its error, has status Error and the event "retry" (with
// forgeq.task.next_attempt) or "archived"; one cut short by shutdown gets
// "interrupted". A postponed task (an error with a Postponed()
// time.Duration method, such as tasks.PostponeError) gets the event
// "postponed" and no error. A panic is recorded and goes on up.
//
// The middleware is safe for concurrent use.
func (p *Provider) Middleware() asynq.MiddlewareFunc {
	if !p.Enabled() {
		return requestIDMiddleware
	}
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			ctx, span, attempt := p.startProcess(ctx, t)
			defer func() {
				if r := recover(); r != nil {
					perr := fmt.Errorf("%s: handler panic: %v", t.Type(), r)
					span.RecordError(perr)
					span.SetStatus(codes.Error, perr.Error())
					span.End()
					panic(r)
				}
				endProcess(ctx, span, err, attempt)
				span.End()
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}

// requestIDMiddleware is Middleware when tracing is off: the request id
// only.
func requestIDMiddleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if id := t.Headers()[HeaderRequestID]; id != "" {
			ctx = WithRequestID(ctx, id)
		}
		return next.ProcessTask(ctx, t)
	})
}

// startProcess starts the span of one attempt at t.
func (p *Provider) startProcess(ctx context.Context, t *asynq.Task) (context.Context, trace.Span, int) {
	h := t.Headers()
	if len(h) > 0 {
		ctx = WithRequestID(ctx, h[HeaderRequestID])
		ctx = p.prop.Extract(ctx, propagation.MapCarrier(h))
	}
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	attempt := retried + 1
	attrs := make([]attribute.KeyValue, 0, 9)
	attrs = append(attrs,
		attribute.String("messaging.system", messagingSystem),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", queue),
		attribute.String("messaging.message.id", id),
		attribute.String("forgeq.task.type", t.Type()),
		attribute.Int("forgeq.task.attempt", attempt),
	)
	if rid, ok := RequestID(ctx); ok {
		attrs = append(attrs, attribute.String("forgeq.request_id", rid))
	}
	if wf, step, ok := workflowStep(id); ok {
		attrs = append(attrs, attribute.String("forgeq.workflow.id", wf), attribute.String("forgeq.workflow.step", step))
	}
	ctx, span := p.tracer.Start(ctx, t.Type()+" process",
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	return ctx, span, attempt
}

// endProcess records how the attempt under ctx ended with err.
func endProcess(ctx context.Context, span trace.Span, err error, attempt int) {
	if err == nil {
		if cerr := ctx.Err(); cerr != nil {
			// asynq gave up on the call (its timeout, or shutdown)
			// before it returned: the task was not completed.
			span.SetStatus(codes.Error, "handler returned after its context ended: "+cerr.Error())
			span.AddEvent(EventInterrupted)
		}
		return
	}
	var pp postponer
	if errors.As(err, &pp) {
		span.AddEvent(EventPostponed, trace.WithAttributes(
			attribute.String("forgeq.postpone.delay", pp.Postponed().String()),
			attribute.String("forgeq.postpone.reason", err.Error())))
		return
	}
	if errors.Is(err, asynq.RevokeTask) {
		span.AddEvent(EventRevoked)
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	maxRetry, ok := asynq.GetMaxRetry(ctx)
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		span.AddEvent(EventInterrupted)
	case errors.Is(err, asynq.SkipRetry) || (ok && attempt > maxRetry):
		span.AddEvent(EventArchived)
	default:
		attrs := []attribute.KeyValue{attribute.Int("forgeq.task.next_attempt", attempt+1)}
		if ok {
			attrs = append(attrs, attribute.Int("forgeq.task.retries_left", maxRetry-attempt+1))
		}
		span.AddEvent(EventRetry, trace.WithAttributes(attrs...))
	}
}

// workflowStep returns the workflow id and step path of a workflow step's
// task id, "wf:<workflow id>:<path>".
func workflowStep(taskID string) (id, step string, ok bool) {
	rest, ok := strings.CutPrefix(taskID, workflowTaskPrefix)
	if !ok {
		return "", "", false
	}
	id, step, ok = strings.Cut(rest, ":")
	if !ok || id == "" || step == "" {
		return "", "", false
	}
	return id, step, true
}
