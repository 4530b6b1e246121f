package web_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

func TestRequestID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name   string
		giveID string
		keep   bool
	}{
		{"kept", "req-42.a_b:c", true},
		{"none", "", false},
		{"too long", strings.Repeat("a", 129), false},
		{"bad characters", "id with spaces", false},
		{"header injection", "a\u00e9b", false},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		resp := b.send(t, req{Path: "/no/such/route", Header: map[string]string{web.RequestIDHeader: tt.giveID}})
		got := resp.Header.Get(web.RequestIDHeader)
		if tt.keep && got != tt.giveID {
			t.Errorf("%s: %s = %q, want %q kept", tt.name, web.RequestIDHeader, got, tt.giveID)
		}
		if !tt.keep && (got == "" || got == tt.giveID || seen[got]) {
			t.Errorf("%s: %s = %q, want a new id", tt.name, web.RequestIDHeader, got)
		}
		seen[got] = true
		wantError(t, resp, http.StatusNotFound, "not_found") // checks request_id == header
	}
}

func TestPanicsBecome500(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		giveOpts func(*web.Options)
	}{
		{
			name:     "in a handler",
			giveOpts: func(o *web.Options) { o.Ready = func() error { panic("worker state is corrupt") } },
		},
		{
			name: "in Options.Middleware",
			giveOpts: func(o *web.Options) {
				o.Middleware = func(next http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if r.URL.Path == "/health/ready" {
							panic("metrics are corrupt")
						}
						next.ServeHTTP(w, r)
					})
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.giveOpts)
			wantError(t, b.send(t, req{Path: "/health/ready"}), http.StatusInternalServerError, "internal")
			// The server keeps serving.
			for range 3 {
				if resp := b.send(t, req{Path: "/health/live"}); resp.Status != http.StatusOK {
					t.Fatalf("GET /health/live after a panic: status %d", resp.Status)
				}
			}
			if n := b.logs.FilterMessage("http handler panic").Len(); n != 1 {
				t.Errorf("%d panic log lines, want 1", n)
			}
		})
	}
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	cookie := b.login(t)
	secrets := []string{cookie, testPass}

	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: map[string]string{
		"Content-Type": "application/json", web.RequestIDHeader: "log-test-1",
	}, Body: `{"payload":{"key":"k","work":1}}`, Cookie: cookie})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("enqueue: status %d: %s", resp.Status, resp.Body)
	}
	b.send(t, req{Path: "/api/task-types", User: testUser, Pass: testPass})
	b.send(t, req{Path: "/nowhere", User: testUser, Pass: "wrong-" + testPass})

	var line map[string]any
	for _, e := range b.logs.FilterMessage("http request").All() {
		fields := e.ContextMap()
		for k, v := range fields {
			for _, secret := range secrets {
				if strings.Contains(fmt.Sprint(v), secret) {
					t.Errorf("log field %s = %v holds a secret", k, v)
				}
			}
		}
		if fields["request_id"] == "log-test-1" {
			line = fields
		}
	}
	if line == nil {
		t.Fatal("no access log line for request log-test-1")
	}
	delete(line, "took")
	delete(line, "bytes")
	want := map[string]any{
		"request_id": "log-test-1",
		"method":     "POST",
		"route":      "POST /api/tasks/{type}",
		"path":       "/api/tasks/" + tasks.TypeProcessData,
		"status":     int64(http.StatusAccepted),
		"remote_ip":  "127.0.0.1",
		"user":       testUser,
	}
	if diff := cmp.Diff(want, line); diff != "" {
		t.Errorf("access log line (-want +got):\n%s", diff)
	}
}

// TestMiddlewareSeesEveryResponse checks what Options.Middleware (the
// metrics) observes: the final status, panics included, and the route.
func TestMiddlewareSeesEveryResponse(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		seen []string
	)
	b := setup(t, func(o *web.Options) {
		o.Ready = func() error { panic("boom") }
		o.Middleware = func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
				next.ServeHTTP(rec, r)
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, fmt.Sprintf("%s %d", r.Pattern, rec.status))
			})
		}
	})
	b.send(t, req{Path: "/health/live"})
	b.send(t, req{Path: "/health/ready"})
	b.send(t, req{Path: "/nowhere"})
	b.send(t, req{Path: "/api/cache/report:1?work=1"})
	want := []string{"GET /health/live 200", "GET /health/ready 500", " 404", "GET /api/cache/{key...} 200"}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("seen by the middleware (-want +got):\n%s", diff)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/health/live", "/monitoring/", "/login", "/nowhere"} {
		resp := b.send(t, req{Path: path})
		wantHeader(t, resp, "X-Content-Type-Options", "nosniff")
		wantHeader(t, resp, "X-Frame-Options", "DENY")
	}
}

func TestMetricsRoute(t *testing.T) {
	t.Parallel()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintln(w, "forgeq_up 1")
	})
	b := setup(t, func(o *web.Options) { o.Metrics = metrics })
	resp := b.send(t, req{Path: "/metrics"})
	if resp.Status != http.StatusOK || string(resp.Body) != "forgeq_up 1\n" {
		t.Errorf("GET /metrics: status %d, body %q", resp.Status, resp.Body)
	}

	without := setup(t)
	wantError(t, without.send(t, req{Path: "/metrics"}), http.StatusNotFound, "not_found")
}

// TestWithInternalMetrics wires the process's metrics the way the worker
// does and checks that /metrics counts requests by route pattern.
func TestWithInternalMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) {
		x, err := metrics.New(metrics.Options{Manager: o.Manager})
		if err != nil {
			t.Fatal(err)
		}
		o.Metrics = x.Handler()
		o.Middleware = x.HTTPMiddleware(nil)
	})
	b.send(t, req{Path: "/api/cache/report:1?work=1"})
	b.send(t, req{Path: "/api/cache/report:2?work=1"})
	b.send(t, req{Path: "/nowhere"})
	resp := b.send(t, req{Path: "/metrics"})
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.Status)
	}
	for _, want := range []string{
		`forgeq_http_requests_total{code="2xx",method="GET",route="GET /api/cache/{key...}"} 2`,
		`forgeq_http_requests_total{code="4xx",method="GET",route="unmatched"} 1`,
	} {
		if !strings.Contains(string(resp.Body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
