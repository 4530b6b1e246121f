package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// TestBadInput is the catalogue of bad requests. Each is refused with its
// status and code in the one JSON error shape, and leaves Redis as it was:
// nothing enqueued, no cache value or session written (the rate limiters'
// own state aside).
func TestBadInput(t *testing.T) {
	t.Parallel()
	enqueuePath := "/api/tasks/" + tasks.TypeProcessData
	validTask := `{"payload":{"key":"report:1","work":10}}`
	tests := []struct {
		name       string
		giveOpts   func(*web.Options)
		prepare    func(t *testing.T, b *testBundle, q *req) // before the request; may change it
		give       req
		wantStatus int
		wantCode   string
		wantInMsg  string
	}{
		{
			name:       "unknown route",
			give:       req{Path: "/no/such/route"},
			wantStatus: http.StatusNotFound, wantCode: "not_found", wantInMsg: "no route for GET /no/such/route",
		},
		{
			name:       "unknown api route",
			give:       req{Method: http.MethodPost, Path: "/api/nothing", Header: jsonHeader, Body: `{}`},
			wantStatus: http.StatusNotFound, wantCode: "not_found",
		},
		{
			name:       "wrong method on the cache route",
			give:       req{Method: http.MethodDelete, Path: "/api/cache/report:1"},
			wantStatus: http.StatusMethodNotAllowed, wantCode: "method_not_allowed", wantInMsg: "allowed: GET, HEAD",
		},
		{
			name:       "wrong method on enqueue",
			give:       req{Method: http.MethodPut, Path: enqueuePath, Header: jsonHeader, Body: validTask},
			wantStatus: http.StatusMethodNotAllowed, wantCode: "method_not_allowed",
		},
		{
			name:       "body too large by its declared length",
			giveOpts:   func(o *web.Options) { o.MaxBodyBytes = 1 << 10 },
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"` + strings.Repeat("k", 2<<10) + `","work":1}}`},
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: "request_too_large",
		},
		{
			name:       "body too large, chunked",
			giveOpts:   func(o *web.Options) { o.MaxBodyBytes = 1 << 10 },
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Chunked: true, Body: `{"payload":{"key":"` + strings.Repeat("k", 2<<10) + `","work":1}}`},
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: "request_too_large",
		},
		{
			name:       "default body limit",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"` + strings.Repeat("k", web.DefaultMaxBodyBytes) + `","work":1}}`},
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: "request_too_large",
		},
		{
			name:       "malformed JSON",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"report:1",}}`},
			wantStatus: http.StatusBadRequest, wantCode: "malformed_json", wantInMsg: "malformed JSON at byte",
		},
		{
			name:       "truncated JSON",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"report:1"`},
			wantStatus: http.StatusBadRequest, wantCode: "malformed_json",
		},
		{
			name:       "trailing data after the JSON",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask + `{}`},
			wantStatus: http.StatusBadRequest, wantCode: "malformed_json", wantInMsg: "trailing data",
		},
		{
			name:       "empty body",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader},
			wantStatus: http.StatusBadRequest, wantCode: "malformed_json", wantInMsg: "empty",
		},
		{
			name:       "unknown envelope field",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"priority":9}`},
			wantStatus: http.StatusBadRequest, wantCode: "malformed_json", wantInMsg: `unknown field "priority"`,
		},
		{
			name:       "not JSON content type",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: map[string]string{"Content-Type": "text/plain"}, Body: validTask},
			wantStatus: http.StatusUnsupportedMediaType, wantCode: "unsupported_media_type",
		},
		{
			name:       "unknown task type",
			give:       req{Method: http.MethodPost, Path: "/api/tasks/email:deliver", Header: jsonHeader, Body: validTask},
			wantStatus: http.StatusBadRequest, wantCode: "unknown_task_type", wantInMsg: `unknown task type "email:deliver" (known: cache:invalidate, cache:warm, data:process)`,
		},
		{
			name:       "payload failing validation",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"report:1","work":0}}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_payload", wantInMsg: `field "work"`,
		},
		{
			name:       "payload missing a required field",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"work":5}}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_payload", wantInMsg: `missing required field "key"`,
		},
		{
			name:       "payload with an unknown field",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":5,"Work":6}}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_payload", wantInMsg: "unknown field",
		},
		{
			name:       "payload not an object",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":[1,2]}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_payload",
		},
		{
			name:       "bad delay",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"delay":"soon"}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_option", wantInMsg: `field "delay"`,
		},
		{
			name:       "unique below a second",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"unique":"10ms"}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_option", wantInMsg: `field "unique"`,
		},
		{
			name:       "negative max_retry",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"max_retry":-1}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_option", wantInMsg: `field "max_retry"`,
		},
		{
			name:       "max_retry of the wrong type",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"max_retry":"3"}`},
			wantStatus: http.StatusBadRequest, wantCode: "malformed_json", wantInMsg: `field "max_retry": want an integer`,
		},
		{
			name:       "queue name with a space",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"queue":"high priority"}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_option", wantInMsg: `field "queue"`,
		},
		{
			name:       "deadline in the past",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"deadline":"2001-01-01T00:00:00Z"}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_option", wantInMsg: `field "deadline"`,
		},
		{
			name:       "delay and process_at",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1},"delay":"1m","process_at":"2099-01-01T00:00:00Z"}`},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_option",
		},
		{
			name: "duplicate task id",
			prepare: func(t *testing.T, b *testBundle, q *req) {
				resp := b.send(t, req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"a","work":1},"id":"job-1"}`})
				if resp.Status != http.StatusAccepted {
					t.Fatalf("first enqueue: status %d: %s", resp.Status, resp.Body)
				}
			},
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"b","work":1},"id":"job-1"}`},
			wantStatus: http.StatusConflict, wantCode: "conflict", wantInMsg: `task id "job-1" is taken`,
		},
		{
			name: "unique conflict",
			prepare: func(t *testing.T, b *testBundle, q *req) {
				resp := b.send(t, req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"a","work":1},"unique":"1h"}`})
				if resp.Status != http.StatusAccepted {
					t.Fatalf("first enqueue: status %d: %s", resp.Status, resp.Body)
				}
			},
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: `{"payload":{"key":"a","work":1},"unique":"1h"}`},
			wantStatus: http.StatusConflict, wantCode: "conflict", wantInMsg: "already queued",
		},
		{
			name:       "over-long cache key",
			give:       req{Path: "/api/cache/" + strings.Repeat("k", web.MaxKeyBytes+1)},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_key", wantInMsg: "257 bytes long, over the 256-byte limit",
		},
		{
			name:       "cache key with a NUL",
			give:       req{Path: "/api/cache/user%001"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_key", wantInMsg: "control character",
		},
		{
			name:       "cache key with a newline",
			give:       req{Path: "/api/cache/user%0A1"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_key", wantInMsg: "control character",
		},
		{
			name:       "cache key with a C1 control character",
			give:       req{Path: "/api/cache/user%C2%851"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_key", wantInMsg: "control character",
		},
		{
			name:       "cache key not UTF-8",
			give:       req{Path: "/api/cache/user%FF"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_key", wantInMsg: "UTF-8",
		},
		{
			name:       "reserved cache key",
			give:       req{Path: "/api/cache/session:abc"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_key", wantInMsg: "reserved",
		},
		{
			name:       "lock cache key",
			give:       req{Path: "/api/cache/__lock__:report:1"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_key", wantInMsg: "reserved",
		},
		{
			name:       "work not a number",
			give:       req{Path: "/api/cache/report:1?work=lots"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_work",
		},
		{
			name:       "work too large",
			give:       req{Path: "/api/cache/report:1?work=1000000000"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_work",
		},
		{
			name:       "task status with a control character",
			give:       req{Path: "/api/tasks/default/a%07b"},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_task_ref",
		},
		{
			name:       "unknown task",
			give:       req{Path: "/api/tasks/default/no-such-task"},
			wantStatus: http.StatusNotFound, wantCode: "not_found", wantInMsg: `no task "no-such-task" in queue "default"`,
		},
		{
			name:       "enqueue without credentials",
			giveOpts:   withAuth,
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized", wantInMsg: "authentication required",
		},
		{
			name:       "cache-aside without credentials",
			giveOpts:   withAuth,
			give:       req{Path: "/api/cache/report:1?work=1"},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized", wantInMsg: "authentication required",
		},
		{
			name:       "task status without credentials",
			giveOpts:   withAuth,
			give:       req{Path: "/api/tasks/default/some-task"},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized", wantInMsg: "authentication required",
		},
		{
			name:       "malformed session cookie",
			giveOpts:   withAuth,
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask, Cookie: "not-a-session"},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized", wantInMsg: "not valid",
		},
		{
			name:       "unknown session cookie",
			giveOpts:   withAuth,
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask, Cookie: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized", wantInMsg: "expired",
		},
		{
			name:     "expired session cookie",
			giveOpts: withAuth,
			prepare: func(t *testing.T, b *testBundle, q *req) {
				q.Cookie = b.login(t)
				b.mr.FastForward(web.DefaultSessionTTL + 1)
			},
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized", wantInMsg: "expired",
		},
		{
			name:     "logged-out session cookie",
			giveOpts: withAuth,
			prepare: func(t *testing.T, b *testBundle, q *req) {
				q.Cookie = b.login(t)
				if resp := b.send(t, req{Method: http.MethodPost, Path: "/logout", Cookie: q.Cookie}); resp.Status != http.StatusOK {
					t.Fatalf("logout: status %d: %s", resp.Status, resp.Body)
				}
			},
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized", wantInMsg: "expired",
		},
		{
			name:       "wrong basic auth password",
			giveOpts:   withAuth,
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask, User: testUser, Pass: "wrong"},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_credentials",
		},
		{
			name:       "wrong login password",
			giveOpts:   withAuth,
			give:       req{Method: http.MethodPost, Path: "/login", Header: jsonHeader, Body: `{"username":"admin","password":"wrong"}`},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_credentials", wantInMsg: "wrong username or password",
		},
		{
			name:       "wrong login username",
			giveOpts:   withAuth,
			give:       req{Method: http.MethodPost, Path: "/login", Header: jsonHeader, Body: `{"username":"root","password":"` + testPass + `"}`},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_credentials",
		},
		{
			name:     "repeated wrong passwords",
			giveOpts: withAuth,
			prepare: func(t *testing.T, b *testBundle, q *req) {
				for i := range web.DefaultLoginLimit.Burst {
					resp := b.send(t, req{Method: http.MethodPost, Path: "/login", Header: jsonHeader, Body: `{"username":"admin","password":"guess"}`})
					if resp.Status != http.StatusUnauthorized {
						t.Fatalf("wrong password %d: status %d, want 401", i+1, resp.Status)
					}
				}
			},
			// Even the right password is refused now.
			give:       req{Method: http.MethodPost, Path: "/login", Header: jsonHeader, Body: `{"username":"admin","password":"` + testPass + `"}`},
			wantStatus: http.StatusTooManyRequests, wantCode: "rate_limited", wantInMsg: "too many login attempts",
		},
		{
			name:     "repeated wrong basic auth passwords",
			giveOpts: withAuth,
			prepare: func(t *testing.T, b *testBundle, q *req) {
				for range web.DefaultLoginLimit.Burst {
					b.send(t, req{Path: "/monitoring/api/queues", User: testUser, Pass: "guess"})
				}
			},
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask, User: testUser, Pass: testPass},
			wantStatus: http.StatusTooManyRequests, wantCode: "rate_limited",
		},
		{
			name:       "login when no credentials are configured",
			give:       req{Method: http.MethodPost, Path: "/login", Header: jsonHeader, Body: `{"username":"admin","password":"x"}`},
			wantStatus: http.StatusNotFound, wantCode: "not_found", wantInMsg: "login is disabled",
		},
		{
			name:       "cross-origin enqueue from a browser",
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, Body: validTask},
			wantStatus: http.StatusForbidden, wantCode: "cross_origin",
		},
		{
			name:       "cross-origin login from a browser",
			giveOpts:   withAuth,
			give:       req{Method: http.MethodPost, Path: "/login", Header: map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, Body: `{"username":"admin","password":"` + testPass + `"}`},
			wantStatus: http.StatusForbidden, wantCode: "cross_origin",
		},
		{
			name:       "dashboard write when read-only",
			giveOpts:   func(o *web.Options) { o.ReadOnlyDashboard = true },
			give:       req{Method: http.MethodPost, Path: "/monitoring/api/queues/default:pause"},
			wantStatus: http.StatusMethodNotAllowed, wantCode: "method_not_allowed", wantInMsg: "read-only",
		},
		{
			name:       "dashboard api without credentials",
			giveOpts:   withAuth,
			give:       req{Path: "/monitoring/api/queues"},
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized",
		},
		{
			name:       "dashboard api error from asynqmon",
			give:       req{Method: http.MethodDelete, Path: "/monitoring/api/queues/nosuchqueue"},
			wantStatus: http.StatusNotFound, wantCode: "not_found", wantInMsg: "queue not found",
		},
		{
			name:       "request after shutdown begins",
			prepare:    func(t *testing.T, b *testBundle, q *req) { web.BeginShutdown(b.srv) },
			give:       req{Method: http.MethodPost, Path: enqueuePath, Header: jsonHeader, Body: validTask},
			wantStatus: http.StatusServiceUnavailable, wantCode: "shutting_down",
		},
		{
			name:       "cache request after shutdown begins",
			prepare:    func(t *testing.T, b *testBundle, q *req) { web.BeginShutdown(b.srv) },
			give:       req{Path: "/api/cache/report:1"},
			wantStatus: http.StatusServiceUnavailable, wantCode: "shutting_down",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mods []func(*web.Options)
			if tt.giveOpts != nil {
				mods = append(mods, tt.giveOpts)
			}
			b := setup(t, mods...)
			q := tt.give
			if tt.prepare != nil {
				tt.prepare(t, b, &q)
			}
			before := b.state(t)

			resp := b.send(t, q)
			t.Logf("%d %s", resp.Status, resp.Body)
			msg := wantError(t, resp, tt.wantStatus, tt.wantCode)
			if !strings.Contains(msg, tt.wantInMsg) {
				t.Errorf("message %q does not contain %q", msg, tt.wantInMsg)
			}
			if diff := cmp.Diff(before, b.state(t)); diff != "" {
				t.Errorf("the request changed Redis (-before +after):\n%s", diff)
			}
		})
	}
}

// TestMethodNotAllowedSaysWhatIs checks the Allow header of a 405.
func TestMethodNotAllowedSaysWhatIs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp := b.send(t, req{Method: http.MethodPost, Path: "/health/live"})
	wantError(t, resp, http.StatusMethodNotAllowed, "method_not_allowed")
	if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
		t.Errorf("Allow = %q, want %q", got, "GET, HEAD")
	}
}
