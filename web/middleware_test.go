package web_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
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

func TestClientIPBehindTrustedProxies(t *testing.T) {
	t.Parallel()
	// httptest's client connects from 127.0.0.1: the proxy, when trusted.
	local := netip.MustParsePrefix("127.0.0.0/8")
	inner := netip.MustParsePrefix("10.0.0.0/8")
	tests := []struct {
		name    string
		trusted []netip.Prefix
		xff     []string // X-Forwarded-For header lines
		want    string
	}{
		{name: "no trusted proxies: the header is ignored", xff: []string{"203.0.113.9"}, want: "127.0.0.1"},
		{name: "peer not trusted", trusted: []netip.Prefix{inner}, xff: []string{"203.0.113.9"}, want: "127.0.0.1"},
		{name: "one proxy", trusted: []netip.Prefix{local}, xff: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "spoofed entries left of the client are ignored", trusted: []netip.Prefix{local, inner},
			xff: []string{"198.51.100.1, 203.0.113.9, 10.0.0.2"}, want: "203.0.113.9"},
		{name: "several header lines", trusted: []netip.Prefix{local, inner},
			xff: []string{"198.51.100.1", "203.0.113.9, 10.0.0.2"}, want: "203.0.113.9"},
		{name: "garbage stops the walk at the last trusted hop", trusted: []netip.Prefix{local, inner},
			xff: []string{"not-an-ip, 10.0.0.2"}, want: "10.0.0.2"},
		{name: "only trusted hops", trusted: []netip.Prefix{local, inner}, xff: []string{"10.0.0.3, 10.0.0.2"}, want: "10.0.0.3"},
		{name: "no header", trusted: []netip.Prefix{local}, want: "127.0.0.1"},
		{name: "IPv4-mapped IPv6", trusted: []netip.Prefix{local}, xff: []string{"::ffff:203.0.113.9"}, want: "203.0.113.9"},
		{name: "IPv6 client", trusted: []netip.Prefix{local}, xff: []string{"2001:db8::7"}, want: "2001:db8::7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(o *web.Options) { o.TrustedProxies = tt.trusted })
			r, err := http.NewRequest(http.MethodGet, b.ts.URL+"/health/live", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if resp := do(t, r); resp.Status != http.StatusOK {
				t.Fatalf("status %d", resp.Status)
			}
			logged := b.logs.FilterMessage("http request").All()
			if len(logged) != 1 {
				t.Fatalf("%d access log lines, want 1", len(logged))
			}
			if got := logged[0].ContextMap()["remote_ip"]; got != tt.want {
				t.Errorf("remote_ip = %v, want %s", got, tt.want)
			}
		})
	}
}

// Behind a trusted proxy, each client has its own rate limit bucket.
func TestRateLimitPerClientBehindProxy(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.RateLimit = cachemgr.Limit{Rate: 1, Period: time.Minute, Burst: 1}
	})
	get := func(client string) int {
		return b.send(t, req{Path: "/api/task-types", Header: map[string]string{"X-Forwarded-For": client}}).Status
	}
	if got := get("203.0.113.1"); got != http.StatusOK {
		t.Fatalf("first client's first request: %d", got)
	}
	if got := get("203.0.113.2"); got != http.StatusOK {
		t.Errorf("second client's first request: %d, want 200 (its own bucket)", got)
	}
	if got := get("203.0.113.1"); got != http.StatusTooManyRequests {
		t.Errorf("first client's second request: %d, want 429", got)
	}
}

func TestTrustedProxiesInvalid(t *testing.T) {
	t.Parallel()
	m, err := cachemgr.NewFromClient(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), cachemgr.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	_, err = web.New(web.Options{Manager: m, TrustedProxies: []netip.Prefix{{}}})
	if !errors.Is(err, web.ErrInvalidOptions) || !strings.Contains(err.Error(), "TrustedProxies[0]") {
		t.Errorf("New with a zero prefix: %v, want ErrInvalidOptions naming TrustedProxies[0]", err)
	}
}
