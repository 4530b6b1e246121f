package web_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// cookieOf returns the session cookie resp sets.
func cookieOf(tb testing.TB, resp response) *http.Cookie {
	tb.Helper()
	for _, c := range (&http.Response{Header: resp.Header}).Cookies() {
		if c.Name == web.SessionCookie {
			return c
		}
	}
	tb.Fatalf("no %s cookie set; headers %v", web.SessionCookie, resp.Header)
	return nil
}

func TestLoginSetsSessionCookie(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{false, true} {
		t.Run("secure="+map[bool]string{false: "false", true: "true"}[secure], func(t *testing.T) {
			t.Parallel()
			b := setup(t, withAuth, func(o *web.Options) { o.CookieSecure = secure })
			resp := b.send(t, req{Method: http.MethodPost, Path: "/login", Header: jsonHeader,
				Body: `{"username":"admin","password":"` + testPass + `"}`})
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.Status, resp.Body)
			}
			got := decode[struct {
				User              string `json:"user"`
				SessionTTLSeconds int64  `json:"session_ttl_seconds"`
			}](t, resp)
			if got.User != testUser || got.SessionTTLSeconds != int64(web.DefaultSessionTTL/time.Second) {
				t.Errorf("body = %+v", got)
			}
			if strings.Contains(string(resp.Body), cookieOf(t, resp).Value) {
				t.Error("the body repeats the session id")
			}

			c := cookieOf(t, resp)
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure != secure || c.MaxAge != 0 {
				t.Errorf("cookie %+v: want HttpOnly, SameSite=Lax, Path=/, Secure=%v, no Max-Age", c, secure)
			}
			// The cookie holds a session of the manager's store.
			var sess struct{ User string }
			if err := b.m.GetSession(context.Background(), c.Value, &sess); err != nil || sess.User != testUser {
				t.Errorf("GetSession = %+v, %v; want the user's session", sess, err)
			}
		})
	}
}

// TestSessionAuthorizesAndSlides runs on miniredis and on the real Redis
// (see onEachRedis); it is not parallel for that reason.
func TestSessionAuthorizesAndSlides(t *testing.T) {
	onEachRedis(t, tasksDB, testSessionAuthorizesAndSlides)
}

func testSessionAuthorizesAndSlides(t *testing.T, setup setupFunc) {
	// On real Redis each step sleeps: half the TTL leaves 1.5s for a
	// request on a loaded machine.
	const ttl = 3 * time.Second
	b := setup(t, withAuth, func(o *web.Options) { o.SessionTTL = ttl })
	cookie := b.login(t)

	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
		Body: `{"payload":{"key":"k","work":1}}`, Cookie: cookie})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("enqueue with the session: status %d: %s", resp.Status, resp.Body)
	}
	// Idle for half the TTL, three times over: each use gives the session
	// another TTL, so it outlives the TTL it was created with.
	for i := range 3 {
		b.elapse(ttl / 2)
		resp := b.send(t, req{Path: "/api/task-types", Cookie: cookie})
		if resp.Status != http.StatusOK {
			t.Fatalf("request %d, %v after login: status %d, want 200 (sliding expiry): %s",
				i+1, time.Duration(i+1)*ttl/2, resp.Status, resp.Body)
		}
	}
	// Idle for longer than the TTL: the session is gone.
	b.elapse(ttl + ttl/4)
	resp = b.send(t, req{Path: "/api/task-types", Cookie: cookie})
	if msg := wantError(t, resp, http.StatusUnauthorized, "unauthorized"); !strings.Contains(msg, "expired") {
		t.Errorf("message %q does not say the session expired", msg)
	}
	var sess struct{ User string }
	if err := b.m.GetSession(context.Background(), cookie, &sess); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("GetSession after the TTL = %v, want ErrMiss", err)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	cookie := b.login(t)

	resp := b.send(t, req{Method: http.MethodPost, Path: "/logout", Cookie: cookie})
	if resp.Status != http.StatusOK {
		t.Fatalf("logout: status %d: %s", resp.Status, resp.Body)
	}
	if c := cookieOf(t, resp); c.Value != "" || c.MaxAge >= 0 || !c.HttpOnly {
		t.Errorf("logout cookie %+v: want it cleared", c)
	}
	var sess struct{ User string }
	if err := b.m.GetSession(context.Background(), cookie, &sess); err != cachemgr.ErrMiss {
		t.Errorf("GetSession after logout = %v, want ErrMiss", err)
	}
	// Logging out again, or without a session, is fine.
	for _, c := range []string{cookie, "", "garbage"} {
		if resp := b.send(t, req{Method: http.MethodPost, Path: "/logout", Cookie: c}); resp.Status != http.StatusOK {
			t.Errorf("logout with cookie %q: status %d", c, resp.Status)
		}
	}
}

