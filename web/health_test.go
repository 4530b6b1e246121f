package web_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/web"
)

// healthBody mirrors the bodies of the health checks.
type healthBody struct {
	Status string            `json:"status"`
	Error  string            `json:"error,omitempty"`
	Checks map[string]string `json:"checks,omitempty"`
}

func TestHealth(t *testing.T) {
	t.Parallel()
	errWorkerDown := errors.New("worker not running")
	tests := []struct {
		name       string
		giveReady  func() error
		giveBreak  func(b *testBundle) // makes something unhealthy
		givePath   string
		wantStatus int
		want       healthBody
	}{
		{
			name:     "live",
			givePath: "/health/live", wantStatus: http.StatusOK, want: healthBody{Status: "ok"},
		},
		{
			name:     "redis healthy",
			givePath: "/health/redis", wantStatus: http.StatusOK, want: healthBody{Status: "healthy"},
		},
		{
			name:      "ready",
			giveReady: func() error { return nil },
			givePath:  "/health/ready", wantStatus: http.StatusOK,
			want: healthBody{Status: "ready", Checks: map[string]string{"redis": "ok", "worker": "ok", "server": "ok"}},
		},
		{
			name:     "ready without a worker check",
			givePath: "/health/ready", wantStatus: http.StatusOK,
			want: healthBody{Status: "ready", Checks: map[string]string{"redis": "ok", "server": "ok"}},
		},
		{
			name:      "unready while the worker is down",
			giveReady: func() error { return errWorkerDown },
			givePath:  "/health/ready", wantStatus: http.StatusServiceUnavailable,
			want: healthBody{Status: "unready", Checks: map[string]string{"redis": "ok", "worker": "worker not running", "server": "ok"}},
		},
		{
			name:      "unready once shutdown begins",
			giveBreak: func(b *testBundle) { web.BeginShutdown(b.srv) },
			givePath:  "/health/ready", wantStatus: http.StatusServiceUnavailable,
			want: healthBody{Status: "unready", Checks: map[string]string{"redis": "ok", "server": "shutting down"}},
		},
		{
			name:      "live while shutting down",
			giveBreak: func(b *testBundle) { web.BeginShutdown(b.srv) },
			givePath:  "/health/live", wantStatus: http.StatusOK, want: healthBody{Status: "ok"},
		},
		{
			name:      "live while Redis is down",
			giveBreak: func(b *testBundle) { b.mr.Close() },
			givePath:  "/health/live", wantStatus: http.StatusOK, want: healthBody{Status: "ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(o *web.Options) { o.Ready = tt.giveReady })
			if tt.giveBreak != nil {
				tt.giveBreak(b)
			}
			resp := b.send(t, req{Path: tt.givePath})
			if resp.Status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.Status, tt.wantStatus)
			}
			if diff := cmp.Diff(tt.want, decode[healthBody](t, resp)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHealthWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.Ready = func() error { return nil } })
	b.mr.Close()

	resp := b.send(t, req{Path: "/health/redis"})
	if resp.Status != http.StatusServiceUnavailable {
		t.Errorf("GET /health/redis: status %d, want 503", resp.Status)
	}
	got := decode[healthBody](t, resp)
	t.Logf("GET /health/redis: %s", resp.Body)
	if got.Status != "unhealthy" || got.Error == "" {
		t.Errorf("GET /health/redis = %+v, want unhealthy with an error", got)
	}

	resp = b.send(t, req{Path: "/health/ready"})
	if resp.Status != http.StatusServiceUnavailable {
		t.Errorf("GET /health/ready: status %d, want 503", resp.Status)
	}
	got = decode[healthBody](t, resp)
	if got.Status != "unready" || got.Checks["redis"] == "ok" || got.Checks["worker"] != "ok" {
		t.Errorf("GET /health/ready = %+v, want unready because of redis", got)
	}
	if got.Checks["redis"] != "redis unreachable" {
		t.Errorf("redis check %q, want the generic reason for an anonymous client", got.Checks["redis"])
	}
}

// TestHealthShowsRedisErrorsOnlyToAuthenticatedClients checks that the
// health checks tell anonymous clients only that Redis is unreachable, not
// the error (which names internal addresses), while clients with the
// credentials get it, and the log gets it once per outage.
func TestHealthShowsRedisErrorsOnlyToAuthenticatedClients(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		giveAuth   bool // configure credentials
		giveUser   string
		givePass   string
		giveCookie bool
		wantDetail bool
	}{
		{name: "anonymous", giveAuth: true},
		{name: "wrong password", giveAuth: true, giveUser: testUser, givePass: "wrong"},
		// A session cannot be checked while Redis is unreachable.
		{name: "session", giveAuth: true, giveCookie: true},
		{name: "basic auth", giveAuth: true, giveUser: testUser, givePass: testPass, wantDetail: true},
		{name: "no credentials configured", giveUser: testUser, givePass: testPass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(o *web.Options) {
				if tt.giveAuth {
					withAuth(o)
				}
				o.Ready = func() error { return nil }
			})
			var cookie string
			if tt.giveCookie {
				cookie = b.login(t)
			}
			addr := b.mr.Addr()
			b.mr.Close()

			for _, path := range []string{"/health/redis", "/health/ready"} {
				resp := b.send(t, req{Path: path, User: tt.giveUser, Pass: tt.givePass, Cookie: cookie})
				if resp.Status != http.StatusServiceUnavailable {
					t.Errorf("GET %s: status %d, want 503", path, resp.Status)
				}
				got := decode[healthBody](t, resp)
				reason := got.Error + got.Checks["redis"]
				if got.Status != "unhealthy" && got.Status != "unready" {
					t.Errorf("GET %s: status %q", path, got.Status)
				}
				// The error names the address, unless the ping timed out
				// first on a slow machine.
				switch detail := reason != "redis unreachable"; {
				case detail != tt.wantDetail:
					t.Errorf("GET %s: reason %q; want the error: %v", path, reason, tt.wantDetail)
				case detail && !strings.Contains(reason, addr) && !strings.Contains(reason, "deadline"):
					t.Errorf("GET %s: reason %q is not the ping's error", path, reason)
				}
			}
			// The log has the detail, once for the outage however many
			// checks fail.
			b.send(t, req{Path: "/health/redis"})
			failed := b.logs.FilterMessage("redis health check failed").All()
			if len(failed) != 1 {
				t.Fatalf("%d log lines %q for one outage, want 1", len(failed), "redis health check failed")
			}
			if msg := fmt.Sprint(failed[0].ContextMap()["error"]); !strings.Contains(msg, addr) && !strings.Contains(msg, "deadline") {
				t.Errorf("the logged error %q is not the ping's error", msg)
			}

			// Once Redis is back, that is logged once too.
			if err := b.mr.Restart(); err != nil {
				t.Fatal(err)
			}
			// The client's pool may wait a little before it dials again.
			deadline := time.Now().Add(15 * time.Second)
			for b.send(t, req{Path: "/health/redis"}).Status != http.StatusOK {
				if time.Now().After(deadline) {
					t.Fatal("GET /health/redis still fails 15s after Redis is back")
				}
				time.Sleep(50 * time.Millisecond)
			}
			for range 2 {
				if resp := b.send(t, req{Path: "/health/redis"}); resp.Status != http.StatusOK {
					t.Fatalf("GET /health/redis after a restart: status %d: %s", resp.Status, resp.Body)
				}
			}
			if n := b.logs.FilterMessage("redis health check passes again").Len(); n != 1 {
				t.Errorf("%d log lines %q, want 1", n, "redis health check passes again")
			}
		})
	}
}
