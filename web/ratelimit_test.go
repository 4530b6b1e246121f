package web_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/web"
)

// TestRateLimit runs on miniredis and on the real Redis (see onEachRedis);
// it is not parallel for that reason.
func TestRateLimit(t *testing.T) {
	onEachRedis(t, tasksDB, testRateLimit)
}

func testRateLimit(t *testing.T, setup setupFunc) {
	limit := func(o *web.Options) { o.RateLimit = cachemgr.PerMinute(3) }

	t.Run("by address", func(t *testing.T) {
		b := setup(t, limit)
		// A client by its address: three requests, then 429.
		for i := range 3 {
			resp := b.send(t, req{Path: "/api/task-types"})
			if resp.Status != http.StatusOK {
				t.Fatalf("request %d: status %d: %s", i+1, resp.Status, resp.Body)
			}
			wantHeader(t, resp, "X-RateLimit-Limit", "3")
			wantHeader(t, resp, "X-RateLimit-Remaining", strconv.Itoa(2-i))
			if reset, _ := strconv.Atoi(resp.Header.Get("X-RateLimit-Reset")); reset < 1 || reset > 60 {
				t.Errorf("request %d: X-RateLimit-Reset = %q, want 1 to 60 seconds", i+1, resp.Header.Get("X-RateLimit-Reset"))
			}
		}
		resp := b.send(t, req{Path: "/api/cache/report:1"})
		wantError(t, resp, http.StatusTooManyRequests, "rate_limited")
		wantHeader(t, resp, "X-RateLimit-Limit", "3")
		wantHeader(t, resp, "X-RateLimit-Remaining", "0")
		// One request every 20s comes back: the wait rounds up to 20.
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 15 || ra > 20 {
			t.Errorf("Retry-After = %q, want about 20 seconds", resp.Header.Get("Retry-After"))
		}
		if _, err := b.m.Get(t.Context(), "report:1"); err == nil {
			t.Error("a refused request computed and cached its value")
		}

		// Routes outside /api/ are not limited.
		if resp := b.send(t, req{Path: "/health/live"}); resp.Status != http.StatusOK || resp.Header.Get("X-RateLimit-Limit") != "" {
			t.Errorf("GET /health/live: status %d, X-RateLimit-Limit %q; want 200 without limit headers",
				resp.Status, resp.Header.Get("X-RateLimit-Limit"))
		}
	})

	t.Run("by user", func(t *testing.T) {
		b := setup(t, withAuth, limit)
		// Without credentials a request counts against its address, before
		// it is refused for want of them.
		resp := b.send(t, req{Path: "/api/task-types"})
		wantError(t, resp, http.StatusUnauthorized, "unauthorized")
		wantHeader(t, resp, "X-RateLimit-Remaining", "2")

		// A logged-in user has a bucket of their own, whatever the
		// address; so does a basic-auth user (the same user here).
		cookie := b.login(t)
		for i := range 3 {
			resp := b.send(t, req{Path: "/api/task-types", Cookie: cookie})
			if resp.Status != http.StatusOK {
				t.Fatalf("user request %d: status %d: %s", i+1, resp.Status, resp.Body)
			}
			wantHeader(t, resp, "X-RateLimit-Remaining", strconv.Itoa(2-i))
		}
		resp = b.send(t, req{Path: "/api/task-types", User: testUser, Pass: testPass})
		wantError(t, resp, http.StatusTooManyRequests, "rate_limited")
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 15 || ra > 20 {
			t.Errorf("Retry-After = %q, want about 20 seconds", resp.Header.Get("Retry-After"))
		}

		// The address's bucket is another one.
		resp = b.send(t, req{Path: "/api/task-types"})
		wantError(t, resp, http.StatusUnauthorized, "unauthorized")
		wantHeader(t, resp, "X-RateLimit-Remaining", "1")
	})
}

func TestNoRateLimitByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for range 20 {
		resp := b.send(t, req{Path: "/api/task-types"})
		if resp.Status != http.StatusOK || resp.Header.Get("X-RateLimit-Limit") != "" {
			t.Fatalf("status %d, X-RateLimit-Limit %q; want 200 without limit headers", resp.Status, resp.Header.Get("X-RateLimit-Limit"))
		}
	}
}

// wantHeader checks one header of resp.
func wantHeader(tb testing.TB, resp response, name, want string) {
	tb.Helper()
	if got := resp.Header.Get(name); got != want {
		tb.Errorf("%s = %q, want %q", name, got, want)
	}
}

// TestRateLimitFailsOpen checks what the API rate limiter does when Redis
// cannot be asked: it lets the request through, logged, so that routes
// that do not need Redis (the task types) still answer; authentication,
// which needs Redis, still refuses (503) when credentials are configured.
func TestRateLimitFailsOpen(t *testing.T) {
	t.Parallel()
	limit := func(o *web.Options) { o.RateLimit = cachemgr.PerMinute(3) }

	t.Run("no credentials configured", func(t *testing.T) {
		t.Parallel()
		b := setup(t, limit)
		b.mr.Close()
		for i := range 4 { // over the limit, were it counted
			resp := b.send(t, req{Path: "/api/task-types"})
			if resp.Status != http.StatusOK || resp.Header.Get("X-RateLimit-Limit") != "" {
				t.Fatalf("request %d with Redis down: status %d, X-RateLimit-Limit %q; want 200 without limit headers: %s",
					i+1, resp.Status, resp.Header.Get("X-RateLimit-Limit"), resp.Body)
			}
		}
		if n := b.logs.FilterMessage("rate limit check failed").Len(); n != 4 {
			t.Errorf("%d log entries %q, want one a request", n, "rate limit check failed")
		}
	})

	t.Run("credentials configured", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withAuth, limit)
		cookie := b.login(t)
		b.mr.Close()
		for _, q := range []req{
			{Path: "/api/task-types", Cookie: cookie},
			{Path: "/api/task-types", User: testUser, Pass: testPass},
		} {
			wantError(t, b.send(t, q), http.StatusServiceUnavailable, "unavailable")
		}
	})
}