func TestFormLogin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		giveNext     string
		givePassword string
		wantStatus   int
		wantLocation string
	}{
		{"to the dashboard by default", "", testPass, http.StatusSeeOther, "/monitoring/"},
		{"to a local path", "/monitoring/queues/default?tab=retry", testPass, http.StatusSeeOther, "/monitoring/queues/default?tab=retry"},
		{"never to another host", "//evil.example/x", testPass, http.StatusSeeOther, "/monitoring/"},
		{"never to a backslash host", "/\\evil.example", testPass, http.StatusSeeOther, "/monitoring/"},
		{"never to a URL", "https://evil.example/", testPass, http.StatusSeeOther, "/monitoring/"},
		{"wrong password shows the page again", "/monitoring/", "wrong", http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, withAuth)
			form := url.Values{"username": {testUser}, "password": {tt.givePassword}, "next": {tt.giveNext}}
			resp := b.send(t, req{Method: http.MethodPost, Path: "/login",
				Header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, Body: form.Encode()})
			if resp.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
			if got := resp.Header.Get("Location"); got != tt.wantLocation {
				t.Errorf("Location = %q, want %q", got, tt.wantLocation)
			}
			if tt.wantLocation != "" {
				cookieOf(t, resp)
				return
			}
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
				!strings.Contains(string(resp.Body), "wrong username or password") {
				t.Errorf("failed form login: %s %s, want the login page with the error", resp.Header.Get("Content-Type"), resp.Body)
			}
		})
	}
}

func TestLoginPage(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	resp := b.send(t, req{Path: "/login?next=" + url.QueryEscape("/monitoring/servers")})
	if resp.Status != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /login: status %d, type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`<form method="post" action="/login">`, `name="password"`, `value="/monitoring/servers"`} {
		if !strings.Contains(string(resp.Body), want) {
			t.Errorf("login page lacks %s", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	// A foreign next is dropped, and markup in it is escaped.
	resp = b.send(t, req{Path: "/login?next=" + url.QueryEscape(`/"><script>x</script>`)})
	if strings.Contains(string(resp.Body), "<script>x") {
		t.Error("the login page echoes markup from next")
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
		Body: `{"payload":{"key":"k","work":1}}`, User: testUser, Pass: testPass})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("enqueue with basic auth: status %d: %s", resp.Status, resp.Body)
	}
	resp = b.send(t, req{Path: "/monitoring/api/queues", User: testUser, Pass: testPass})
	if resp.Status != http.StatusOK {
		t.Fatalf("dashboard API with basic auth: status %d: %s", resp.Status, resp.Body)
	}
	// Many right passwords in a row are never throttled.
	for i := range 3 * web.DefaultLoginLimit.Burst {
		resp := b.send(t, req{Path: "/monitoring/api/queues", User: testUser, Pass: testPass})
		if resp.Status != http.StatusOK {
			t.Fatalf("request %d with basic auth: status %d: %s", i+1, resp.Status, resp.Body)
		}
	}
	resp = b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
		Body: `{"payload":{"key":"k","work":1}}`})
	wantError(t, resp, http.StatusUnauthorized, "unauthorized")
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("WWW-Authenticate = %q, want a basic challenge", got)
	}
}

