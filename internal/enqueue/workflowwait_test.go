package enqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// dbWorkflow is the database of the real test Redis that TestWorkflowWait
// owns: a worker runs the workflows the command submits. (This test is in
// package enqueue_test because the worker package imports enqueue.)
const dbWorkflow = 40

// Exit codes of the command.
const (
	exitOK      = 0
	exitFailure = 1
)

// The test types: wfe:add returns n plus the previous step's result,
// wfe:fail fails for good, wfe:count (a callback) counts its group's
// members that succeeded, wfe:block runs until it is cancelled.
type addArgs struct {
	N int `json:"n"`
}

type failArgs struct {
	Why string `json:"why"`
}

var (
	wfAdd = tasks.Define("wfe:add", "Adds n to the previous result.",
		func(ctx context.Context, _ tasks.Deps, p addArgs) ([]byte, error) {
			prev, err := workflow.PreviousAs[int](ctx)
			if err != nil && !errors.Is(err, workflow.ErrNoPrevious) {
				return nil, err
			}
			return json.Marshal(prev + p.N)
		}, asynq.MaxRetry(0)).TakesPrevious("a number to add n to")
	wfFail = tasks.Define("wfe:fail", "Fails with why.",
		func(_ context.Context, _ tasks.Deps, p failArgs) ([]byte, error) {
			return nil, fmt.Errorf("%s: %w", p.Why, asynq.SkipRetry)
		}, asynq.MaxRetry(0))
	wfCount = tasks.Define("wfe:count", "Counts its group's members that succeeded.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			g, err := workflow.Results(ctx)
			if err != nil {
				return nil, err
			}
			return json.Marshal(g.Succeeded)
		}, asynq.MaxRetry(0)).TakesPrevious("its group's results")
	wfBlock = tasks.Define("wfe:block", "Runs until cancelled.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, asynq.MaxRetry(0))
)

// result is what one run of the command did.
type result struct {
	code           int
	stdout, stderr string
}

// stateJSON is the part of the command's JSON of a workflow's state that
// the test reads.
type stateJSON struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Status     string          `json:"status"`
	Total      int             `json:"total"`
	Done       int             `json:"done"`
	Failed     int             `json:"failed"`
	FailedStep string          `json:"failed_step"`
	Finished   time.Time       `json:"finished"`
	StatusURL  string          `json:"status_url"`
	Waited     *float64        `json:"waited_seconds"`
	Steps      []workflow.Step `json:"steps"`
}

// summaryJSON is the part of the --file --json summary that the test reads.
type summaryJSON struct {
	Enqueued  int                  `json:"enqueued"`
	Tasks     []struct{ Line int } `json:"tasks"`
	Workflows []struct {
		Line  int        `json:"line"`
		ID    string     `json:"id"`
		State *stateJSON `json:"state"`
	} `json:"workflows"`
}

func decode[T any](tb testing.TB, s string) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		tb.Fatalf("decode %q: %v", s, err)
	}
	return v
}

const twoAdds = `{"workflow": {"chain": [{"type": "wfe:add", "payload": {"n": 1}}, {"type": "wfe:add", "payload": {"n": 2}}]}, "name": "two adds"}`

