package web_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

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
	if !strings.Contains(got.Checks["redis"], "ping") {
		t.Errorf("redis check %q does not say what failed", got.Checks["redis"])
	}
}
