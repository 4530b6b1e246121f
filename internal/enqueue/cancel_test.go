package enqueue

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/tasks"
)

// cancelBundle is a miniredis holding tasks to cancel, with the
// environment that points the command at it.
type cancelBundle struct {
	env  map[string]string
	rdb  *redis.Client
	insp *asynq.Inspector
}

// setupCancel enqueues, on miniredis, task "p1" (pending) and "s1"
// (scheduled) in queue "q", "twice" in queues "q" and "r", and "done"
// archived in "q".
func setupCancel(tb testing.TB) *cancelBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	client := asynq.NewClientFromRedisClient(rdb)
	for _, e := range []struct {
		queue, id string
		opts      []asynq.Option
	}{
		{"q", "p1", nil}, {"q", "s1", []asynq.Option{asynq.ProcessIn(time.Hour)}},
		{"q", "twice", nil}, {"r", "twice", nil}, {"q", "done", nil},
	} {
		opts := append([]asynq.Option{asynq.Queue(e.queue), asynq.TaskID(e.id)}, e.opts...)
		if _, err := client.Enqueue(asynq.NewTask("t:x", nil), opts...); err != nil {
			tb.Fatal(err)
		}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if err := insp.ArchiveTask("q", "done"); err != nil {
		tb.Fatal(err)
	}
	return &cancelBundle{env: map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr(), "USER": "alice"}, rdb: rdb, insp: insp}
}

func (b *cancelBundle) run(tb testing.TB, stdin string, args ...string) result {
	tb.Helper()
	return runWith(tb, tasks.Default(), b.env, stdin, args...)
}

func (b *cancelBundle) gone(tb testing.TB, queue, id string) bool {
	tb.Helper()
	_, err := b.insp.GetTaskInfo(queue, id)
	return errors.Is(err, asynq.ErrTaskNotFound)
}

