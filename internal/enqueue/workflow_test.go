package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// The test types of the workflow tests: wfc:add returns n plus the
// previous step's result, wfc:fail fails for good, wfc:block runs until it
// is cancelled.
type addArgs struct {
	N int `json:"n"`
}

type failArgs struct {
	Why string `json:"why"`
}

var (
	wfAdd = tasks.Define("wfc:add", "Adds n to the previous result.",
		func(ctx context.Context, _ tasks.Deps, p addArgs) ([]byte, error) {
			prev, err := workflow.PreviousAs[int](ctx)
			if err != nil && !errors.Is(err, workflow.ErrNoPrevious) {
				return nil, err
			}
			return json.Marshal(prev + p.N)
		}, asynq.MaxRetry(0)).TakesPrevious("a number to add n to")
	wfFail = tasks.Define("wfc:fail", "Fails with why.",
		func(_ context.Context, _ tasks.Deps, p failArgs) ([]byte, error) {
			return nil, fmt.Errorf("%s: %w", p.Why, asynq.SkipRetry)
		}, asynq.MaxRetry(0))
	wfBlock = tasks.Define("wfc:block", "Runs until cancelled.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, asynq.MaxRetry(0))
)

// wfRegistry holds the built-in types and the test types.
func wfRegistry(tb testing.TB) *tasks.Registry {
	tb.Helper()
	reg, err := tasks.NewRegistry(append(tasks.Builtin(), wfAdd, wfFail, wfBlock)...)
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

// runWith runs the command in-process with the registry reg.
func runWith(tb testing.TB, reg *tasks.Registry, env map[string]string, stdin string, args ...string) result {
	tb.Helper()
	var out, errOut syncBuffer
	start := time.Now()
	code := Run(context.Background(), Params{
		Prog: "enqueue", Registry: reg, Getenv: func(k string) string { return env[k] },
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
	}, args)
	return result{code: code, stdout: out.String(), stderr: errOut.String(), took: time.Since(start)}
}

// wfBundle is a miniredis with the environment that points the command at
// it.
type wfBundle struct {
	mr   *miniredis.Miniredis
	env  map[string]string
	rdb  *redis.Client
	wc   *workflow.Client
	insp *asynq.Inspector
	reg  *tasks.Registry
}

func setupWorkflow(tb testing.TB) *wfBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	return &wfBundle{
		mr: mr, env: map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr()}, rdb: rdb,
		wc: workflow.NewClient(rdb, workflow.Options{}), insp: asynq.NewInspectorFromRedisClient(rdb), reg: wfRegistry(tb),
	}
}

func (b *wfBundle) run(tb testing.TB, stdin string, args ...string) result {
	tb.Helper()
	return runWith(tb, b.reg, b.env, stdin, args...)
}

// wantNothingWritten fails the test when Redis holds a workflow key or an
// asynq key: nothing was enqueued.
func wantNothingWritten(tb testing.TB, mr *miniredis.Miniredis) {
	tb.Helper()
	for _, k := range mr.Keys() {
		if strings.HasPrefix(k, workflow.KeyPrefix) || strings.HasPrefix(k, "asynq:") {
			tb.Errorf("Redis holds %s: something was written", k)
		}
	}
}

// twoAdds is a chain of two wfc:add steps.
const twoAdds = `{"workflow": {"chain": [{"type": "wfc:add", "payload": {"n": 1}}, {"type": "wfc:add", "payload": {"n": 2}}]}, "name": "two adds"}`

