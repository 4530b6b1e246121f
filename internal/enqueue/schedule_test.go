package enqueue

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/forgeq/forgeq/schedule"
)

func TestScheduleFlags(t *testing.T) {
	t.Parallel()

	mr := miniredis.RunT(t)
	env := map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr()}
	entry := `{"name": "purge", "spec": "@every 30s", "type": "cache:invalidate", "payload": {"pattern": "tmp:*"}, "queue": "low"}`

	r := runCmd(t, env, "", "--schedule-put", entry)
	if r.code != exitOK || r.stdout != "added schedule entry purge: @every 30s cache:invalidate\n" {
		t.Fatalf("put: %+v", r)
	}
	// From stdin, --json: replaced.
	r = runCmd(t, env, strings.Replace(entry, "30s", "1m", 1), "--schedule-put", "-", "--json")
	var put struct {
		schedule.Entry
		Created bool `json:"created"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &put); r.code != exitOK || err != nil || put.Created || put.Spec != "@every 1m" {
		t.Fatalf("put from stdin: %+v (%v)", r, err)
	}
	// From a file, paused.
	file := filepath.Join(t.TempDir(), "e.json")
	if err := os.WriteFile(file, []byte(`{"name": "warm", "spec": "0 3 * * *", "type": "cache:warm", "payload": {"keys": ["a"], "work": 1}, "paused": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, env, "", "--schedule-put", "@"+file); r.code != exitOK || !strings.Contains(r.stdout, "(paused)") {
		t.Fatalf("put from a file: %+v", r)
	}

	r = runCmd(t, env, "", "--schedule-list")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != exitOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.Contains(lines[1], "purge") || !strings.Contains(lines[1], "active") ||
		!strings.Contains(lines[2], "warm") || !strings.Contains(lines[2], "paused") {
		t.Errorf("list:\n%s", r.stdout)
	}
	if r := runCmd(t, env, "", "--schedule-pause", "purge"); r.code != exitOK || r.stdout != "paused schedule entry purge\n" {
		t.Errorf("pause: %+v", r)
	}
	r = runCmd(t, env, "", "--schedule-resume", "purge", "--json")
	var e schedule.Entry
	if err := json.Unmarshal([]byte(r.stdout), &e); r.code != exitOK || err != nil || e.Paused {
		t.Errorf("resume: %+v", r)
	}
	r = runCmd(t, env, "", "--schedule-list", "--json")
	var list struct {
		Schedules []schedule.Info `json:"schedules"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Schedules) != 2 || list.Schedules[0].Next.IsZero() {
		t.Errorf("list --json: %+v (%v)", r, err)
	}
	if r := runCmd(t, env, "", "--schedule-remove", "purge"); r.code != exitOK || r.stdout != "removed schedule entry purge\n" {
		t.Errorf("remove: %+v", r)
	}

	// Exit codes: 2 for bad input and unknown names, 1 when Redis fails.
	for _, tt := range []struct {
		name    string
		args    []string
		want    int
		wantErr string
	}{
		{"unknown name", []string{"--schedule-remove", "purge"}, exitUsage, `--schedule-remove "purge": no such entry in Redis`},
		{"pause unknown", []string{"--schedule-pause", "nope"}, exitUsage, `--schedule-pause "nope": no such entry`},
		{"bad payload", []string{"--schedule-put", `{"name": "x", "spec": "@every 1s", "type": "cache:invalidate", "payload": {}}`}, exitUsage, "give one of the fields"},
		{"bad spec", []string{"--schedule-put", `{"name": "x", "spec": "@every 1ms", "type": "cache:invalidate", "payload": {"pattern": "x"}}`}, exitUsage, "whole number of seconds"},
		{"unknown key", []string{"--schedule-put", `{"name": "x", "cron": "* * * * *"}`}, exitUsage, `unknown field "cron"`},
		{"no JSON", []string{"--schedule-put", ""}, exitUsage, "want the entry's JSON"},
		{"two modes", []string{"--schedule-pause", "a", "--schedule-list"}, exitUsage, "cannot be combined with --schedule-list"},
		{"with a task flag", []string{"--schedule-list", "--queue", "low"}, exitUsage, "cannot be combined with --queue"},
		{"arguments", []string{"--schedule-list", "extra"}, exitUsage, "takes no other arguments"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, env, "", tt.args...)
			if r.code != tt.want || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("%v: code %d, stderr %q; want %d and %q", tt.args, r.code, r.stderr, tt.want, tt.wantErr)
			}
		})
	}
	r = runCmd(t, env, "", "--schedule-remove", "nope", "--json")
	if r.code != exitUsage || !strings.Contains(r.stdout, `"error"`) {
		t.Errorf("--json error: %+v", r)
	}
	if r := runCmd(t, map[string]string{"REDIS_CONNECTION_URL": downURL(t), "REDIS_SOCKET_TIMEOUT": "1s"}, "", "--schedule-list"); r.code != exitFailure {
		t.Errorf("Redis down: %+v", r)
	}
}
