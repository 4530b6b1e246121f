package telemetry

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// HeaderRequestID is the task header that carries the request id from the
// process that enqueued a task to the handler that runs it. Inject writes
// it whether tracing is on or off. The trace context travels in the W3C
// headers traceparent, tracestate and baggage.
const HeaderRequestID = "x-request-id"

// MaxRequestIDLen bounds the request id kept in a context and carried in
// task headers: a longer one is cut.
const MaxRequestIDLen = 128

type requestIDKey struct{}

// WithRequestID returns a copy of ctx carrying the request id id, cut to
// MaxRequestIDLen bytes. An empty id returns ctx unchanged.
func WithRequestID(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	if len(id) > MaxRequestIDLen {
		id = id[:MaxRequestIDLen]
	}
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id stored in ctx by WithRequestID (or by
// Extract and the worker's middleware, from a task's headers) and whether
// there is one.
func RequestID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(requestIDKey{}).(string)
	return id, ok
}

// Inject writes ctx's request id and trace context into headers, the
// header map of a task about to be enqueued: the request id as
// x-request-id, the trace context (traceparent, tracestate, baggage)
// through the propagator Setup installed. Without one (tracing off) the
// trace context is written through OpenTelemetry's global propagator when
// ctx holds a valid span context, and not at all otherwise. A nil map is
// left alone: the task was built without headers.
func Inject(ctx context.Context, headers map[string]string) {
	if headers == nil {
		return
	}
	if id, ok := RequestID(ctx); ok {
		headers[HeaderRequestID] = id
	}
	if p := active.Load(); p != nil {
		p.prop.Inject(ctx, propagation.MapCarrier(headers))
	} else if trace.SpanContextFromContext(ctx).IsValid() {
		otel.GetTextMapPropagator().Inject(ctx, propagation.MapCarrier(headers))
	}
}

// Extract returns a copy of ctx carrying the request id and trace context
// found in headers, the header map of a task being processed: the inverse
// of Inject. When tracing is off (no provider from Setup) it uses
// OpenTelemetry's global propagator. headers may be nil.
func Extract(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	ctx = WithRequestID(ctx, headers[HeaderRequestID])
	prop := otel.GetTextMapPropagator()
	if p := active.Load(); p != nil {
		prop = p.prop
	}
	return prop.Extract(ctx, propagation.MapCarrier(headers))
}
