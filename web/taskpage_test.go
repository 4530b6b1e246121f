package web_test

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestTaskPage checks the task page without a browser: the login
// redirect, the 404 page, and that its Content-Security-Policy allows its
// one inline script by hash and nothing else.
func TestTaskPage(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	pendingTask(t, b.rdb, "default", "p1")

	resp := b.send(t, req{Path: "/tasks/default/p1"})
	if loc := resp.Header.Get("Location"); resp.Status != http.StatusSeeOther || loc != "/login?next=%2Ftasks%2Fdefault%2Fp1" {
		t.Errorf("without a session: %d to %q, want 303 to the login page", resp.Status, loc)
	}
	if resp := b.send(t, req{Path: "/tasks/default/nope", User: testUser, Pass: testPass}); resp.Status != http.StatusNotFound ||
		!strings.Contains(string(resp.Body), "No task") {
		t.Errorf("unknown task: %d %s, want the 404 page", resp.Status, resp.Body)
	}

	resp = b.send(t, req{Path: "/tasks/default/p1", User: testUser, Pass: testPass})
	if resp.Status != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("status %d, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	body := string(resp.Body)
	for _, s := range []string{`data-events="/api/tasks/default/p1/events"`, `id="state" class="status-pending">pending<`, `id="progress"`} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q:\n%s", s, body)
		}
	}
	scripts := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllStringSubmatch(body, -1)
	if len(scripts) != 1 {
		t.Fatalf("%d scripts on the page, want 1", len(scripts))
	}
	sum := sha256.Sum256([]byte(scripts[0][1]))
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") ||
		!strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q does not allow exactly the page's script", csp)
	}
}