// TestWorkflowSubmit submits a workflow given as the flag's value, a file
// and stdin: it is in Redis with its first step enqueued, and the output
// names it.
func TestWorkflowSubmit(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "flow.json", twoAdds)
	tests := []struct {
		name      string
		giveFlag  string
		giveStdin string
	}{
		{"argument", twoAdds, ""},
		{"file", "@" + path, ""},
		{"stdin", "-", twoAdds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupWorkflow(t)
			r := b.run(t, tt.giveStdin, "--workflow", tt.giveFlag, "--json")
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			got := decodeJSON[submittedJSON](t, r.stdout)
			want := submittedJSON{ID: got.ID, Name: "two adds", Total: 2, Started: 1, StatusURL: "/api/workflows/" + got.ID}
			if diff := cmp.Diff(want, got); diff != "" || got.ID == "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			st, err := b.wc.Get(context.Background(), got.ID)
			if err != nil || st.Total != 2 || st.Name != "two adds" || st.Status != workflow.StatusPending {
				t.Fatalf("workflow in Redis: %+v, %v", st, err)
			}
			ti, err := b.insp.GetTaskInfo("default", workflow.TaskID(got.ID, "0"))
			if err != nil || ti.Type != "wfc:add" || string(ti.Payload) != `{"n": 1}` {
				t.Fatalf("first step: %+v, %v", ti, err)
			}
			if _, err := b.insp.GetTaskInfo("default", workflow.TaskID(got.ID, "1")); !errors.Is(err, asynq.ErrTaskNotFound) {
				t.Errorf("second step enqueued before the first ran: %v", err)
			}
		})
	}

	t.Run("text", func(t *testing.T) {
		t.Parallel()
		b := setupWorkflow(t)
		r := b.run(t, "", "--workflow", strings.Replace(twoAdds, `"name"`, `"id": "flow-1", "name"`, 1))
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		want := "submitted workflow flow-1\n  name:   two adds\n  steps:  2 (1 started)\n  follow: enqueue --workflow-status flow-1\n"
		if r.stdout != want {
			t.Errorf("stdout = %q, want %q", r.stdout, want)
		}
		// The id is used once.
		r = b.run(t, "", "--workflow", strings.Replace(twoAdds, `"name"`, `"id": "flow-1", "name"`, 1))
		if r.code != exitUsage || !strings.Contains(r.stderr, `workflow id "flow-1" is already in use`) {
			t.Errorf("second submission: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// TestWorkflowHelpExample: the workflow of --help is one this program
// accepts.
func TestWorkflowHelpExample(t *testing.T) {
	t.Parallel()
	help := runCmd(t, nil, "", "--help").stdout
	start := strings.Index(help, `  {"workflow": {"chain": [`)
	end := strings.Index(help, `"retention": "72h"}`)
	if start < 0 || end < start {
		t.Fatalf("help has no workflow example:\n%s", help)
	}
	example := help[start : end+len(`"retention": "72h"}`)]
	b := setupCatalog(t, false)
	r := runCmd(t, b.env, "", "--workflow", example, "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s\nexample:\n%s", r.code, r.stderr, example)
	}
	if got := decodeJSON[submittedJSON](t, r.stdout); got.ID != "nightly-2030-01-02" || got.Total != 5 {
		t.Errorf("submitted %+v, want nightly-2030-01-02 with 5 steps", got)
	}
}

// TestWorkflowBadInput: a bad workflow, given alone or as a --file line
// among good ones, is bad input (exit 2) that names the step (and the
// line), and nothing is written to Redis.
func TestWorkflowBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		giveFlow string
		want     []string
	}{
		{
			name:     "unknown type in a nested member",
			giveFlow: `{"workflow": {"chain": [{"type": "wfc:add", "payload": {"n": 1}}, {"group": [{"type": "wfc:add", "payload": {"n": 1}}, {"chain": [{"type": "wfc:nope", "payload": {}}]}]}]}}`,
			want:     []string{`step 1.m1.0 (wfc:nope)`, `unknown task type "wfc:nope"`},
		},
		{
			name:     "bad payload of a callback",
			giveFlow: `{"workflow": {"group": [{"type": "wfc:add", "payload": {"n": 1}}], "callback": {"type": "wfc:add", "payload": {"n": "x"}}}}`,
			want:     []string{`step 0.cb (wfc:add)`, `field "n"`},
		},
		{
			name:     "unknown payload field",
			giveFlow: `{"workflow": {"chain": [{"type": "wfc:fail", "payload": {"why": "x", "extra": 1}}]}}`,
			want:     []string{`step 0 (wfc:fail)`, `"extra"`},
		},
		{
			name:     "empty group",
			giveFlow: `{"workflow": {"chain": [{"type": "wfc:add", "payload": {"n": 1}}, {"group": []}]}}`,
			want:     []string{`step 1`, `group`},
		},
		{
			name:     "bad id",
			giveFlow: `{"workflow": {"type": "wfc:add", "payload": {"n": 1}}, "id": "a b"}`,
			want:     []string{`workflow id "a b"`},
		},
		{
			name:     "control characters are escaped",
			giveFlow: `{"workflow": {"chain": [{"type": "wfc:\u001b[31mx", "payload": {}}]}}`,
			want:     []string{`wfc:\x1b[31mx`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/flag", func(t *testing.T) {
			t.Parallel()
			b := setupWorkflow(t)
			r := b.run(t, "", "--workflow", tt.giveFlow)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
			}
			for _, w := range append([]string{"--workflow (argument)"}, tt.want...) {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr = %q, want it to contain %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, "\x1b") {
				t.Errorf("stderr holds a raw ESC: %q", r.stderr)
			}
			wantNothingWritten(t, b.mr)
		})
		t.Run(tt.name+"/file", func(t *testing.T) {
			t.Parallel()
			b := setupWorkflow(t)
			file := writeFile(t, "mixed.jsonl", strings.Join([]string{
				`{"type": "data:process", "payload": {"key": "a", "work": 1}}`,
				twoAdds,
				tt.giveFlow,
			}, "\n"))
			r := b.run(t, "", "--file", file, "--json")
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
			}
			got := decodeJSON[struct {
				Error    string      `json:"error"`
				BadLines []lineError `json:"bad_lines"`
			}](t, r.stdout)
			if len(got.BadLines) != 1 || got.BadLines[0].Line != 3 {
				t.Fatalf("bad lines %+v, want line 3", got.BadLines)
			}
			for _, w := range tt.want {
				if want := strings.ReplaceAll(w, `\x1b`, "\x1b"); !strings.Contains(got.BadLines[0].Error, want) {
					t.Errorf("line 3: %q, want it to contain %q", got.BadLines[0].Error, want)
				}
				if !strings.Contains(r.stderr, "line 3: ") || !strings.Contains(r.stderr, w) {
					t.Errorf("stderr = %q, want line 3 and %q", r.stderr, w)
				}
			}
			wantNothingWritten(t, b.mr)
		})
	}
}

