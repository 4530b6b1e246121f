package telemetry_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/telemetry"
)

// exampleSetup sets tracing up with its spans going to an in-memory
// exporter, as a test does; a program sets OTEL_EXPORTER_OTLP_ENDPOINT
// instead.
func exampleSetup() (*telemetry.Provider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp, err := telemetry.Setup(context.Background(), telemetry.Options{
		Getenv:   func(string) string { return "" },
		Exporter: exp,
	})
	if err != nil {
		panic(err)
	}
	return tp, exp
}

// exampleSpanContext is a sampled span context with fixed ids.
var exampleSpanContext = trace.NewSpanContext(trace.SpanContextConfig{
	TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
	SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	TraceFlags: trace.FlagsSampled,
})

// Inject writes the trace context and the request id of ctx into a task's
// headers; Extract reads them back on the worker's side.
func ExampleInject() {
	tp, _ := exampleSetup()
	defer tp.Shutdown(context.Background())

	ctx := trace.ContextWithSpanContext(context.Background(), exampleSpanContext)
	ctx = telemetry.WithRequestID(ctx, "a1b2-7")
	headers := map[string]string{}
	telemetry.Inject(ctx, headers)
	fmt.Println(headers["traceparent"])
	fmt.Println(headers[telemetry.HeaderRequestID])
	// Output:
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// a1b2-7
}

// Extract is Inject's inverse: what the worker's middleware does with the
// headers of each task before its span starts.
func ExampleExtract() {
	tp, _ := exampleSetup()
	defer tp.Shutdown(context.Background())

	headers := map[string]string{
		"traceparent":             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		telemetry.HeaderRequestID: "a1b2-7",
	}
	ctx := telemetry.Extract(context.Background(), headers)
	sc := trace.SpanContextFromContext(ctx)
	id, _ := telemetry.RequestID(ctx)
	fmt.Println(sc.TraceID(), sc.SpanID(), sc.IsRemote(), id)
	// Output:
	// 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 true a1b2-7
}

// StartEnqueue starts the producer span of one enqueue; the caller adds
// what the enqueue returned and ends it (tasks.Client does all this).
func ExampleStartEnqueue() {
	tp, exp := exampleSetup()
	defer tp.Shutdown(context.Background())

	ctx, span := telemetry.StartEnqueue(context.Background(), "email:deliver")
	headers := map[string]string{}
	telemetry.Inject(ctx, headers) // the task's headers carry this span
	span.End()

	s := exp.GetSpans()[0]
	fmt.Println(s.Name, s.SpanKind)
	fmt.Println("the task continues it:", headers["traceparent"] == "00-"+s.SpanContext.TraceID().String()+"-"+s.SpanContext.SpanID().String()+"-01")
	// Output:
	// email:deliver publish producer
	// the task continues it: true
}

// HTTPHandler traces each request, continuing an incoming traceparent;
// a router inside may name the span after its route, as the web process
// does.
func ExampleProvider_HTTPHandler() {
	tp, exp := exampleSetup()
	defer tp.Shutdown(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /reports/{id}", func(w http.ResponseWriter, r *http.Request) {
		trace.SpanFromContext(r.Context()).SetName(r.Pattern)
		fmt.Fprintln(w, "report", r.PathValue("id"))
	})
	srv := httptest.NewServer(tp.HTTPHandler(mux))
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/reports/42", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()

	s := exp.GetSpans()[0]
	fmt.Println(s.Name, s.SpanKind, s.SpanContext.TraceID(), s.Parent.SpanID())
	// Output:
	// GET /reports/{id} server 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7
}

// InstrumentRedis makes each command run under a sampled span a client
// span, its child; commands outside a trace (polling, background work)
// make none.
func ExampleProvider_InstrumentRedis() {
	tp, exp := exampleSetup()
	defer tp.Shutdown(context.Background())
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	if err := tp.InstrumentRedis(rdb); err != nil { // before the first command
		panic(err)
	}

	rdb.Set(context.Background(), "outside", "a trace", 0) // no span
	ctx, span := tp.TracerProvider().Tracer("example").Start(context.Background(), "task")
	rdb.Get(ctx, "outside")
	span.End()

	for _, s := range exp.GetSpans() {
		fmt.Println(s.Name, s.SpanKind)
	}
	// Output:
	// get client
	// task internal
}
