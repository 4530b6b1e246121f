package telemetry

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

func TestInjectExtractRoundTrip(t *testing.T) {
	_, exp := setupTB(t, nil)

	ctx := WithRequestID(t.Context(), "req-42")
	m, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	b, err := baggage.New(m)
	if err != nil {
		t.Fatal(err)
	}
	ctx = baggage.ContextWithBaggage(ctx, b)
	ctx, span := StartEnqueue(ctx, "email:deliver")
	h := map[string]string{}
	Inject(ctx, h)
	span.End()

	for _, k := range []string{"traceparent", "baggage", HeaderRequestID} {
		if h[k] == "" {
			t.Errorf("header %s missing: %v", k, h)
		}
	}
	got := Extract(t.Context(), h)
	sc := trace.SpanContextFromContext(got)
	if !sc.IsRemote() || sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsSampled() {
		t.Errorf("extracted %v, want the enqueue span %v, remote and sampled", sc, span.SpanContext())
	}
	if id, ok := RequestID(got); !ok || id != "req-42" {
		t.Errorf("RequestID = %q, %v; want req-42", id, ok)
	}
	if v := baggage.FromContext(got).Member("tenant").Value(); v != "acme" {
		t.Errorf("baggage tenant = %q, want acme", v)
	}
	if n := len(exp.GetSpans()); n != 1 {
		t.Errorf("%d spans, want the enqueue span", n)
	}
}

func TestInjectNilHeaders(t *testing.T) {
	setupTB(t, nil)
	ctx, span := StartEnqueue(WithRequestID(t.Context(), "r"), "x")
	defer span.End()
	Inject(ctx, nil) // must not panic
}

func TestExtractEmpty(t *testing.T) {
	ctx := t.Context()
	if Extract(ctx, nil) != ctx || Extract(ctx, map[string]string{}) != ctx {
		t.Errorf("Extract of no headers changed ctx")
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		giveID string
		wantID string
		wantOK bool
	}{
		{"none", "", "", false},
		{"short", "abc-1", "abc-1", true},
		{"cut", strings.Repeat("x", 200), strings.Repeat("x", MaxRequestIDLen), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, ok := RequestID(WithRequestID(t.Context(), tt.giveID))
			if id != tt.wantID || ok != tt.wantOK {
				t.Errorf("RequestID = %q, %v; want %q, %v", id, ok, tt.wantID, tt.wantOK)
			}
		})
	}
}
