package telemetry

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestHTTPHandler(t *testing.T) {
	p, exp := setupTB(t, nil)

	mux := http.NewServeMux()
	var inside trace.SpanContext
	mux.HandleFunc("POST /api/tasks/{type}", func(w http.ResponseWriter, r *http.Request) {
		inside = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /health/live", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /metrics", func(http.ResponseWriter, *http.Request) {})
	h := p.HTTPHandler(mux)

	req := httptest.NewRequest(http.MethodPost, "/api/tasks/email:deliver", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.ServeHTTP(httptest.NewRecorder(), req)
	for _, path := range []string{"/health/live", "/metrics"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	}

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("spans %v, want one (health checks and scrapes are not traced)", spanNames(spans))
	}
	s := spans[0]
	if s.Name != "POST /api/tasks/{type}" {
		t.Errorf("span name %q, want the route pattern", s.Name)
	}
	if s.SpanKind != trace.SpanKindServer {
		t.Errorf("kind %v, want server", s.SpanKind)
	}
	if s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span %v under %v: want the incoming traceparent continued", s.SpanContext, s.Parent)
	}
	if inside.SpanID() != s.SpanContext.SpanID() {
		t.Errorf("the handler's ctx holds span %v, want the server span", inside.SpanID())
	}
}

func TestHTTPHandlerOff(t *testing.T) {
	t.Parallel()
	var p *Provider
	h := &struct{ http.Handler }{http.NotFoundHandler()}
	if got := p.HTTPHandler(h); got != http.Handler(h) {
		t.Errorf("HTTPHandler with tracing off wraps the handler")
	}
}
