package enqueue

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/tasks"
)

// writeFile writes content to a new file in a test directory and returns
// its path.
func writeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// TestBadInput is the bad input catalogue, on the real Redis: each case
// exits 2 with a message naming the flag or field and the bad value, and
// enqueues nothing. Two tasks are in Redis beforehand, to collide with.
func TestBadInput(t *testing.T) {
	tb := setup(t, dbCLI)
	for _, id := range []string{"taken-1", "taken-2"} {
		if r := runCmd(t, tb.env, "", "data:process", `{"key":"k","work":1}`, "--id", id, "--delay", "1h"); r.code != exitOK {
			t.Fatalf("seed %s: exit %d: %s", id, r.code, r.stderr)
		}
	}
	const seeded = 2

	good := `{"type": "data:process", "payload": {"key": "k", "work": 1}}`
	huge := `{"key": "` + strings.Repeat("a", tasks.MaxPayloadSize) + `", "work": 1}`
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	jsonl := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

	tests := []struct {
		name      string
		giveArgs  []string
		giveStdin string
		giveFile  string // content of the file named by a "FILE" argument
		want      []string
		wantNot   []string
	}{
		{
			name:     "malformed JSON",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1`},
			want:     []string{"payload (argument)", "malformed JSON"},
		},
		{
			name:     "payload not an object",
			giveArgs: []string{"data:process", `[1, 2]`},
			want:     []string{"payload (argument)", "JSON object"},
		},
		{
			name:     "unknown type",
			giveArgs: []string{"data:proces", `{"key": "k", "work": 1}`},
			want:     []string{`unknown task type "data:proces"`, "data:process", "--list"},
		},
		{
			name:     "missing required field",
			giveArgs: []string{"data:process", `{"key": "k"}`},
			want:     []string{`missing required field "work"`},
		},
		{
			name:     "wrong field type",
			giveArgs: []string{"data:process", `{"key": "k", "work": "ten"}`},
			want:     []string{`field "work"`, "string"},
		},
		{
			name:     "unknown field",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1, "colour": "red"}`},
			want:     []string{`unknown field "colour"`},
		},
		{
			name:     "field out of range",
			giveArgs: []string{"data:process", `{"key": "k", "work": 0}`},
			want:     []string{`field "work"`, "0"},
		},
		{
			name:     "negative delay",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--delay", "-5s"},
			want:     []string{`--delay "-5s": must not be negative`},
		},
		{
			name:     "unparsable duration",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--delay", "10 minutes"},
			want:     []string{`--delay "10 minutes": not a duration`},
		},
		{
			name:     "unparsable timeout",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--timeout", "1x"},
			want:     []string{`--timeout "1x": not a duration`},
		},
		{
			name:     "at in the past",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--at", past},
			want:     []string{`--at "` + past + `": is in the past`},
		},
		{
			name:     "at unparsable",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--at", "tomorrow 9am"},
			want:     []string{`--at "tomorrow 9am": want an RFC 3339 time`},
		},
		{
			name:     "deadline in the past",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--deadline", past},
			want:     []string{`--deadline "` + past + `": is in the past`},
		},
		{
			name:     "unique under a second",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--unique", "100ms"},
			want:     []string{`--unique "100ms": want at least 1s`},
		},
		{
			name:     "negative max retry",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--max-retry", "-1"},
			want:     []string{`--max-retry "-1": must not be negative`},
		},
		{
			name:     "group",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--group", "nightly"},
			want:     []string{`--group "nightly": task groups are not supported`},
		},
		{
			name:     "group on a file line",
			giveArgs: []string{"--file", "FILE"},
			giveFile: jsonl(good, `{"type": "data:process", "payload": {"key": "k", "work": 1}, "group": "g"}`),
			want:     []string{"1 bad line; nothing was enqueued", `line 2: field "group" "g": task groups are not supported`},
			wantNot:  []string{"line 1:"},
		},
		{
			name:     "duplicate task id",
			giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--id", "taken-1"},
			want:     []string{`--id "taken-1"`, `queue "default" already has a task with this id`, "scheduled"},
		},
		{
			name:     "payload over the size limit",
			giveArgs: []string{"data:process", huge},
			want:     []string{"payload (argument)", "over the 1048576-byte limit"},
		},
		{
			name:      "payload over the size limit on stdin",
			giveArgs:  []string{"data:process"},
			giveStdin: huge,
			want:      []string{"payload (stdin)", "over the 1048576-byte limit"},
		},
		{
			name:     "payload file malformed",
			giveArgs: []string{"data:process", "--payload-file", "FILE"},
			giveFile: `{"key": `,
			want:     []string{"payload (--payload-file ", "malformed JSON"},
		},
		{
			name:      "stdin payload missing a field",
			giveArgs:  []string{"cache:warm", "-"},
			giveStdin: `{"keys": ["a"]}`,
			want:      []string{"payload (stdin)", `missing required field "work"`},
		},
		{
			name:     "file with one bad line among good ones",
			giveArgs: []string{"--file", "FILE"},
			giveFile: jsonl(good, good, `{"type": "data:process", "payload": {"key": "k"}}`, good),
			want:     []string{"1 bad line; nothing was enqueued", `line 3: field "payload"`, `missing required field "work"`},
			wantNot:  []string{"line 1:", "line 2:", "line 4:"},
		},
		{
			name:     "file with several bad lines",
			giveArgs: []string{"--file", "FILE"},
			giveFile: jsonl(
				good,
				`{"type": "data:process", "payload": {"key": "k", "work": 1}`,
				`{"type": "nope", "payload": {}}`,
				`{"type": "data:process", "payload": {"key": "k", "work": 1}, "delay": "-1s"}`,
				`{"type": "data:process", "payload": {"key": "k", "work": 1}, "delay": "soon"}`,
				`{"type": "data:process", "payload": {"key": "k", "work": 1}, "at": "`+past+`"}`,
				`{"type": "data:process", "payload": {"key": "k", "work": 1}, "colour": 1}`,
				`{"type": "data:process", "payload": {"key": "k", "work": "1"}}`,
				`{"type": "data:process", "payload": {"key": "k", "work": 1}, "max_retry": "3"}`,
				`{"payload": {"key": "k", "work": 1}}`,
				`["data:process"]`,
				`{"type": 5, "payload": {}}`,
				good+` {}`,
				good,
			),
			want: []string{
				"12 bad lines; nothing was enqueued",
				"line 2: malformed JSON",
				`line 3: field "type": unknown task type "nope"`,
				`line 4: field "delay" "-1s": must not be negative`,
				`line 5: field "delay" "soon": not a duration`,
				`line 6: field "at" "` + past + `": is in the past`,
				`line 7: unknown field "colour"`,
				`line 8: field "payload"`,
				`line 9: field "max_retry": want a whole number, got string`,
				`line 10: missing field "type"`,
				"line 11: want a JSON object",
				`line 12: field "type": want string, got number`,
				"line 13: more than one JSON value",
			},
			wantNot: []string{"line 1:", "line 14:"},
		},
		{
			name:     "file with an id used twice",
			giveArgs: []string{"--file", "FILE"},
			giveFile: jsonl(
				`{"type": "data:process", "payload": {"key": "k", "work": 1}, "id": "same"}`,
				good,
				`{"type": "data:process", "payload": {"key": "j", "work": 1}, "id": "same"}`,
			),
			want:    []string{`line 3: field "id" "same": already used on line 1`},
			wantNot: []string{"line 1:"},
		},
		{
			name:     "file with an id already in Redis",
			giveArgs: []string{"--file", "FILE"},
			// Another payload: the task in Redis is not this line's, sent
			// before (that would count as enqueued, see TestBulkFrozenRedis).
			giveFile: jsonl(good, `{"type": "data:process", "payload": {"key": "other", "work": 1}, "id": "taken-2"}`, good),
			want:     []string{"1 task id is already in use; nothing was enqueued", `line 2: field "id" "taken-2": queue "default" already has a task with this id`},
		},
		{
			name:     "file with the same unique task twice",
			giveArgs: []string{"--file", "FILE", "--unique", "1h"},
			giveFile: jsonl(good, `{"type": "data:process", "payload": {"key": "other", "work": 1}}`, good),
			want:     []string{"line 3: same queue, type and payload as line 1, under unique"},
		},
		{
			name:     "file with a payload over the size limit",
			giveArgs: []string{"--file", "FILE"},
			giveFile: jsonl(good, `{"type": "data:process", "payload": `+huge+`}`),
			want:     []string{`line 2: field "payload"`, "over the 1048576-byte limit"},
		},
		{
			name:     "file with a line over the line limit",
			giveArgs: []string{"--file", "FILE"},
			giveFile: jsonl(good, `{"type": "data:process", "payload": {"key": "`+strings.Repeat("b", maxLineSize)+`", "work": 1}}`, good),
			want:     []string{"line 2: ", "bytes, over the 1114112-byte limit of a line"},
			wantNot:  []string{"line 3:"},
		},
		{
			name:      "file on stdin with a bad line",
			giveArgs:  []string{"--file", "-"},
			giveStdin: jsonl(good, `{"type": "data:process"}`),
			want:      []string{"--file stdin: 1 bad line", `line 2: field "payload"`, `missing required field "key"`},
		},
		{
			name:     "bad flag with a file",
			giveArgs: []string{"--file", "FILE", "--delay", "-1m"},
			giveFile: jsonl(good),
			want:     []string{`--delay "-1m": must not be negative`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string(nil), tt.giveArgs...)
			for i, a := range args {
				if a == "FILE" {
					args[i] = writeFile(t, "input", tt.giveFile)
				}
			}
			r := runCmd(t, tb.env, tt.giveStdin, args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %q", r.code, exitUsage, abbrev(r.stderr))
			}
			for _, want := range tt.want {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, abbrev2k(r.stderr))
				}
			}
			for _, not := range tt.wantNot {
				if strings.Contains(r.stderr, not) {
					t.Errorf("stderr has %q:\n%s", not, abbrev2k(r.stderr))
				}
			}
			if n := tb.queued(t); n != seeded {
				t.Errorf("%d tasks in Redis, want the %d seeded: something was enqueued", n, seeded)
			}
		})
	}
}

