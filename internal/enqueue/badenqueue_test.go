package enqueue

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/tasks/taskstest"
)

// dbBadEnqueue is the test Redis database of TestBadEnqueues.
const dbBadEnqueue = 26

// cliOption is how the CLI names an option of taskstest.BadEnqueue:
// process_at is --at, and "at" on a --file line.
func cliOption(opt string) string {
	if opt == "process_at" {
		return "at"
	}
	return opt
}

// TestBadEnqueues runs every case of the shared table of bad enqueues
// (taskstest.BadEnqueues, which HTTP and the Go API are tested with too)
// as the command-line argument and as a --file line: each exits 2 with
// the case's rule text, naming the flag or the field, and enqueues
// nothing.
func TestBadEnqueues(t *testing.T) {
	tb := setup(t, dbBadEnqueue)
	for _, tt := range taskstest.BadEnqueues(time.Now()) {
		t.Run(tt.Name+"/argument", func(t *testing.T) {
			args := []string{tasks.TypeProcessData, tt.Payload}
			want := []string{tt.Want}
			if tt.Option != "" {
				args = append(args, flagName(cliOption(tt.Option)), tt.Value)
				want = append(want, flagName(cliOption(tt.Option))+` "`)
			} else {
				want = append(want, "payload (argument)")
			}
			testRefused(t, tb, "", args, want)
		})
		t.Run(tt.Name+"/file line", func(t *testing.T) {
			line := `{"type":"data:process","payload":` + tt.Payload
			want := []string{"1 bad line; nothing was enqueued", tt.Want}
			if tt.Option != "" {
				v, err := json.Marshal(tt.Value)
				if err != nil {
					t.Fatal(err)
				}
				line += `,"` + cliOption(tt.Option) + `":` + string(v)
				want = append(want, "line 2: "+fieldName(cliOption(tt.Option))+` "`)
			} else {
				want = append(want, `line 2: field "payload"`)
			}
			line += "}"
			good := `{"type":"data:process","payload":` + taskstest.GoodPayload + `}`
			file := writeFile(t, "input.jsonl", good+"\n"+line+"\n"+good+"\n")
			testRefused(t, tb, "", []string{"--file", file}, want)
		})
	}
}

// TestBadFileLineEnvelope covers what only a --file line has: a field of
// the line given twice, which encoding/json would take the last of.
func TestBadFileLineEnvelope(t *testing.T) {
	tb := setup(t, dbBadEnqueue)
	tests := []struct {
		name     string
		giveLine string
		want     string
	}{
		{"type twice", `{"type":"cache:warm","type":"data:process","payload":{"key":"k","work":1}}`, `line 1: duplicate field "type"`},
		{"queue twice", `{"type":"data:process","payload":{"key":"k","work":1},"queue":"low","queue":"default"}`, `line 1: duplicate field "queue"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testRefused(t, tb, tt.giveLine+"\n", []string{"--file", "-"}, []string{tt.want})
		})
	}
}

// testRefused runs the command and wants exit 2, every string of want on
// stderr, and nothing enqueued.
func testRefused(t *testing.T, tb *testBundle, stdin string, args, want []string) {
	t.Helper()
	r := runCmd(t, tb.env, stdin, args...)
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d; stderr %q", r.code, exitUsage, abbrev2k(r.stderr))
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, abbrev2k(r.stderr))
		}
	}
	if n := tb.queued(t); n != 0 {
		t.Errorf("%d tasks in Redis, want none: something was enqueued", n)
	}
}
