package telemetry

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestLogFields(t *testing.T) {
	t.Parallel()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	traced := trace.ContextWithSpanContext(t.Context(), sc)
	cases := []struct {
		name      string
		giveLog   []zap.Field
		giveTrace []zap.Field
		wantLog   map[string]any
		wantTrace map[string]any
	}{
		{"none", LogFields(t.Context()), TraceFields(t.Context()), nil, nil},
		{"request id only", LogFields(WithRequestID(t.Context(), "r1")), TraceFields(WithRequestID(t.Context(), "r1")),
			map[string]any{"request_id": "r1"}, nil},
		{"trace", LogFields(traced), TraceFields(traced),
			map[string]any{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
			map[string]any{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}},
		{"both", LogFields(WithRequestID(traced, "r2")), TraceFields(WithRequestID(traced, "r2")),
			map[string]any{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "request_id": "r2"},
			map[string]any{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.wantLog, fieldMap(tt.giveLog)); diff != "" {
				t.Errorf("LogFields (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantTrace, fieldMap(tt.giveTrace)); diff != "" {
				t.Errorf("TraceFields (-want +got):\n%s", diff)
			}
		})
	}
}

// fieldMap returns fields as a map, nil for none.
func fieldMap(fields []zap.Field) map[string]any {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	return enc.Fields
}
