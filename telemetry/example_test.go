package telemetry_test

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/telemetry"
)

// With no OTEL_* variable set, tracing is off: nothing is installed, and
// only the request id travels into the task.
func ExampleSetup_off() {
	ctx := context.Background()
	tp, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: "worker",
		Getenv:      func(string) string { return "" },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tp.Shutdown(ctx)
	fmt.Println("tracing on:", tp.Enabled())

	headers := map[string]string{}
	telemetry.Inject(telemetry.WithRequestID(ctx, "a1b2-7"), headers)
	fmt.Println(headers)
	// Output:
	// tracing on: false
	// map[x-request-id:a1b2-7]
}

// A bad variable is an error naming it.
func ExampleSetup_badVariable() {
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}
	_, err := telemetry.Setup(context.Background(), telemetry.Options{Getenv: func(k string) string { return env[k] }})
	fmt.Println(err)
	// Output:
	// telemetry: OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318": want an http:// or https:// URL, e.g. http://localhost:4318
}

// The enqueue span's context travels in the task's headers; the worker's
// middleware runs the task in a span that is its child.
func ExampleProvider_Middleware() {
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tp, err := telemetry.Setup(ctx, telemetry.Options{
		Getenv:   func(string) string { return "" },
		Exporter: exp, // tests; OTEL_EXPORTER_OTLP_ENDPOINT in production
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tp.Shutdown(ctx)

	// The producer side (tasks.Client does this).
	task := asynq.NewTaskWithHeaders("email:deliver", []byte(`{}`), map[string]string{})
	ectx, span := telemetry.StartEnqueue(telemetry.WithRequestID(ctx, "a1b2-7"), task.Type())
	telemetry.Inject(ectx, task.Headers())
	span.End()
	fmt.Println(slices.Sorted(maps.Keys(task.Headers())))

	// The worker side.
	h := tp.Middleware()(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := telemetry.RequestID(ctx)
		fmt.Println("request id in the handler:", id)
		return nil
	}))
	_ = h.ProcessTask(ctx, task)

	spans := exp.GetSpans()
	fmt.Println(spans[0].Name, "->", spans[1].Name)
	fmt.Println("child of the enqueue span:", spans[1].Parent.SpanID() == spans[0].SpanContext.SpanID())
	// Output:
	// [traceparent x-request-id]
	// request id in the handler: a1b2-7
	// email:deliver publish -> email:deliver process
	// child of the enqueue span: true
}

// LogFields ties a log line to its trace and request.
func ExampleLogFields() {
	log := zap.NewExample() // JSON lines on stdout, no time
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := telemetry.WithRequestID(trace.ContextWithSpanContext(context.Background(), sc), "a1b2-7")
	log.Info("report built", telemetry.LogFields(ctx)...)
	// Output:
	// {"level":"info","msg":"report built","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","request_id":"a1b2-7"}
}
