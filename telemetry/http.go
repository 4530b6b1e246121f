package telemetry

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// HTTPHandler returns h wrapped in otelhttp when tracing is on, and h itself
// when it is off. Each request is a server span that continues the trace of
// an incoming traceparent header, or starts one. Its name is the method
// until the router has matched a route; a router inside h may rename it to
// the route's pattern (the web process does, "POST /api/tasks/{type}").
// Health checks (/health/...) and /metrics scrapes are not traced. otelhttp's
// own metrics are not recorded: /metrics has the web process's.
func (p *Provider) HTTPHandler(h http.Handler) http.Handler {
	if !p.Enabled() {
		return h
	}
	return otelhttp.NewHandler(h, "http",
		otelhttp.WithTracerProvider(p.tp),
		otelhttp.WithPropagators(p.prop),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithFilter(traced),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.Pattern != "" {
				return r.Pattern
			}
			return r.Method
		}),
	)
}

// traced reports whether a request gets a span: not the health checks and
// the metrics scrapes, which come every few seconds and say nothing.
func traced(r *http.Request) bool {
	return !strings.HasPrefix(r.URL.Path, "/health/") && r.URL.Path != "/metrics"
}
