package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/forgeq/forgeq/schedule"
)

// scheduleList is the body of GET /api/schedules.
type scheduleList struct {
	Schedules []schedule.Info `json:"schedules"`
}

func TestSchedules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	put := func(name, body string) response {
		return b.send(t, req{Method: http.MethodPut, Path: "/api/schedules/" + name, Header: jsonHeader, Body: body})
	}

	if got := decode[scheduleList](t, b.send(t, req{Path: "/api/schedules"})); len(got.Schedules) != 0 {
		t.Errorf("empty store lists %+v", got.Schedules)
	}
	resp := put("purge", `{"spec": "@every 30s", "type": "cache:invalidate", "payload": {"pattern": "tmp:*"}, "queue": "low"}`)
	if resp.Status != http.StatusCreated || resp.Header.Get("Location") != "/api/schedules/purge" {
		t.Fatalf("PUT: %d %s", resp.Status, resp.Body)
	}
	e := decode[schedule.Entry](t, resp)
	if e.Name != "purge" || e.Spec != "@every 30s" || string(e.Payload) != `{"pattern":"tmp:*"}` || e.Queue != "low" || e.Updated.IsZero() {
		t.Errorf("PUT answered %+v", e)
	}
	// Replaced: 200.
	resp = put("purge", `{"spec": "@every 1m", "type": "cache:invalidate", "payload": {"pattern": "tmp:*"}}`)
	if resp.Status != http.StatusOK {
		t.Fatalf("second PUT: %d %s", resp.Status, resp.Body)
	}
	got := decode[schedule.Info](t, b.send(t, req{Path: "/api/schedules/purge"}))
	if got.Spec != "@every 1m" || got.Queue != "" || got.Next.IsZero() || got.Next.Unix()%60 != 0 {
		t.Errorf("GET answered %+v", got)
	}

	resp = b.send(t, req{Method: http.MethodPost, Path: "/api/schedules/purge/pause"})
	if e := decode[schedule.Entry](t, resp); resp.Status != http.StatusOK || !e.Paused {
		t.Errorf("pause: %d %s", resp.Status, resp.Body)
	}
	list := decode[scheduleList](t, b.send(t, req{Path: "/api/schedules"}))
	if len(list.Schedules) != 1 || !list.Schedules[0].Paused || !list.Schedules[0].Next.IsZero() {
		t.Errorf("list after the pause: %+v", list.Schedules)
	}
	resp = b.send(t, req{Method: http.MethodPost, Path: "/api/schedules/purge/resume"})
	if e := decode[schedule.Entry](t, resp); resp.Status != http.StatusOK || e.Paused {
		t.Errorf("resume: %d %s", resp.Status, resp.Body)
	}
	if resp := b.send(t, req{Method: http.MethodDelete, Path: "/api/schedules/purge"}); resp.Status != http.StatusNoContent {
		t.Errorf("DELETE: %d %s", resp.Status, resp.Body)
	}
	if n := b.logs.FilterMessage("schedule entry removed").Len(); n != 1 {
		t.Errorf("%d removal logs", n)
	}

	for _, tt := range []struct {
		name string
		resp response
	}{
		{"GET", b.send(t, req{Path: "/api/schedules/purge"})},
		{"DELETE", b.send(t, req{Method: http.MethodDelete, Path: "/api/schedules/purge"})},
		{"pause", b.send(t, req{Method: http.MethodPost, Path: "/api/schedules/purge/pause"})},
		{"resume", b.send(t, req{Method: http.MethodPost, Path: "/api/schedules/purge/resume"})},
	} {
		if msg := wantError(t, tt.resp, http.StatusNotFound, "not_found"); !strings.Contains(msg, `no schedule entry "purge"`) {
			t.Errorf("%s of a removed entry: %q", tt.name, msg)
		}
	}
}

func TestSchedulesRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantCode         string
		wantMsg          string
	}{
		{"bad name", "a%20b", `{"spec": "@every 1s", "type": "cache:invalidate", "payload": {"pattern": "x"}}`, 400, "invalid_schedule", `name "a b"`},
		{"bad spec", "e", `{"spec": "often", "type": "cache:invalidate", "payload": {"pattern": "x"}}`, 400, "invalid_schedule", `spec "often"`},
		{"unknown type", "e", `{"spec": "@every 1s", "type": "cache:invalidat", "payload": {"pattern": "x"}}`, 400, "invalid_schedule", `unknown task type "cache:invalidat"`},
		{"bad payload", "e", `{"spec": "@every 1s", "type": "cache:invalidate", "payload": {}}`, 400, "invalid_schedule", `give one of the fields`},
		{"bad queue", "e", `{"spec": "@every 1s", "type": "cache:invalidate", "payload": {"pattern": "x"}, "queue": "a b"}`, 400, "invalid_schedule", "queue"},
		{"unknown field", "e", `{"spec": "@every 1s", "type": "cache:invalidate", "cron": "x"}`, 400, "malformed_json", "cron"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := b.send(t, req{Method: http.MethodPut, Path: "/api/schedules/" + tt.path, Header: jsonHeader, Body: tt.body})
			if msg := wantError(t, resp, tt.wantStatus, tt.wantCode); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q lacks %q", msg, tt.wantMsg)
			}
		})
	}
	if keys := b.mr.Keys(); len(keys) != 0 {
		t.Errorf("refused entries wrote %v", keys)
	}
}

func TestSchedulesNeedAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	for _, q := range []req{
		{Path: "/api/schedules"},
		{Method: http.MethodPut, Path: "/api/schedules/e", Header: jsonHeader, Body: `{"spec": "@every 1s", "type": "cache:invalidate", "payload": {"pattern": "x"}}`},
		{Method: http.MethodPost, Path: "/api/schedules/e/pause"},
		{Method: http.MethodDelete, Path: "/api/schedules/e"},
	} {
		wantError(t, b.send(t, q), http.StatusUnauthorized, "unauthorized")
	}
	q := req{Method: http.MethodPut, Path: "/api/schedules/e", Header: jsonHeader, User: testUser, Pass: testPass,
		Body: `{"spec": "@every 1s", "type": "cache:invalidate", "payload": {"pattern": "x"}}`}
	if resp := b.send(t, q); resp.Status != http.StatusCreated {
		t.Errorf("PUT with basic auth: %d %s", resp.Status, resp.Body)
	}
	// A cross-origin browser request is refused before it changes state.
	q = req{Method: http.MethodDelete, Path: "/api/schedules/e", User: testUser, Pass: testPass,
		Header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}}
	wantError(t, b.send(t, q), http.StatusForbidden, "cross_origin")
}
