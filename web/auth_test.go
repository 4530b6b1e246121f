package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/cachemgr"
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

func TestSessionAuthorizesAndSlides(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth, func(o *web.Options) { o.SessionTTL = time.Hour })
	cookie := b.login(t)
	body := `{"payload":{"key":"k","work":1}}`

	// 50 minutes idle, then a request: the session lives another hour.
	b.mr.FastForward(50 * time.Minute)
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader, Body: body, Cookie: cookie})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("enqueue with the session: status %d: %s", resp.Status, resp.Body)
	}
	b.mr.FastForward(50 * time.Minute)
	resp = b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader, Body: body, Cookie: cookie})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("enqueue 100 minutes after login: status %d, want 202 (sliding expiry): %s", resp.Status, resp.Body)
	}
	b.mr.FastForward(61 * time.Minute)
	resp = b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader, Body: body, Cookie: cookie})
	wantError(t, resp, http.StatusUnauthorized, "unauthorized")
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

func TestReadsNeedNoCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	for _, path := range []string{"/health/live", "/health/redis", "/api/cache/report:1", "/api/task-types", "/login"} {
		if resp := b.send(t, req{Path: path}); resp.Status != http.StatusOK {
			t.Errorf("GET %s without credentials: status %d, want 200", path, resp.Status)
		}
	}
}
