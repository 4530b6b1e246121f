package web_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/control"
)

// cancelledBody mirrors the answer of DELETE /api/tasks/{queue}/{id}.
type cancelledBody struct {
	control.Result
	StatusURL string `json:"status_url"`
}

func TestCancelTask(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	client := asynq.NewClientFromRedisClient(b.rdb)
	for _, id := range []string{"waiting", "archived"} {
		if _, err := client.Enqueue(asynq.NewTask("t:x", nil), asynq.Queue("q"), asynq.TaskID(id), asynq.ProcessIn(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := asynq.NewInspectorFromRedisClient(b.rdb).ArchiveTask("q", "archived"); err != nil {
		t.Fatal(err)
	}
	del := func(path string, mods ...func(*req)) response {
		q := req{Method: http.MethodDelete, Path: path, User: testUser, Pass: testPass}
		for _, m := range mods {
			m(&q)
		}
		return b.send(t, q)
	}

	// Without credentials, from another site: refused, nothing done.
	wantError(t, del("/api/tasks/q/waiting", func(q *req) { q.User, q.Pass = "", "" }), http.StatusUnauthorized, "unauthorized")
	wantError(t, del("/api/tasks/q/waiting", func(q *req) { q.Header = map[string]string{"Sec-Fetch-Site": "cross-site"} }),
		http.StatusForbidden, "cross_origin")

	resp := del("/api/tasks/q/waiting")
	if resp.Status != http.StatusOK {
		t.Fatalf("DELETE: status %d: %s", resp.Status, resp.Body)
	}
	got := decode[cancelledBody](t, resp)
	if got.ID != "waiting" || got.Queue != "q" || got.Type != "t:x" || got.Was != "scheduled" ||
		got.State != control.StateCancelled || got.By != testUser || got.Reason != "cancelled by "+testUser ||
		got.CancelledAt.IsZero() || got.StatusURL != "/api/tasks/q/waiting" {
		t.Errorf("DELETE answered %+v, want the scheduled task cancelled by %s", got, testUser)
	}

	tests := []struct {
		name       string
		givePath   string
		wantStatus int
		wantCode   string
	}{
		{name: "cancelled before", givePath: "/api/tasks/q/waiting", wantStatus: http.StatusConflict, wantCode: "already_finished"},
		{name: "archived", givePath: "/api/tasks/q/archived", wantStatus: http.StatusConflict, wantCode: "already_finished"},
		{name: "unknown id", givePath: "/api/tasks/q/nope", wantStatus: http.StatusNotFound, wantCode: "not_found"},
		{name: "unknown queue", givePath: "/api/tasks/nowhere/waiting", wantStatus: http.StatusNotFound, wantCode: "not_found"},
		{name: "bad id", givePath: "/api/tasks/q/a%01b", wantStatus: http.StatusBadRequest, wantCode: "invalid_task_ref"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, del(tt.givePath), tt.wantStatus, tt.wantCode)
		})
	}
}

func TestCancelTaskWithoutCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := asynq.NewClientFromRedisClient(b.rdb).Enqueue(asynq.NewTask("t:x", nil), asynq.Queue("q"), asynq.TaskID("x")); err != nil {
		t.Fatal(err)
	}
	resp := b.send(t, req{Method: http.MethodDelete, Path: "/api/tasks/q/x"})
	if resp.Status != http.StatusOK {
		t.Fatalf("DELETE: status %d: %s", resp.Status, resp.Body)
	}
	if got := decode[cancelledBody](t, resp); got.By != "an HTTP request" || got.Was != "pending" {
		t.Errorf("DELETE answered %+v, want the pending task cancelled by an HTTP request", got)
	}
}