// TestWorkflowFileMixed enqueues a file of tasks and workflows: the tasks
// are enqueued, the workflows submitted with their first steps, and the
// summary reports both by line.
func TestWorkflowFileMixed(t *testing.T) {
	t.Parallel()
	b := setupWorkflow(t)
	file := writeFile(t, "mixed.jsonl", strings.Join([]string{
		`{"type": "data:process", "payload": {"key": "a", "work": 1}, "id": "task-a"}`,
		`{"workflow": {"group": [{"type": "wfc:add", "payload": {"n": 1}}, {"type": "wfc:add", "payload": {"n": 2}}], "callback": {"type": "wfc:add", "payload": {"n": 3}}}, "id": "flow-a", "name": "fan out"}`,
		``,
		`{"type": "cache:warm", "payload": {"keys": ["b"], "work": 1}, "queue": "critical"}`,
		twoAdds,
	}, "\n"))
	r := b.run(t, "", "--file", file, "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	sum := decodeJSON[bulkJSON](t, r.stdout)
	if sum.Enqueued != 4 || sum.Failed != 0 || sum.Unknown != 0 || sum.NotAttempted != 0 || len(sum.Tasks) != 2 || len(sum.Workflows) != 2 {
		t.Fatalf("summary %+v", sum)
	}
	if got := sum.Tasks[0]; got.Line != 1 || got.ID != "task-a" || got.Type != "data:process" {
		t.Errorf("task of line 1: %+v", got)
	}
	if got := sum.Tasks[1]; got.Line != 4 || got.Queue != "critical" {
		t.Errorf("task of line 4: %+v", got)
	}
	wantFlow := bulkWorkflowJSON{Line: 2, ID: "flow-a", Name: "fan out", Total: 3, Started: 2, StatusURL: "/api/workflows/flow-a"}
	if diff := cmp.Diff(wantFlow, sum.Workflows[0]); diff != "" {
		t.Errorf("workflow of line 2 (-want +got):\n%s", diff)
	}
	if got := sum.Workflows[1]; got.Line != 5 || got.ID == "" || got.Total != 2 || got.Started != 1 {
		t.Errorf("workflow of line 5: %+v", got)
	}
	for _, f := range sum.Workflows {
		if st, err := b.wc.Get(context.Background(), f.ID); err != nil || st.Total != f.Total {
			t.Errorf("workflow %s in Redis: %+v, %v", f.ID, st, err)
		}
	}
	// The tasks of the task lines and the first steps of the workflows.
	pending, err := b.insp.ListPendingTasks("default")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ti := range pending {
		ids = append(ids, ti.ID)
	}
	want := []string{"task-a", workflow.TaskID("flow-a", "0.m0"), workflow.TaskID("flow-a", "0.m1"), workflow.TaskID(sum.Workflows[1].ID, "0")}
	if diff := cmp.Diff(want, ids, cmpSorted()); diff != "" {
		t.Errorf("pending on default (-want +got):\n%s", diff)
	}

	t.Run("text", func(t *testing.T) {
		file := writeFile(t, "mixed.jsonl", `{"type": "data:process", "payload": {"key": "t", "work": 1}}`+"\n"+
			strings.Replace(twoAdds, `"name"`, `"id": "flow-t", "name"`, 1)+"\n")
		r := b.run(t, "", "--file", file)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, w := range []string{"enqueued 1 of 1 task and submitted 1 of 1 workflow in ", "line 2: workflow flow-t, 2 steps\n"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("stdout = %q, want it to contain %q", r.stdout, w)
			}
		}
	})

	t.Run("workflow id in use", func(t *testing.T) {
		// flow-a is in Redis; flow-d is used twice.
		file := writeFile(t, "taken.jsonl", strings.Join([]string{
			`{"type": "data:process", "payload": {"key": "x", "work": 1}}`,
			strings.Replace(twoAdds, `"name"`, `"id": "flow-d", "name"`, 1),
			strings.Replace(twoAdds, `"name"`, `"id": "flow-d", "name"`, 1),
		}, "\n"))
		r := b.run(t, "", "--file", file)
		if r.code != exitUsage || !strings.Contains(r.stderr, `line 3: workflow id "flow-d": already used on line 2`) {
			t.Errorf("id used twice: exit %d, stderr %q", r.code, r.stderr)
		}
		file = writeFile(t, "taken.jsonl", strings.Join([]string{
			`{"type": "data:process", "payload": {"key": "x", "work": 1}}`,
			strings.Replace(twoAdds, `"name"`, `"id": "flow-a", "name"`, 1),
		}, "\n"))
		before := len(b.mr.Keys())
		r = b.run(t, "", "--file", file)
		if r.code != exitUsage || !strings.Contains(r.stderr, `line 2: field "id" "flow-a": a workflow with this id already exists (pending`) {
			t.Errorf("id in Redis: exit %d, stderr %q", r.code, r.stderr)
		}
		if after := len(b.mr.Keys()); after != before {
			t.Errorf("Redis went from %d to %d keys: something was enqueued", before, after)
		}
	})

	t.Run("wait without workflows", func(t *testing.T) {
		file := writeFile(t, "tasks.jsonl", `{"type": "data:process", "payload": {"key": "y", "work": 1}}`+"\n")
		r := b.run(t, "", "--file", file, "--wait")
		if r.code != exitUsage || !strings.Contains(r.stderr, "has none; nothing was enqueued") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// cmpSorted compares string slices in any order.
func cmpSorted() cmp.Option {
	return cmp.Transformer("sort", func(in []string) []string {
		out := append([]string(nil), in...)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if out[j] < out[i] {
					out[i], out[j] = out[j], out[i]
				}
			}
		}
		return out
	})
}

// TestWorkflowStatus prints a workflow's state and its steps, the first
// 100 of them with a note of how many more there are.
func TestWorkflowStatus(t *testing.T) {
	t.Parallel()
	b := setupWorkflow(t)
	members := make([]string, 150)
	for i := range members {
		members[i] = fmt.Sprintf(`{"type": "wfc:add", "payload": {"n": %d}}`, i)
	}
	big := `{"workflow": {"chain": [{"type": "wfc:fail", "payload": {"why": "x"}}, {"group": [` + strings.Join(members, ",") + `]}]}, "id": "big", "name": "big \u001b]0;x"}`
	if r := b.run(t, "", "--workflow", big); r.code != exitOK {
		t.Fatalf("submit: exit %d: %s", r.code, r.stderr)
	}

	r := b.run(t, "", "--workflow-status", "big")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{
		"workflow big\n", `  name:     big \x1b]0;x`, "  status:   pending, 0 of 151 steps done, 0 failed\n", "  created:  ",
		"  (the first 100 of 151 steps)\n",
	} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
		}
	}
	rows := map[string]string{} // by path: the row's other fields
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && (f[0] == "PATH" || f[0] == "0" || strings.HasPrefix(f[0], "1.")) {
			rows[f[0]] = strings.Join(f[1:], " ")
		}
	}
	if rows["PATH"] != "TYPE QUEUE STATUS DETAIL" || rows["0"] != "wfc:fail default active" || rows["1.m0"] != "wfc:add default waiting" || rows["1.m98"] == "" {
		t.Errorf("step rows %q", rows)
	}
	if len(rows) != 101 || strings.Contains(r.stdout, "\x1b") {
		t.Errorf("stdout lists %d steps, want 100, or holds a raw ESC:\n%s", len(rows)-1, r.stdout)
	}

	r = b.run(t, "", "--workflow-status", "big", "--json")
	if r.code != exitOK {
		t.Fatalf("--json: exit %d: %s", r.code, r.stderr)
	}
	got := decodeJSON[workflowJSON](t, r.stdout)
	if got.ID != "big" || got.Status != "pending" || got.Total != 151 || len(got.Steps) != 100 || got.MoreSteps != 51 ||
		got.StatusURL != "/api/workflows/big" || got.RetentionSeconds != workflow.DefaultRetention.Seconds() {
		t.Errorf("--json: %+v", got)
	}
	wantStep := workflow.Step{Path: "0", Type: "wfc:fail", Queue: "default", TaskID: workflow.TaskID("big", "0"), Status: workflow.StepActive}
	if diff := cmp.Diff(wantStep, got.Steps[0]); diff != "" {
		t.Errorf("--json: step 0 (-want +got):\n%s", diff)
	}

	for _, args := range [][]string{{"--workflow-status", "nope"}, {"--workflow-status", "nope", "--json"}} {
		r = b.run(t, "", args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, `--workflow-status "nope": no such workflow`) {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

// TestWorkflowCancel cancels a workflow (exit 0), refuses to cancel it
// again (exit 1, already finished) and an unknown one (exit 2).
func TestWorkflowCancel(t *testing.T) {
	t.Parallel()
	b := setupWorkflow(t)
	if r := b.run(t, "", "--workflow", strings.Replace(twoAdds, `"name"`, `"id": "c-1", "name"`, 1)); r.code != exitOK {
		t.Fatalf("submit: exit %d: %s", r.code, r.stderr)
	}
	r := b.run(t, "", "--cancel-workflow", "c-1")
	if r.code != exitOK || r.stdout != "cancelled workflow c-1: 0 of 2 steps had finished\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	st, err := b.wc.Get(context.Background(), "c-1")
	if err != nil || st.Status != workflow.StatusCancelled || !strings.Contains(st.Error, "--cancel-workflow") {
		t.Fatalf("state %+v, %v", st, err)
	}
	if _, err := b.insp.GetTaskInfo("default", workflow.TaskID("c-1", "0")); !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Errorf("the waiting first step is still queued: %v", err)
	}

	r = b.run(t, "", "--cancel-workflow", "c-1")
	if r.code != exitFailure || !strings.Contains(r.stderr, `--cancel-workflow "c-1": the workflow has already finished (cancelled)`) {
		t.Errorf("again: exit %d, stderr %q", r.code, r.stderr)
	}
	r = b.run(t, "", "--cancel-workflow", "c-1", "--json")
	if got := decodeJSON[struct {
		Error string `json:"error"`
	}](t, r.stdout); r.code != exitFailure || !strings.Contains(got.Error, "already finished") {
		t.Errorf("again, --json: exit %d, %+v", r.code, got)
	}
	r = b.run(t, "", "--cancel-workflow", "nope")
	if r.code != exitUsage || !strings.Contains(r.stderr, `--cancel-workflow "nope": no such workflow`) {
		t.Errorf("unknown: exit %d, stderr %q", r.code, r.stderr)
	}

	if r := b.run(t, "", "--workflow", strings.Replace(twoAdds, `"name"`, `"id": "c-2", "name"`, 1)); r.code != exitOK {
		t.Fatalf("submit: exit %d: %s", r.code, r.stderr)
	}
	r = b.run(t, "", "--cancel-workflow", "c-2", "--json")
	if got := decodeJSON[workflowJSON](t, r.stdout); r.code != exitOK || got.ID != "c-2" || got.Status != "cancelled" || got.Total != 2 {
		t.Errorf("--json: exit %d, %+v", r.code, got)
	}
}

// TestWorkflowUsageErrors: mistakes caught before Redis is reached.
func TestWorkflowUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}
	tests := []struct {
		name       string
		giveArgs   []string
		wantStderr string
	}{
		{"workflow with a type", []string{"--workflow", twoAdds, "data:process"}, "--workflow takes no TYPE"},
		{"workflow with a task flag", []string{"--workflow", twoAdds, "--queue", "low"}, "--workflow cannot be combined with --queue"},
		{"workflow and file", []string{"--file", "x.jsonl", "--workflow", twoAdds}, "--file cannot be combined with --workflow"},
		{"empty workflow flag", []string{"--workflow", ""}, `--workflow "": want the workflow's JSON`},
		{"missing workflow file", []string{"--workflow", "@/nonexistent/w.json"}, "--workflow: open /nonexistent/w.json"},
		{"malformed workflow", []string{"--workflow", `{"workflow": `}, "--workflow (argument): invalid workflow"},
		{"no workflow field", []string{"--workflow", `{"chain": []}`}, "--workflow (argument)"},
		{"bad step of own types", []string{"--workflow", `{"workflow": {"type": "wfc:add", "payload": {"n": "x"}}}`}, `step 0 (wfc:add)`},
		{"wait timeout without wait", []string{"--workflow", twoAdds, "--wait-timeout", "1s"}, `--wait-timeout "1s" needs --wait`},
		{"status with a task flag", []string{"--workflow-status", "x", "--queue", "low"}, "--workflow-status cannot be combined with --queue"},
		{"status and cancel", []string{"--workflow-status", "x", "--cancel-workflow", "x"}, "cannot be combined with"},
		{"cancel with an argument", []string{"--cancel-workflow", "x", "y"}, `--cancel-workflow takes no other arguments, got ["y"]`},
		{"status without id", []string{"--workflow-status", ""}, "--workflow-status needs a workflow ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runWith(t, wfRegistry(t), env, "", tt.giveArgs...)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.wantStderr)
			}
			if strings.Contains(r.stderr, "cannot reach Redis") {
				t.Errorf("bad input reached for Redis: %q", r.stderr)
			}
		})
	}
}