// TestWorkflowWait runs a worker with the test types on a real Redis and
// follows the workflows the command submits with --wait: exit 0 when one
// succeeds, 1 when one fails (naming the step and its error) or is
// cancelled, or when --wait-timeout runs out.
func TestWorkflowWait(t *testing.T) {
	url := redistest.URL(t, dbWorkflow)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	app := worker.New("wfcli").Register(append(tasks.Builtin(), wfAdd, wfFail, wfCount, wfBlock)...)
	w := forgeqtest.StartWorker(t, app, forgeqtest.WorkerOptions{Env: map[string]string{
		"REDIS_CONNECTION_URL": url,
		"REDIS_EMBEDDED":       "",
		"WORKER_CONCURRENCY":   "8",
	}})
	// The program's own enqueue command: wfcli enqueue.
	run := func(t *testing.T, stdin string, args ...string) result {
		t.Helper()
		var out, errOut proctest.Buffer
		code := app.RunEnqueue(context.Background(), args, worker.Env{
			Getenv: func(k string) string { return map[string]string{"REDIS_CONNECTION_URL": url}[k] },
			Stdin:  strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		})
		return result{code, out.String(), errOut.String()}
	}
	wc := w.Services().Workflows

	t.Run("succeeds", func(t *testing.T) {
		flow := `{"workflow": {"chain": [{"type": "wfe:add", "payload": {"n": 1}}, {"group": [{"type": "wfe:add", "payload": {"n": 10}}, {"type": "wfe:add", "payload": {"n": 100}}], "callback": {"type": "wfe:count"}}]}, "id": "ok-1"}`
		r := run(t, "", "--workflow", flow, "--wait", "--progress", "always")
		if r.code != exitOK {
			t.Fatalf("exit %d: stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		for _, s := range []string{"submitted workflow ok-1\n", "workflow ok-1 succeeded after ", ": 4 of 4 steps done\n"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("stdout lacks %q: %q", s, r.stdout)
			}
		}
		if !strings.Contains(r.stderr, "workflow ok-1") || !strings.Contains(r.stderr, "4/4") {
			t.Errorf("stderr lacks the bar of the 4 steps: %q", r.stderr)
		}
		// The group's members added to the first step's 1: the workflow
		// ran as the JSON said.
		for path, want := range map[string]string{"1.m0": "11", "1.m1": "101", "1.cb": "2"} {
			if res, err := wc.Result(context.Background(), "ok-1", path); err != nil || string(res) != want {
				t.Errorf("result of step %s: %s, %v; want %s", path, res, err, want)
			}
		}
	})

	t.Run("succeeds, json", func(t *testing.T) {
		r := run(t, twoAdds, "--workflow", "-", "--wait", "--json")
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		got := decode[stateJSON](t, r.stdout)
		if got.Status != "succeeded" || got.Done != 2 || got.Total != 2 || got.Name != "two adds" || got.Waited == nil ||
			got.Finished.IsZero() || got.StatusURL != "/api/workflows/"+got.ID {
			t.Errorf("final state %+v", got)
		}
		if r.stderr != "" {
			t.Errorf("stderr = %q, want nothing with --json", r.stderr)
		}
	})

	t.Run("fails", func(t *testing.T) {
		flow := `{"workflow": {"chain": [{"type": "wfe:add", "payload": {"n": 1}}, {"type": "wfe:fail", "payload": {"why": "disk \u001b[2J full"}}, {"type": "wfe:add", "payload": {"n": 2}}]}, "id": "bad-1"}`
		r := run(t, "", "--workflow", flow, "--wait")
		if r.code != exitFailure {
			t.Fatalf("exit %d, want %d: stdout %q, stderr %q", r.code, exitFailure, r.stdout, r.stderr)
		}
		for _, s := range []string{"workflow bad-1 failed after ", "2 of 3 steps done, 1 failed", "  failed step: 1\n", `  error: disk \x1b[2J full`} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("stdout lacks %q: %q", s, r.stdout)
			}
		}
		if !strings.Contains(r.stderr, `workflow bad-1 failed at step 1: disk \x1b[2J full`) {
			t.Errorf("stderr = %q", r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, "\x1b") {
			t.Errorf("output holds a raw ESC")
		}

		r = run(t, "", "--workflow-status", "bad-1", "--json")
		got := decode[stateJSON](t, r.stdout)
		if r.code != exitOK || got.Status != "failed" || got.FailedStep != "1" || len(got.Steps) != 3 ||
			got.Steps[1].Status != workflow.StepFailed || !strings.Contains(got.Steps[1].Error, "disk") || got.Steps[2].Status != workflow.StepWaiting {
			t.Errorf("status: exit %d, %+v", r.code, got)
		}
	})

	t.Run("file", func(t *testing.T) {
		file := writeTestFile(t, "flows.jsonl", strings.Join([]string{
			`{"type": "data:process", "payload": {"key": "wf-file", "work": 1}}`,
			strings.Replace(twoAdds, `"name"`, `"id": "file-ok", "name"`, 1),
			`{"workflow": {"group": [{"type": "wfe:add", "payload": {"n": 1}}, {"type": "wfe:fail", "payload": {"why": "nope"}}], "callback": {"type": "wfe:count"}, "policy": "always"}, "id": "file-always"}`,
			`{"workflow": {"group": [{"type": "wfe:fail", "payload": {"why": "member failed"}}], "callback": {"type": "wfe:count"}}, "id": "file-bad"}`,
		}, "\n"))
		r := run(t, "", "--file", file, "--wait", "--json")
		if r.code != exitFailure {
			t.Fatalf("exit %d, want %d (one workflow failed): %s", r.code, exitFailure, r.stderr)
		}
		sum := decode[summaryJSON](t, r.stdout)
		if sum.Enqueued != 4 || len(sum.Tasks) != 1 || len(sum.Workflows) != 3 {
			t.Fatalf("summary %+v", sum)
		}
		want := map[string]string{"file-ok": "succeeded", "file-always": "succeeded", "file-bad": "failed"}
		for _, f := range sum.Workflows {
			if f.State == nil || f.State.Status != want[f.ID] || f.State.Done+f.State.Failed == 0 {
				t.Errorf("workflow %s of line %d: end %+v, want %s", f.ID, f.Line, f.State, want[f.ID])
			}
		}
		if !strings.Contains(r.stderr, "line 4: workflow file-bad failed at step 0.m0: member failed") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("wait timeout", func(t *testing.T) {
		flow := `{"workflow": {"chain": [{"type": "wfe:block", "payload": {}}, {"type": "wfe:add", "payload": {"n": 1}}]}, "id": "block-1"}`
		r := run(t, "", "--workflow", flow, "--wait", "--wait-timeout", "200ms")
		if r.code != exitFailure || !strings.Contains(r.stderr, "gave up waiting after 200ms (--wait-timeout): workflow block-1 is still") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if r := run(t, "", "--cancel-workflow", "block-1"); r.code != exitOK {
			t.Fatalf("cancel: exit %d: %s", r.code, r.stderr)
		}
	})

	t.Run("cancelled while waited for", func(t *testing.T) {
		flow := `{"workflow": {"chain": [{"type": "wfe:block", "payload": {}}, {"type": "wfe:add", "payload": {"n": 1}}]}, "id": "block-2"}`
		waited := make(chan result, 1)
		go func() { waited <- run(t, "", "--workflow", flow, "--wait", "--json") }()
		// Cancel once the blocking step runs.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			st, err := wc.Get(ctx, "block-2")
			if err == nil && st.Status == workflow.StatusRunning {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("block-2 never ran: %+v, %v", st, err)
			case <-time.After(10 * time.Millisecond):
			}
		}
		r := run(t, "", "--cancel-workflow", "block-2")
		// The running step is stopped at once (package control) and may
		// be recorded before the state is read: 0 or 1 of 2.
		if r.code != exitOK || !(strings.HasPrefix(r.stdout, "cancelled workflow block-2: 0 of 2 steps had finished") ||
			strings.HasPrefix(r.stdout, "cancelled workflow block-2: 1 of 2 steps had finished")) {
			t.Fatalf("cancel: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = <-waited
		if r.code != exitFailure || !strings.Contains(r.stderr, "workflow block-2 was cancelled: cancelled with wfcli enqueue --cancel-workflow") {
			t.Errorf("--wait: exit %d, stderr %q", r.code, r.stderr)
		}
		if got := decode[stateJSON](t, r.stdout); got.Status != "cancelled" || got.Waited == nil {
			t.Errorf("--wait --json: %+v", got)
		}
		r = run(t, "", "--cancel-workflow", "block-2")
		if r.code != exitFailure || !strings.Contains(r.stderr, "already finished (cancelled)") {
			t.Errorf("cancel again: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// writeTestFile writes content to a file of the test's.
func writeTestFile(tb testing.TB, name, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
