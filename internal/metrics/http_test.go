package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/internal/metrics"
)

// testMux is a small API on an http.ServeMux.
func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.PathValue("id")))
	})
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("GET /quiet", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).Flush()
	})
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	return mux
}

func TestHTTPMiddleware(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		giveMethod string
		givePath   string
		wantCode   int
		wantLabels string // route, method, code of forgeq_http_requests_total
	}{
		{name: "pattern, not path", giveMethod: "GET", givePath: "/items/42", wantCode: 200,
			wantLabels: `{code="2xx",method="GET",route="GET /items/{id}"}`},
		{name: "explicit status", giveMethod: "POST", givePath: "/items", wantCode: 201,
			wantLabels: `{code="2xx",method="POST",route="POST /items"}`},
		{name: "nothing written", giveMethod: "GET", givePath: "/quiet", wantCode: 200,
			wantLabels: `{code="2xx",method="GET",route="GET /quiet"}`},
		{name: "flush", giveMethod: "GET", givePath: "/stream", wantCode: 200,
			wantLabels: `{code="2xx",method="GET",route="GET /stream"}`},
		{name: "unknown route", giveMethod: "GET", givePath: "/nope", wantCode: 404,
			wantLabels: `{code="4xx",method="GET",route="unmatched"}`},
		{name: "wrong method", giveMethod: "DELETE", givePath: "/items", wantCode: 405,
			wantLabels: `{code="4xx",method="DELETE",route="unmatched"}`},
		{name: "non-standard method", giveMethod: "BREW", givePath: "/items", wantCode: 405,
			wantLabels: `{code="4xx",method="OTHER",route="unmatched"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, metrics.Options{})
			h := b.x.HTTPMiddleware(nil)(testMux())

			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.giveMethod, tt.givePath, nil))

			if rec.Code != tt.wantCode {
				t.Errorf("status %d, want %d", rec.Code, tt.wantCode)
			}
			got := samples(t, b.x.Registry(), "forgeq_http_requests_total")
			if diff := cmp.Diff(map[string]float64{"forgeq_http_requests_total" + tt.wantLabels: 1}, got); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPMiddlewareDuration(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	h := b.x.HTTPMiddleware(nil)(testMux())
	for _, p := range []string{"/items/1", "/items/2", "/items/3"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	got := samples(t, b.x.Registry(), "forgeq_http_request_duration_seconds")
	if n := got[`forgeq_http_request_duration_seconds_count{method="GET",route="GET /items/{id}"}`]; n != 3 || len(got) != 2 {
		t.Errorf("duration samples = %v, want one series with 3 requests", got)
	}
}

func TestHTTPMiddlewareFlush(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	rec := httptest.NewRecorder()
	b.x.HTTPMiddleware(nil)(testMux()).ServeHTTP(rec, httptest.NewRequest("GET", "/stream", nil))
	if !rec.Flushed {
		t.Error("Flush did not reach the underlying writer")
	}
}

func TestHTTPMiddlewarePanic(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	h := b.x.HTTPMiddleware(nil)(testMux())

	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the handler's panic to go on up", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/boom", nil))
	}()

	got := samples(t, b.x.Registry(), "forgeq_http_requests_total")
	want := map[string]float64{`forgeq_http_requests_total{code="5xx",method="GET",route="GET /boom"}`: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestHTTPMiddlewareCustomRoute(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	route := func(r *http.Request) string {
		if r.URL.Path == "/health" {
			return "health"
		}
		return ""
	}
	h := b.x.HTTPMiddleware(route)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	for _, p := range []string{"/health", "/health", "/other"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	got := samples(t, b.x.Registry(), "forgeq_http_requests_total")
	want := map[string]float64{
		`forgeq_http_requests_total{code="2xx",method="GET",route="health"}`:    2,
		`forgeq_http_requests_total{code="5xx",method="GET",route="unmatched"}`: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestHTTPMiddlewareEventStream checks that an event stream is counted
// but not timed, while the same route's errors are timed as usual.
func TestHTTPMiddlewareEventStream(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "nope" {
			http.Error(w, "no such stream", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Write([]byte("event: state\ndata: {}\n\n"))
	})
	h := b.x.HTTPMiddleware(nil)(mux)
	for _, p := range []string{"/events/1", "/events/2", "/events/nope"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}

	got := samples(t, b.x.Registry(), "forgeq_http_requests_total")
	want := map[string]float64{
		`forgeq_http_requests_total{code="2xx",method="GET",route="GET /events/{id}"}`: 2,
		`forgeq_http_requests_total{code="4xx",method="GET",route="GET /events/{id}"}`: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	durations := samples(t, b.x.Registry(), "forgeq_http_request_duration_seconds")
	if n := durations[`forgeq_http_request_duration_seconds_count{method="GET",route="GET /events/{id}"}`]; n != 1 {
		t.Errorf("duration samples = %v, want the 404 alone", durations)
	}
}
