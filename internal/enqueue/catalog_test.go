package enqueue

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/tasks/taskstest"
)

// greetType is test:greet, a type the command is built without.
var greetType = taskstest.GreetType

// greet is its payload.
type greet = taskstest.Greet

// catalogBundle is a miniredis where a worker ("host/1/abcdef") published
// test:greet and the built-in types 12 seconds ago, with the environment
// that points the command at it.
type catalogBundle struct {
	env  map[string]string
	rdb  *redis.Client
	insp *asynq.Inspector
}

func setupCatalog(tb testing.TB, publish bool) *catalogBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	if publish {
		reg, err := tasks.NewRegistry(append(tasks.Builtin(), greetType)...)
		if err != nil {
			tb.Fatal(err)
		}
		cat := tasks.NewCatalog(rdb, tasks.WithClock(func() time.Time { return time.Now().Add(-12 * time.Second) }))
		if _, err := cat.Publish(context.Background(), reg, tasks.WorkerInfo{ID: "host/1/abcdef"}); err != nil {
			tb.Fatal(err)
		}
	}
	return &catalogBundle{
		env:  map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr()},
		rdb:  rdb,
		insp: asynq.NewInspectorFromRedisClient(rdb),
	}
}

// pending returns the tasks pending on queue.
func (b *catalogBundle) pending(tb testing.TB, queue string) []*asynq.TaskInfo {
	tb.Helper()
	infos, err := b.insp.ListPendingTasks(queue)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		tb.Fatal(err)
	}
	return infos
}

// TestEnqueuePublished enqueues a type the command does not have, with
// the schema and defaults a worker published.
func TestEnqueuePublished(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t, true)
	r := runCmd(t, b.env, "", "test:greet", `{"name": "Ada", "times": 2}`, "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	out := decodeJSON[taskJSON](t, r.stdout)
	ti, err := b.insp.GetTaskInfo(out.Queue, out.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantTask(t, ti, "test:greet", "low", `{"name":"Ada","times":2}`, asynq.TaskStatePending)
	if ti.MaxRetry != 2 || ti.Timeout != 90*time.Second {
		t.Errorf("max retry %d, timeout %v: want the published 2 and 90s", ti.MaxRetry, ti.Timeout)
	}

	// Flags override the published defaults, as they do a type's own.
	r = runCmd(t, b.env, "", "test:greet", `{"name": "Bob"}`, "--queue", "critical", "--max-retry", "0", "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	out = decodeJSON[taskJSON](t, r.stdout)
	if ti, err := b.insp.GetTaskInfo(out.Queue, out.ID); err != nil || ti.Queue != "critical" || ti.MaxRetry != 0 {
		t.Errorf("with flags: %+v (%v), want queue critical, 0 retries", ti, err)
	}
}

// TestEnqueuePublishedBadInput: a bad payload for a published type, an
// unknown type and a type no worker published are bad input (exit 2,
// nothing enqueued), with messages naming the field or the types.
func TestEnqueuePublishedBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		givePublish bool
		giveArgs    []string
		want        []string
	}{
		{
			name:        "field out of range",
			givePublish: true,
			giveArgs:    []string{"test:greet", `{"name": "Ada", "times": 0}`},
			want:        []string{"payload (argument)", `test:greet: field "times": minimum: got 0, want 1`},
		},
		{
			name:        "missing field",
			givePublish: true,
			giveArgs:    []string{"test:greet", `{}`},
			want:        []string{`missing required field "name"`},
		},
		{
			name:        "unknown field",
			givePublish: true,
			giveArgs:    []string{"test:greet", `{"name": "Ada", "colour": "red"}`},
			want:        []string{`unknown field "colour"`},
		},
		{
			name:        "unknown type",
			givePublish: true,
			giveArgs:    []string{"test:gret", `{"name": "Ada"}`},
			want: []string{`unknown task type "test:gret"`, "no worker has ever published it",
				"known types: cache:invalidate, cache:warm, data:process",
				"published types: cache:invalidate, cache:warm, data:process, test:greet",
				`did you mean "test:greet"?`, "--list"},
		},
		{
			name:     "never published, empty catalogue",
			giveArgs: []string{"test:greet", `{"name": "Ada"}`},
			want:     []string{`unknown task type "test:greet"`, "no worker has ever published it to the task catalogue", "published types: none"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupCatalog(t, tt.givePublish)
			r := runCmd(t, b.env, "", tt.giveArgs...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			for _, q := range []string{"low", "default", "critical"} {
				if n := len(b.pending(t, q)); n != 0 {
					t.Errorf("%d tasks on %s: something was enqueued", n, q)
				}
			}
		})
	}
}

// TestEnqueueUnknownTypeRedisDown: a type the command lacks needs the
// catalogue, so an unreachable Redis is a runtime failure (exit 1).
func TestEnqueueUnknownTypeRedisDown(t *testing.T) {
	t.Parallel()
	r := runCmd(t, map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}, "", "test:greet", `{"name": "Ada"}`)
	if r.code != exitFailure || !strings.Contains(r.stderr, "cannot reach Redis") {
		t.Errorf("exit %d, stderr %q; want 1 and cannot reach Redis", r.code, r.stderr)
	}
}