// TestWrongPasswordsAreThrottled runs on miniredis and on the real Redis
// (see onEachRedis); it is not parallel for that reason.
func TestWrongPasswordsAreThrottled(t *testing.T) {
	onEachRedis(t, tasksDB, testWrongPasswordsAreThrottled)
}

func testWrongPasswordsAreThrottled(t *testing.T, setup setupFunc) {
	const limit = 3 // a minute: one attempt back every 20s
	enqueue := req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
		Body: `{"payload":{"key":"k","work":1}}`}
	loginAs := func(pass string) req {
		return req{Method: http.MethodPost, Path: "/login", Header: jsonHeader,
			Body: `{"username":"` + testUser + `","password":"` + pass + `"}`}
	}
	withBasic := func(q req, pass string) req {
		q.User, q.Pass = testUser, pass
		return q
	}
	tests := []struct {
		name      string
		giveWrong req // a wrong password, sent limit times
		giveRight req // then the right one, refused
	}{
		{"login", loginAs("guess"), loginAs(testPass)},
		{"basic auth", withBasic(enqueue, "guess"), withBasic(enqueue, testPass)},
		{"basic auth, then login", withBasic(enqueue, "guess"), loginAs(testPass)},
	}
	// Not parallel: on the real Redis the bundles share asynq's keys, which
	// the state comparison reads and the other client's enqueue changes.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t, withAuth, func(o *web.Options) {
				o.LoginLimit = cachemgr.PerMinute(limit)
				o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			})
			from := func(q req, client string) req {
				q.Header = maps.Clone(q.Header)
				if q.Header == nil {
					q.Header = map[string]string{}
				}
				q.Header["X-Forwarded-For"] = client
				return q
			}
			const attacker, other = "192.0.2.7", "192.0.2.8"
			for range limit {
				wantError(t, b.send(t, from(tt.giveWrong, attacker)), http.StatusUnauthorized, "invalid_credentials")
			}
			before := b.state(t)
			resp := b.send(t, from(tt.giveRight, attacker))
			msg := wantError(t, resp, http.StatusTooManyRequests, "rate_limited")
			if !strings.Contains(msg, "too many login attempts") {
				t.Errorf("message %q does not say there were too many login attempts", msg)
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 15 || ra > 20 {
				t.Errorf("Retry-After = %q, want about 20 seconds", resp.Header.Get("Retry-After"))
			}
			if diff := cmp.Diff(before, b.state(t)); diff != "" {
				t.Errorf("the throttled request changed Redis (-before +after):\n%s", diff)
			}
			// Another client is not throttled.
			if resp := b.send(t, from(tt.giveRight, other)); resp.Status != http.StatusOK && resp.Status != http.StatusAccepted {
				t.Errorf("the right password from another client: status %d, want 200 or 202: %s", resp.Status, resp.Body)
			}
		})
	}
}