// TestCancelCommand: each way to name tasks, and the exit codes: 0 all
// cancelled, 2 an unknown id, 1 an already finished task.
func TestCancelCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		giveArgs  []string
		giveStdin string
		wantCode  int
		wantOut   []string // substrings of stdout
		wantErr   []string // substrings of stderr
		wantGone  []string // queue/id removed
		wantKept  []string // queue/id still there
	}{
		{name: "one id, queue found", giveArgs: []string{"--cancel", "p1"}, wantCode: exitOK,
			wantOut: []string{"cancelled task p1 (t:x) in queue q: removed while pending"}, wantGone: []string{"q/p1"}},
		{name: "flag value form", giveArgs: []string{"--cancel=s1", "--queue", "q"}, wantCode: exitOK,
			wantOut: []string{"removed while scheduled"}, wantGone: []string{"q/s1"}},
		{name: "several ids", giveArgs: []string{"--cancel", "p1", "s1"}, wantCode: exitOK, wantGone: []string{"q/p1", "q/s1"}},
		{name: "unknown id", giveArgs: []string{"--cancel", "nope"}, wantCode: exitUsage,
			wantErr: []string{`--cancel "nope": control: no such task`}},
		{name: "unknown in its queue", giveArgs: []string{"--cancel", "p1", "--queue", "r"}, wantCode: exitUsage,
			wantErr: []string{`queue "r" has no such task`}, wantKept: []string{"q/p1"}},
		{name: "in two queues", giveArgs: []string{"--cancel", "twice"}, wantCode: exitUsage,
			wantErr: []string{`is in queues q, r: give --queue`}, wantKept: []string{"q/twice", "r/twice"}},
		{name: "in two queues, --queue", giveArgs: []string{"--cancel", "twice", "--queue", "r"}, wantCode: exitOK,
			wantGone: []string{"r/twice"}, wantKept: []string{"q/twice"}},
		{name: "finished", giveArgs: []string{"--cancel", "done"}, wantCode: exitFailure,
			wantErr: []string{"already finished: it is archived; nothing to cancel"}},
		{name: "some unknown, others cancelled", giveArgs: []string{"--cancel", "p1", "nope", "done"}, wantCode: exitUsage,
			wantErr: []string{"2 of 3 tasks not cancelled (1 unknown, 1 finished or failed)"}, wantGone: []string{"q/p1"}},
		{name: "file", giveArgs: []string{"--cancel", "--file", "-"}, wantCode: exitOK,
			giveStdin: "\ufeffp1\n\n# a comment\n{\"id\": \"twice\", \"queue\": \"r\"}\n  s1  \n",
			wantGone:  []string{"q/p1", "r/twice", "q/s1"}, wantKept: []string{"q/twice"}},
		{name: "file with a bad line", giveArgs: []string{"--cancel", "--file", "-"}, wantCode: exitUsage,
			giveStdin: "p1\n{\"id\": \"s1\", \"colour\": \"red\"}\n{\"queue\": \"q\"}\n",
			wantErr:   []string{"2 bad line(s); nothing was cancelled", "line 2: ", `unknown field "colour"`, "line 3: no task id"},
			wantKept:  []string{"q/p1", "q/s1"}},
		{name: "no id", giveArgs: []string{"--cancel"}, wantCode: exitUsage, wantErr: []string{"--cancel needs a task ID"}},
		{name: "with a task flag", giveArgs: []string{"--cancel", "p1", "--delay", "1s"}, wantCode: exitUsage,
			wantErr: []string{"--cancel cannot be combined with --delay"}, wantKept: []string{"q/p1"}},
		{name: "file and ids", giveArgs: []string{"--cancel", "p1", "--file", "-"}, wantCode: exitUsage,
			wantErr: []string{"takes the ids from the file only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupCancel(t)
			got := b.run(t, tt.giveStdin, tt.giveArgs...)
			if got.code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stdout %q, stderr %q", got.code, tt.wantCode, got.stdout, got.stderr)
			}
			for _, s := range tt.wantOut {
				if !strings.Contains(got.stdout, s) {
					t.Errorf("stdout %q lacks %q", got.stdout, s)
				}
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(got.stderr, s) {
					t.Errorf("stderr %q lacks %q", got.stderr, s)
				}
			}
			for _, qid := range tt.wantGone {
				q, id, _ := strings.Cut(qid, "/")
				if !b.gone(t, q, id) {
					t.Errorf("task %s is still there, want it cancelled", qid)
				}
			}
			for _, qid := range tt.wantKept {
				q, id, _ := strings.Cut(qid, "/")
				if b.gone(t, q, id) {
					t.Errorf("task %s is gone, want it kept", qid)
				}
			}
		})
	}
}

// TestCancelCommandJSON: --json prints one object per task, in the order
// given, failures with their error.
func TestCancelCommandJSON(t *testing.T) {
	t.Parallel()
	b := setupCancel(t)
	path := filepath.Join(t.TempDir(), "ids.txt")
	if err := os.WriteFile(path, []byte("p1\nnope\n{\"id\":\"done\",\"queue\":\"q\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := b.run(t, "", "--cancel", "--file", path, "--json")
	if got.code != exitUsage {
		t.Errorf("exit code %d, want 2 (an unknown id)", got.code)
	}
	type answer struct {
		ID, Queue, Was, State, By, Reason, Error string
	}
	var answers []answer
	for _, line := range strings.Split(strings.TrimSpace(got.stdout), "\n") {
		var a answer
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		a.Error = strings.SplitN(a.Error, ":", 2)[0]
		answers = append(answers, a)
	}
	want := []answer{
		{ID: "p1", Queue: "q", Was: "pending", State: control.StateCancelled, By: "alice via enqueue", Reason: "cancelled by alice via enqueue"},
		{ID: "nope", Error: "--file line 2 (\"nope\")"},
		{ID: "done", Queue: "q", State: "archived", Error: "--file line 3 (\"done\")"},
	}
	if diff := cmp.Diff(want, answers); diff != "" {
		t.Errorf("answers (-want +got):\n%s\nstdout: %s", diff, got.stdout)
	}
}
