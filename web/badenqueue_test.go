package web_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/tasks/taskstest"
)

// TestBadEnqueues posts every case of the shared table of bad enqueues
// (taskstest.BadEnqueues, which the CLI and the Go API are tested with
// too): each is a 400 whose message has the case's rule text, and leaves
// Redis as it was.
func TestBadEnqueues(t *testing.T) {
	t.Parallel()
	for _, tt := range taskstest.BadEnqueues(time.Now()) {
		t.Run(tt.Name, func(t *testing.T) {
			t.Parallel()
			body := `{"payload":` + tt.Payload
			wantCode := "invalid_payload"
			if tt.Option != "" {
				v, err := json.Marshal(tt.Value)
				if err != nil {
					t.Fatal(err)
				}
				body += `,"` + tt.Option + `":` + string(v)
				wantCode = "invalid_option"
			}
			body += "}"
			testRefusedEnqueue(t, body, wantCode, tt.Want)
		})
	}
}

// TestBadEnqueueBodies covers what only the request body has: a member
// given twice, which encoding/json would take the last of.
func TestBadEnqueueBodies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		give      string
		wantInMsg string
	}{
		{"queue twice", `{"payload":{"key":"k","work":1},"queue":"low","queue":"bad queue!"}`, `duplicate field "queue"`},
		{"payload twice", `{"payload":{"key":"k","work":1},"payload":{"key":"j","work":2}}`, `duplicate field "payload"`},
		{"field name not UTF-8", "{\"payload\":{\"key\":\"k\",\"work\":1},\"\xff\":1}", `field "\xff": name is not valid UTF-8`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testRefusedEnqueue(t, tt.give, "malformed_json", tt.wantInMsg)
		})
	}
}

// testRefusedEnqueue posts body to POST /api/tasks/data:process and wants
// a 400 with code whose message contains want, and Redis unchanged.
func testRefusedEnqueue(t *testing.T, body, code, want string) {
	t.Helper()
	b := setup(t)
	before := b.state(t)
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader, Body: body})
	msg := wantError(t, resp, http.StatusBadRequest, code)
	if !strings.Contains(msg, want) {
		t.Errorf("message %q does not contain %q", abbrevMsg(msg), want)
	}
	if diff := cmp.Diff(before, b.state(t)); diff != "" {
		t.Errorf("the request changed Redis (-before +after):\n%s", diff)
	}
}

// abbrevMsg shortens a message for a failure report.
func abbrevMsg(s string) string {
	if len(s) > 500 {
		return s[:500] + "..."
	}
	return s
}

// The options of an enqueue are checked by the rules of every enqueue
// (tasks.CheckOption), each message naming the field and the value as
// given.
func TestEnqueueOptionRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		give      string
		wantInMsg string
	}{
		{"process_at too far ahead", `"process_at":"` + time.Now().Add(400*24*time.Hour).UTC().Format(time.RFC3339) + `"`, "is more than 366 days ahead"},
		{"max_retry over the limit", `"max_retry":1001`, `field "max_retry" "1001": want at most 1000`},
		{"negative max_retry", `"max_retry":-1`, `field "max_retry" "-1": must not be negative`},
		{"negative delay", `"delay":"-1s"`, `field "delay" "-1s": must not be negative`},
		{"timeout under a second", `"timeout":"500ms"`, `field "timeout" "500ms": want at least 1s`},
		{"retention over the limit", `"retention":"9000h"`, `field "retention" "9000h": want at most 366 days`},
		{"unparsable delay", `"delay":"soon"`, `field "delay" "soon": not a duration`},
		{"unparsable deadline", `"deadline":"tomorrow"`, `field "deadline" "tomorrow": not an RFC 3339 time`},
		{"empty-looking queue", `"queue":" "`, `field "queue" " ": has a character outside A-Z a-z 0-9 . _ : -`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testRefusedEnqueue(t, `{"payload":{"key":"k","work":1},`+tt.give+`}`, "invalid_option", tt.wantInMsg)
		})
	}
}
