package worker

import sdktrace "go.opentelemetry.io/otel/sdk/trace"

// WithSpanExporter turns tracing on in a's runs, whatever the environment
// says, with every span sent to exp as it ends.
func WithSpanExporter(a *App, exp sdktrace.SpanExporter) *App {
	a.spanExporter = exp
	return a
}