// TestAPINeedsCredentials checks which routes need credentials when they
// are configured: every /api/ route (401 without, the route's answer with a
// session or basic auth), and none of the health checks, /metrics and the
// login routes.
func TestAPINeedsCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth, func(o *web.Options) {
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("# metrics\n")) })
	})
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
		Body: `{"payload":{"key":"k","work":1}}`, User: testUser, Pass: testPass})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("enqueue with basic auth: status %d: %s", resp.Status, resp.Body)
	}
	statusURL := decode[struct {
		StatusURL string `json:"status_url"`
	}](t, resp).StatusURL
	cookie := b.login(t)

	apiRoutes := []struct {
		name       string
		give       req
		wantStatus int
	}{
		{"cache-aside", req{Path: "/api/cache/report:1?work=1"}, http.StatusOK},
		{"cache-aside HEAD", req{Method: http.MethodHead, Path: "/api/cache/report:2?work=1"}, http.StatusOK},
		{"enqueue", req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
			Body: `{"payload":{"key":"k","work":1}}`}, http.StatusAccepted},
		{"task status", req{Path: statusURL}, http.StatusOK},
		{"task types", req{Path: "/api/task-types"}, http.StatusOK},
	}
	for _, tt := range apiRoutes {
		t.Run(tt.name, func(t *testing.T) {
			before := b.state(t)
			resp := b.send(t, tt.give)
			if tt.give.Method == http.MethodHead {
				if resp.Status != http.StatusUnauthorized {
					t.Errorf("without credentials: status %d, want 401", resp.Status)
				}
			} else {
				wantError(t, resp, http.StatusUnauthorized, "unauthorized")
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("without credentials: WWW-Authenticate = %q, want a basic challenge", got)
			}
			if diff := cmp.Diff(before, b.state(t)); diff != "" {
				t.Errorf("the refused request changed Redis (-before +after):\n%s", diff)
			}

			withSession := tt.give
			withSession.Cookie = cookie
			if resp := b.send(t, withSession); resp.Status != tt.wantStatus {
				t.Errorf("with a session: status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
			withBasic := tt.give
			withBasic.User, withBasic.Pass = testUser, testPass
			if resp := b.send(t, withBasic); resp.Status != tt.wantStatus {
				t.Errorf("with basic auth: status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
		})
	}

	openRoutes := []struct {
		give       req
		wantStatus int
	}{
		{req{Path: "/health/live"}, http.StatusOK},
		{req{Path: "/health/ready"}, http.StatusOK},
		{req{Path: "/health/redis"}, http.StatusOK},
		{req{Path: "/metrics"}, http.StatusOK},
		{req{Path: "/login"}, http.StatusOK},
		{req{Method: http.MethodPost, Path: "/login", Header: jsonHeader,
			Body: `{"username":"` + testUser + `","password":"` + testPass + `"}`}, http.StatusOK},
		{req{Method: http.MethodPost, Path: "/logout"}, http.StatusOK},
	}
	for _, tt := range openRoutes {
		if resp := b.send(t, tt.give); resp.Status != tt.wantStatus {
			t.Errorf("%q %s without credentials: status %d, want %d: %s",
				tt.give.Method, tt.give.Path, resp.Status, tt.wantStatus, resp.Body)
		}
	}
}

// With MetricsAuth, /metrics needs the credentials like the API: a
// Prometheus scrapes it with basic auth. The health checks stay open.
func TestMetricsAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth, func(o *web.Options) {
		o.MetricsAuth = true
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("# metrics\n")) })
	})
	resp := b.send(t, req{Path: "/metrics"})
	wantError(t, resp, http.StatusUnauthorized, "unauthorized")
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("WWW-Authenticate = %q, want a basic challenge for Prometheus", got)
	}
	if resp := b.send(t, req{Path: "/metrics", User: testUser, Pass: "wrong password"}); resp.Status != http.StatusUnauthorized {
		t.Errorf("with a wrong password: status %d, want 401", resp.Status)
	}
	for name, r := range map[string]req{
		"basic auth": {Path: "/metrics", User: testUser, Pass: testPass},
		"a session":  {Path: "/metrics", Cookie: b.login(t)},
	} {
		if resp := b.send(t, r); resp.Status != http.StatusOK || string(resp.Body) != "# metrics\n" {
			t.Errorf("with %s: status %d, body %q", name, resp.Status, resp.Body)
		}
	}
	if resp := b.send(t, req{Path: "/health/ready"}); resp.Status != http.StatusOK {
		t.Errorf("/health/ready: status %d, want 200 without credentials", resp.Status)
	}
}

// TestAPIOpenWithoutConfiguredCredentials checks that with no credentials
// configured (loopback only) the /api/ routes need none.
func TestAPIOpenWithoutConfiguredCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, q := range []req{
		{Path: "/api/cache/report:1?work=1"},
		{Path: "/api/task-types"},
		{Path: "/api/tasks/default/no-such-task"}, // 404: it got past authentication
	} {
		if resp := b.send(t, q); resp.Status == http.StatusUnauthorized {
			t.Errorf("GET %s: status 401, want no authentication: %s", q.Path, resp.Body)
		}
	}
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
		Body: `{"payload":{"key":"k","work":1}}`})
	if resp.Status != http.StatusAccepted {
		t.Errorf("enqueue: status %d, want 202: %s", resp.Status, resp.Body)
	}
}

