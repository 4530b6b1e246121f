// Package otlptest is an OpenTelemetry trace receiver for tests: a local
// OTLP/HTTP endpoint that keeps the spans it is sent, so a test can point
// a real exporter (a binary started with OTEL_EXPORTER_OTLP_ENDPOINT, or
// the SDK's otlptracehttp exporter) at it and check the traces that
// arrive. Nothing leaves the machine.
//
// # Receiver
//
// [NewReceiver] starts an HTTP server on 127.0.0.1 and a free port that
// accepts POST /v1/traces with an ExportTraceServiceRequest, as
// application/x-protobuf (what the OpenTelemetry SDKs send) or
// application/json (OTLP/JSON, trace and span ids in hex), optionally
// gzip-compressed. [Receiver.URL] is the value for
// OTEL_EXPORTER_OTLP_ENDPOINT; [Receiver.Endpoint] the host:port for
// otlptracehttp.WithEndpoint. Requests it cannot decode are answered 400
// and kept in [Receiver.Errors].
//
// Every span is kept as a [Span] with the service.name of its resource,
// its instrumentation scope, ids in hex, kind, attributes, events, links
// and status. [Receiver.WaitFor] and its shorthands ([Receiver.WaitForSpans],
// [Receiver.WaitForSpan]) wait until what arrived satisfies a condition;
// [Spans] finds spans by name, trace and parent, and prints a trace as a
// tree for failure messages.
//
// Sketch:
//
//	r := otlptest.NewReceiver(t)
//	w := proctest.Start(t, proctest.BuildWorker(t), []string{
//		"OTEL_EXPORTER_OTLP_ENDPOINT=" + r.URL(),
//		"OTEL_BSP_SCHEDULE_DELAY=50",
//		...
//	})
//	...
//	handler := r.WaitForSpan(t, 30*time.Second, otlptest.Named("data:process process"))
//	trace := r.Spans().InTrace(handler.TraceID)
//	if !trace.HasAncestor(handler, enqueue) {
//		t.Errorf("handler not under enqueue:\n%s", trace)
//	}
package otlptest
