package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// noopSpan is what StartEnqueue returns when it traces nothing.
var noopSpan trace.Span = noop.Span{}

// StartEnqueue starts the producer span "<taskType> publish" of a task
// about to be enqueued, as a child of the span in ctx, and returns a
// context holding it. The caller adds the queue and task id it learns from
// the enqueue (messaging.destination.name, messaging.message.id), records
// the error if any, and ends the span.
//
// The span comes from the tracer provider of the span in ctx when that
// span is recording (an HTTP request's, a task's, the enqueue command's,
// or one of a program that set up OpenTelemetry on its own), else from
// the provider Setup installed. With neither (tracing off) StartEnqueue
// returns ctx and a no-op span, without allocating.
func StartEnqueue(ctx context.Context, taskType string) (context.Context, trace.Span) {
	var tracer trace.Tracer
	if parent := trace.SpanFromContext(ctx); parent.IsRecording() {
		tracer = parent.TracerProvider().Tracer(tracerName)
	} else if p := active.Load(); p != nil {
		tracer = p.tracer
	} else {
		return ctx, noopSpan
	}
	return tracer.Start(ctx, taskType+" publish",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", messagingSystem),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("forgeq.task.type", taskType),
		))
}