// TestBulkPublished: --file lines may name published types; every line is
// checked against the catalogue, read once, before anything is enqueued.
func TestBulkPublished(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t, true)
	jsonl := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }
	bad := writeFile(t, "bad.jsonl", jsonl(
		`{"type": "test:greet", "payload": {"name": "Ada"}}`,
		`{"type": "test:greet", "payload": {"name": ""}}`,
		`{"type": "test:nope", "payload": {}}`,
		`{"type": "data:process", "payload": {"key": "k", "work": 1}}`,
	))
	r := runCmd(t, b.env, "", "--file", bad)
	if r.code != exitUsage {
		t.Fatalf("exit %d, want 2; stderr %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"2 bad lines; nothing was enqueued",
		`line 2: field "payload": tasks: invalid payload: test:greet: field "name": minLength: got 0, want 1`,
		`line 3: field "type": unknown task type "test:nope"`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	good := writeFile(t, "good.jsonl", jsonl(
		`{"type": "test:greet", "payload": {"name": "Ada"}}`,
		`{"type": "test:greet", "payload": {"name": "Bob"}, "queue": "default"}`,
		`{"type": "data:process", "payload": {"key": "k", "work": 1}}`,
	))
	r = runCmd(t, b.env, "", "--file", good)
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	low := b.pending(t, "low")
	if len(low) != 1 || low[0].Type != "test:greet" || low[0].MaxRetry != 2 || low[0].Timeout != 90*time.Second {
		t.Errorf("low: %+v, want one test:greet with the published defaults", low)
	}
	if n := len(b.pending(t, "default")); n != 2 {
		t.Errorf("%d tasks on default, want 2", n)
	}
}

// TestListPublished lists the command's types and the published ones,
// with the workers serving them.
func TestListPublished(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t, true)
	r := runCmd(t, b.env, "", "--list")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"data:process (queue default)",
		"test:greet (queue low, published by a worker)\n  Greets someone.",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("listing lacks %q:\n%s", want, r.stdout)
		}
	}
	if field := regexp.MustCompile(`\n    name +string +required +whom to greet\n`); !field.MatchString(r.stdout) {
		t.Errorf("listing lacks test:greet's field name from the published schema:\n%s", r.stdout)
	}
	served := regexp.MustCompile(`served by: worker host/1/abcdef, seen 1[23]s ago`)
	if n := len(served.FindAllString(r.stdout, -1)); n != 4 {
		t.Errorf("%d \"served by\" lines, want 4 (one per published type):\n%s", n, r.stdout)
	}

	r = runCmd(t, b.env, "", "--list", "--json")
	if r.code != exitOK {
		t.Fatalf("--json: exit %d: %s", r.code, r.stderr)
	}
	got := decodeJSON[[]typeJSON](t, r.stdout)
	type summary struct {
		Type             string
		Local, Published bool
		Workers          []string
		Fields           int
		HasSchema        bool
	}
	var sums []summary
	for _, tj := range got {
		s := summary{Type: tj.Type, Local: tj.Local, Published: tj.Published, Fields: len(tj.Fields), HasSchema: len(tj.Schema) > 0}
		for _, w := range tj.Workers {
			s.Workers = append(s.Workers, w.ID)
		}
		sums = append(sums, s)
	}
	w := []string{"host/1/abcdef"}
	want := []summary{
		{"cache:invalidate", true, true, w, 2, true},
		{"cache:warm", true, true, w, 3, true},
		{"data:process", true, true, w, 3, true},
		{"test:greet", false, true, w, 2, true},
	}
	if diff := cmp.Diff(want, sums); diff != "" {
		t.Errorf("--list --json (-want +got):\n%s", diff)
	}
}

// TestUnknownTypeSuggestion: a type one typo away from a known one gets a
// "did you mean" wherever the command names it unknown: the TYPE argument
// and --file lines, with the catalogue readable or not.
func TestUnknownTypeSuggestion(t *testing.T) {
	t.Parallel()
	up := setupCatalog(t, true).env
	down := map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}
	file := writeFile(t, "typo.jsonl", `{"type": "data:proces", "payload": {"key": "k", "work": 1}}`+"\n")
	tests := []struct {
		name     string
		giveEnv  map[string]string
		giveArgs []string
		wantCode int
	}{
		{"argument", up, []string{"data:proces", `{"key": "k", "work": 1}`}, exitUsage},
		{"argument, Redis down", down, []string{"data:proces", `{"key": "k", "work": 1}`}, exitFailure},
		{"argument, other case", up, []string{"Data:Process", `{"key": "k", "work": 1}`}, exitUsage},
		{"file line", up, []string{"--file", file}, exitUsage},
		{"file line, Redis down", down, []string{"--file", file}, exitFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, tt.giveEnv, "", tt.giveArgs...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d", r.code, tt.wantCode)
			}
			if !strings.Contains(r.stderr, `did you mean "data:process"?`) {
				t.Errorf("stderr lacks the suggestion: %q", r.stderr)
			}
		})
	}

	t.Run("program's types only", func(t *testing.T) {
		c := &cli{reg: tasks.Default()}
		_, err := c.localTypes().lookup("cache:wram")
		if err == nil || !strings.Contains(err.Error(), `did you mean "cache:warm"?`) {
			t.Errorf("lookup error = %v, want a suggestion", err)
		}
	})
}