// TestSessionEndsWhenThePasswordChanges checks that a session is bound to
// the credentials it was made with: servers sharing one Redis accept it
// while they have the same password, and one with another password ends
// it.
func TestSessionEndsWhenThePasswordChanges(t *testing.T) {
	t.Parallel()
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rdb.Close() })
		testSessionEndsWhenThePasswordChanges(t, func(tb testing.TB, mods ...func(*web.Options)) *testBundle {
			tb.Helper()
			return setupOn(tb, mr, rdb, mods...)
		})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		rdb := realRedis(t, sessionsDB)
		prefix := redistest.Prefix(t) // one for every server: they share the sessions
		testSessionEndsWhenThePasswordChanges(t, func(tb testing.TB, mods ...func(*web.Options)) *testBundle {
			tb.Helper()
			return setupPrefixed(tb, nil, rdb, prefix, mods...)
		})
	})
}

// testSessionEndsWhenThePasswordChanges is the test's body; every setup
// builds a server on the same Redis and key prefix.
func testSessionEndsWhenThePasswordChanges(t *testing.T, setup setupFunc) {
	const otherPass = "another password entirely"
	withOtherPass := func(o *web.Options) { o.AuthUsername, o.AuthPassword = testUser, otherPass }

	first := setup(t, withAuth)
	cookie := first.login(t)
	raw, err := first.rdb.Get(context.Background(), first.m.KeyPrefix()+"session:"+cookie).Result()
	if err != nil {
		t.Fatalf("read the session: %v", err)
	}
	if strings.Contains(raw, testPass) || !strings.Contains(raw, testUser) {
		t.Errorf("the session %s holds the password, or not the user", raw)
	}

	// A restart with the same password keeps the session.
	same := setup(t, withAuth)
	if resp := same.send(t, req{Path: "/api/task-types", Cookie: cookie}); resp.Status != http.StatusOK {
		t.Fatalf("same password: status %d, want 200: %s", resp.Status, resp.Body)
	}

	// A restart with another password ends it, on every route that
	// authenticates, and deletes it.
	changed := setup(t, withOtherPass)
	for _, path := range []string{"/api/task-types", "/monitoring/api/queues"} {
		resp := changed.send(t, req{Path: path, Cookie: cookie})
		msg := wantError(t, resp, http.StatusUnauthorized, "unauthorized")
		if strings.Contains(msg, testPass) || strings.Contains(msg, otherPass) {
			t.Errorf("%s: the message %q holds a password", path, msg)
		}
	}
	var sess struct{ User string }
	if err := changed.m.GetSession(context.Background(), cookie, &sess); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("GetSession after a refusal = %+v, %v; want ErrMiss", sess, err)
	}
	// Not even the old password brings it back.
	resp := same.send(t, req{Path: "/api/task-types", Cookie: cookie})
	wantError(t, resp, http.StatusUnauthorized, "unauthorized")

	// The new password's sessions work on its servers only.
	resp = changed.send(t, req{Method: http.MethodPost, Path: "/login", Header: jsonHeader,
		Body: `{"username":"` + testUser + `","password":"` + otherPass + `"}`})
	newCookie := cookieOf(t, resp).Value
	if resp := changed.send(t, req{Path: "/api/task-types", Cookie: newCookie}); resp.Status != http.StatusOK {
		t.Errorf("new password's session on its server: status %d, want 200: %s", resp.Status, resp.Body)
	}
	resp = first.send(t, req{Path: "/api/task-types", Cookie: newCookie})
	wantError(t, resp, http.StatusUnauthorized, "unauthorized")
	for _, b := range []*testBundle{first, same, changed} {
		for _, e := range b.logs.All() {
			if s := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(s, testPass) || strings.Contains(s, otherPass) {
				t.Errorf("log line %s holds a password", s)
			}
		}
	}
}
