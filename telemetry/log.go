package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// LogFields returns the fields that tie a log line to the trace and request
// of ctx: trace_id and span_id when ctx holds a valid span context, and
// request_id when it holds a request id (WithRequestID). It returns nil
// when there are none.
func LogFields(ctx context.Context) []zap.Field {
	sc := trace.SpanContextFromContext(ctx)
	id, hasID := RequestID(ctx)
	if !sc.IsValid() && !hasID {
		return nil
	}
	fields := make([]zap.Field, 0, 3)
	fields = appendTrace(fields, sc)
	if hasID {
		fields = append(fields, zap.String("request_id", id))
	}
	return fields
}

// TraceFields returns the trace_id and span_id fields of ctx's span
// context, or nil when it holds none: LogFields without request_id, for log
// lines that have their own.
func TraceFields(ctx context.Context) []zap.Field {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return appendTrace(make([]zap.Field, 0, 2), sc)
}

func appendTrace(fields []zap.Field, sc trace.SpanContext) []zap.Field {
	if !sc.IsValid() {
		return fields
	}
	return append(fields, zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String()))
}