// TestListTakesPrevious: --list says which types read the previous step's
// result, the program's own and published ones.
func TestListTakesPrevious(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	sum := tasks.Define("wfc:sum", "Sums a group's results.",
		func(context.Context, tasks.Deps, struct{}) ([]byte, error) { return nil, nil }).TakesPrevious("the group's numbers")
	pub, err := tasks.NewRegistry(sum)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.NewCatalog(rdb).Publish(context.Background(), pub, tasks.WorkerInfo{ID: "w1"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr()}
	reg := wfRegistry(t)

	r := runWith(t, reg, env, "", "--list")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{
		"wfc:add (queue default)\n  Adds n to the previous result.\n  takes previous result: a number to add n to\n",
		"wfc:sum (queue default, published by a worker)\n  Sums a group's results.\n  takes previous result: the group's numbers\n",
	} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("listing lacks %q:\n%s", w, r.stdout)
		}
	}
	if strings.Count(r.stdout, "takes previous result") != 2 {
		t.Errorf("types that take none say they do:\n%s", r.stdout)
	}

	r = runWith(t, reg, env, "", "--list", "--json")
	if r.code != exitOK {
		t.Fatalf("--json: exit %d: %s", r.code, r.stderr)
	}
	got := map[string]string{}
	for _, ty := range decodeJSON[[]typeJSON](t, r.stdout) {
		got[ty.Type] = ty.TakesPrevious
	}
	want := map[string]string{
		tasks.TypeProcessData: "", tasks.TypeInvalidate: "", tasks.TypeWarm: "",
		"wfc:add": "a number to add n to", "wfc:fail": "", "wfc:block": "", "wfc:sum": "the group's numbers",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("takes_previous by type (-want +got):\n%s", diff)
	}
}