func abbrev2k(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

// TestNoTerminalEscapes: user input echoed back (a --file line, a TYPE, a
// queue or id, a flag, a file name) never reaches the terminal with its
// control characters raw: an ESC or BEL there could retitle the terminal
// or worse.
func TestNoTerminalEscapes(t *testing.T) {
	t.Parallel()
	const evil = "\x1b]0;pwned\x07"
	const evilJSON = `\u001b]0;pwned\u0007` // the same, escaped in JSON text
	good := `{"key": "k", "work": 1}`
	up := setupCatalog(t, false).env
	down := map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}
	file := writeFile(t, "evil.jsonl", strings.Join([]string{
		evil,
		`{"type": "data:process", "payload": {"key": "k", "work": 1}}` + evil,
		`{"type": "` + evilJSON + `", "payload": {}}`,
		`{"type": "data:process", "payload": {"key": "k", "work": 1}, "delay": "` + evilJSON + `"}`,
		`{"type": "data:process", "payload": {"key": "k", "work": 1, "` + evilJSON + `": 1}}`,
		`"` + evilJSON + `"`,
	}, "\n"))
	okFile := writeFile(t, "ok.jsonl", `{"type": "data:process", "payload": {"key": "k", "work": 1}, "queue": "`+evilJSON+`", "id": "`+evilJSON+`"}`+"\n")
	tests := []struct {
		name     string
		giveEnv  map[string]string
		giveArgs []string
	}{
		{"bad file lines", up, []string{"--file", file}},
		{"bad file lines, JSON", up, []string{"--file", file, "--json"}},
		{"bad file lines, Redis down", down, []string{"--file", file}},
		{"file with an odd queue and id", up, []string{"--file", okFile, "--json"}},
		{"type", up, []string{evil, "{}"}},
		{"type, Redis down", down, []string{evil, "{}"}},
		{"type, JSON", up, []string{evil, "{}", "--json"}},
		{"queue", up, []string{"data:process", good, "--queue", evil}},
		{"id", up, []string{"data:process", good, "--id", evil, "--delay", "1h"}},
		{"delay", up, []string{"data:process", good, "--delay", evil}},
		{"unknown flag", up, []string{"--x" + evil, "data:process"}},
		{"payload file", up, []string{"data:process", "--payload-file", "/nonexistent/" + evil}},
		{"task file", up, []string{"--file", "/nonexistent/" + evil}},
		{"progress", up, []string{"--list", "--progress", evil}},
		{"payload", up, []string{"data:process", `{"key": "k", "work": "` + evilJSON + `"}`}},
		{"redis URL", map[string]string{"REDIS_CONNECTION_URL": "redis://" + evil}, []string{"data:process", good}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, tt.giveEnv, "", tt.giveArgs...)
			for name, out := range map[string]string{"stdout": r.stdout, "stderr": r.stderr} {
				if strings.ContainsAny(out, "\x1b\x07") {
					t.Errorf("%s has a raw ESC or BEL (exit %d): %q", name, r.code, out)
				}
			}
		})
	}
}
