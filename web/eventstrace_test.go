package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/telemetry"
	"github.com/forgeq/forgeq/web"
)

// TestTaskEventsTrace checks the trace of an event stream: the request's
// server span and the Redis reads made before the first event are in it,
// the stream's periodic reads (state checks, blocking reads of the stream)
// are not, so that an open stream does not grow a trace without end.
//
// It sets tracing up process-wide, so it does not run in parallel.
func TestTaskEventsTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp, err := telemetry.Setup(t.Context(), telemetry.Options{
		Getenv:   func(string) string { return "" },
		Exporter: exp,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	b := setup(t, func(o *web.Options) { o.Telemetry = tp })
	if err := tp.InstrumentRedis(b.rdb.(*redis.Client)); err != nil {
		t.Fatal(err)
	}
	web.SetEventTiming(b.srv, time.Hour, 20*time.Millisecond)
	path := pendingTask(t, b.rdb, "default", "traced")

	traceID := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	s := openEvents(t, b.ts.URL, path, map[string]string{
		"traceparent": "00-" + traceID.String() + "-00f067aa0ba902b7-01",
	})
	if e, _ := s.next(t, 5*time.Second); e.Name != "state" {
		t.Fatalf("event %+v, want the state", e)
	}
	firstEvent := time.Now()
	time.Sleep(300 * time.Millisecond) // some 15 state checks
	s.cancel()

	// The server span ends once the handler saw the client leave.
	inTrace := func() (spans tracetest.SpanStubs, server bool) {
		for _, sp := range exp.GetSpans() {
			if sp.SpanContext.TraceID() == traceID {
				spans = append(spans, sp)
				server = server || sp.SpanKind == trace.SpanKindServer
			}
		}
		return spans, server
	}
	spans, server := inTrace()
	for deadline := time.Now().Add(5 * time.Second); !server && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		spans, server = inTrace()
	}
	var redisSpans int
	for _, sp := range spans {
		if sp.SpanKind != trace.SpanKindClient {
			continue
		}
		redisSpans++
		if sp.StartTime.After(firstEvent) {
			t.Errorf("Redis span %q started %v after the first event: the stream's periodic reads are in the request's trace",
				sp.Name, sp.StartTime.Sub(firstEvent))
		}
	}
	if !server {
		t.Fatal("no server span of the stream in its trace")
	}
	if redisSpans == 0 {
		t.Error("no Redis span of the stream's first reads in its trace")
	}
}