// TestWorkflowChecker: the checker passes a good workflow and refuses a bad
// one, naming the step, without reaching any Redis.
func TestWorkflowChecker(t *testing.T) {
	t.Parallel()
	c := &cli{reg: wfRegistry(t)}
	chk := newWorkflowChecker(c.localTypes())
	defer chk.close()
	tests := []struct {
		name    string
		giveDoc string
		wantErr string // "" for none
	}{
		{"good", twoAdds, ""},
		{"bad member", `{"workflow": {"group": [{"type": "wfc:add", "payload": {"n": 1}}, {"type": "wfc:add", "payload": {}}]}}`, `step 0.m1 (wfc:add)`},
		{"unknown type", `{"workflow": {"chain": [{"type": "wfc:ad", "payload": {}}]}}`, `step 0 (wfc:ad): unknown task type "wfc:ad"; known types: `},
		{"refused option", `{"workflow": {"chain": [{"type": "wfc:add", "payload": {"n": 1}, "max_retry": -1}]}}`, `step 0 (wfc:add)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node, so, err := workflow.Parse([]byte(tt.giveDoc))
			if err != nil {
				if tt.wantErr != "" && strings.Contains(err.Error(), tt.wantErr) {
					return // refused by Parse already
				}
				t.Fatal(err)
			}
			err = chk.check(context.Background(), node, so)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("check: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !errors.Is(err, workflow.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("check: %v, want workflow.ErrInvalid naming %q", err, tt.wantErr)
			}
		})
	}
}
