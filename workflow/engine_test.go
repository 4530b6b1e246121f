package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
)

type itemPayload struct {
	Item string `json:"item"`
}

var (
	itemType = tasks.Define("wfe:item", "An item.", func(context.Context, tasks.Deps, itemPayload) ([]byte, error) { return nil, nil })
	sumType  = tasks.Define("wfe:sum", "A summary.", func(context.Context, tasks.Deps, struct{}) ([]byte, error) { return nil, nil })
)

func item(s string) *TaskNode { return Task(itemType, itemPayload{Item: s}) }

// newEngine returns a Client on a fresh miniredis, its clock at now.
func newEngine(t *testing.T) (*Client, *miniredis.Miniredis, *time.Time) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, err := tasks.NewRegistry(itemType, sumType)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(rdb, Options{Types: RegistryTypes(reg)})
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	return c, mr, &now
}

func submit(t *testing.T, c *Client, root Node) *Info {
	t.Helper()
	info, err := c.Submit(context.Background(), root, SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// finish records the end of a step as the middleware does, and enqueues
// what starts next; it returns the script's reply.
func finish(t *testing.T, c *Client, id, path string, ok bool, value string) scriptReply {
	t.Helper()
	r, err := c.complete(context.Background(), id, path, ok, value)
	if err != nil {
		t.Fatal(err)
	}
	if r.code == "ok" {
		if err := c.start(context.Background(), id, r.pairs); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func started(r scriptReply) []string {
	var out []string
	for i := 0; i+1 < len(r.pairs); i += 2 {
		out = append(out, r.pairs[i])
	}
	return out
}

func get(t *testing.T, c *Client, id string) *State {
	t.Helper()
	st, err := c.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSubmitRefusesNamingTheStep(t *testing.T) {
	self := Chain(item("a"))
	self.steps = append(self.steps, self)
	deep := Node(item("x"))
	for range MaxDepth + 2 {
		deep = Chain(deep)
	}
	for _, tc := range []struct {
		name string
		root Node
		want []string
	}{
		{"unknown type in a nested member", Chain(item("a"), Group(item("b"), Chain(item("c"), Raw("wfe:nope", nil)))),
			[]string{"step 1.m1.1 (wfe:nope)", "unknown task type", "known types: wfe:item, wfe:sum"}},
		{"bad payload", Group(item("a"), Raw("wfe:item", []byte(`{"item": 5}`))),
			[]string{"step 0.m1 (wfe:item)", "invalid payload"}},
		{"unknown payload field", Chain(item("a"), Raw("wfe:item", []byte(`{"item": "x", "extra": 1}`))),
			[]string{"step 1 (wfe:item)", "extra"}},
		{"task id option", Chain(item("a"), Task(itemType, itemPayload{Item: "b"}, asynq.TaskID("mine"))),
			[]string{"step 1 (wfe:item)", "not allowed in a workflow step", "forgeq sets the task id"}},
		{"process in option", Group(Task(itemType, itemPayload{}, asynq.ProcessIn(time.Minute))),
			[]string{"step 0.m0 (wfe:item)", "not allowed"}},
		{"bad queue", Chain(Task(itemType, itemPayload{}, asynq.Queue("no spaces"))),
			[]string{"step 0 (wfe:item)", "queue"}},
		{"empty group", Chain(item("a"), Group()), []string{"step 1", "empty group"}},
		{"empty chain", Group(item("a"), Chain()), []string{"step 0.m1", "empty chain"}},
		{"nil step", Chain(item("a"), nil), []string{"step 1", "nil step"}},
		{"a cycle", Chain(item("a"), self), []string{"step 1", "cycle"}},
		{"too deep", deep, []string{"MaxDepth"}},
		{"no steps", nil, []string{"no steps"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, mr, _ := newEngine(t)
			_, err := c.Submit(context.Background(), tc.root, SubmitOptions{})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if keys := mr.Keys(); len(keys) != 0 {
				t.Fatalf("a refused workflow wrote %v", keys)
			}
		})
	}
}

func TestSubmitRefusesBadSettings(t *testing.T) {
	c, mr, _ := newEngine(t)
	for _, so := range []SubmitOptions{
		{ID: "has space"}, {ID: strings.Repeat("x", MaxIDLen+1)}, {ID: "a:b"},
		{Retention: time.Millisecond}, {Retention: MaxRetention + time.Hour},
		{Name: strings.Repeat("n", 201)},
	} {
		if _, err := c.Submit(context.Background(), item("a"), so); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err %v, want ErrInvalid", so, err)
		}
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("refused workflows wrote %v", keys)
	}
}

func TestSubmitIDTaken(t *testing.T) {
	c, _, _ := newEngine(t)
	if _, err := c.Submit(context.Background(), item("a"), SubmitOptions{ID: "nightly-1"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Submit(context.Background(), item("b"), SubmitOptions{ID: "nightly-1"})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("err %v, want ErrExists", err)
	}
	if st := get(t, c, "nightly-1"); st.Total != 1 {
		t.Fatalf("the second submission changed the first: %+v", st)
	}
}

func TestSubmitEnqueuesFirstStage(t *testing.T) {
	c, _, _ := newEngine(t)
	info := submit(t, c, Chain(Group(item("a"), Chain(item("b"), item("c"))).Then(Task(sumType, struct{}{}), Always), item("d")))
	if info.Total != 5 || info.Started != 2 {
		t.Fatalf("info %+v: want 5 steps, 2 started (0.m0, 0.m1.0)", info)
	}
	for _, path := range []string{"0.m0", "0.m1.0"} {
		ti, err := c.insp.GetTaskInfo("default", TaskID(info.ID, path))
		if err != nil {
			t.Fatalf("step %s: %v", path, err)
		}
		if ti.Type != "wfe:item" || ti.State != asynq.TaskStatePending {
			t.Fatalf("step %s: %+v", path, ti)
		}
	}
	if st := get(t, c, info.ID); st.Status != StatusPending || st.Total != 5 {
		t.Fatalf("state %+v", st)
	}
}

// A duplicate completion, which at-least-once delivery allows, is
// counted once, and the callback starts once.
func TestDuplicateCompletionCountedOnce(t *testing.T) {
	c, _, _ := newEngine(t)
	info := submit(t, c, Group(item("a"), item("b"), item("c")).Then(Task(sumType, struct{}{}), AllSucceeded))
	id := info.ID
	if r := finish(t, c, id, "0.m0", true, "1"); r.code != "ok" || len(r.pairs) != 0 {
		t.Fatalf("first completion: %+v", r)
	}
	if r := finish(t, c, id, "0.m0", true, "1"); r.code != "dup" {
		t.Fatalf("duplicate completion: %+v, want dup", r)
	}
	if st := get(t, c, id); st.Done != 1 {
		t.Fatalf("done %d after a duplicate, want 1", st.Done)
	}
	finish(t, c, id, "0.m1", true, "2")
	r := finish(t, c, id, "0.m2", true, "3")
	if got := started(r); len(got) != 1 || got[0] != "0.cb" {
		t.Fatalf("last member started %v, want the callback", got)
	}
	if r := finish(t, c, id, "0.m2", true, "3"); r.code != "dup" || len(r.pairs) != 0 {
		t.Fatalf("duplicate of the last member: %+v (the callback must not start again)", r)
	}
	r = finish(t, c, id, "0.cb", true, `{"ok":true}`)
	if r.status != string(StatusSucceeded) {
		t.Fatalf("callback's completion: %+v", r)
	}
	st := get(t, c, id)
	if st.Status != StatusSucceeded || st.Done != 4 || st.Total != 4 || st.Finished.IsZero() {
		t.Fatalf("state %+v", st)
	}
	if b, _ := c.Result(context.Background(), id, "0"); string(b) != `{"ok":true}` {
		t.Fatalf("the group's result %q, want its callback's", b)
	}
}

func TestFinalWorkflowExpires(t *testing.T) {
	c, mr, _ := newEngine(t)
	info, err := c.Submit(context.Background(), item("a"), SubmitOptions{Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	finish(t, c, info.ID, "0", true, "")
	for _, k := range keys(info.ID) {
		if mr.Exists(k) && mr.TTL(k) != time.Hour {
			t.Errorf("%s: ttl %v, want the retention", k, mr.TTL(k))
		}
	}
	mr.FastForward(time.Hour + time.Second)
	if _, err := c.Get(context.Background(), info.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after its retention: %v, want ErrNotFound", err)
	}
	list, err := c.List(context.Background(), 10)
	if err != nil || len(list) != 0 {
		t.Fatalf("list %v, %v: want the expired workflow dropped", list, err)
	}
}

func TestChainFailureStopsIt(t *testing.T) {
	c, _, _ := newEngine(t)
	info := submit(t, c, Chain(item("a"), Group(item("b"), item("c")), item("d")))
	id := info.ID
	finish(t, c, id, "0", true, "")
	finish(t, c, id, "1.m0", false, "boom")
	r := finish(t, c, id, "1.m1", true, "")
	if len(r.pairs) != 0 || r.status != string(StatusFailed) {
		t.Fatalf("group with a failed member (all_succeeded): %+v, want failed and nothing started", r)
	}
	st := get(t, c, id)
	if st.FailedStep != "1.m0" || st.Error != "boom" || st.Failed != 1 || st.Done != 3 {
		t.Fatalf("state %+v", st)
	}
	steps, _, err := c.Steps(context.Background(), id, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]StepStatus{"0": StepSucceeded, "1.m0": StepFailed, "1.m1": StepSucceeded, "2": StepWaiting}
	for _, s := range steps {
		if s.Status != want[s.Path] {
			t.Errorf("step %s: %s, want %s", s.Path, s.Status, want[s.Path])
		}
		if s.Path == "1.m0" && s.Error != "boom" {
			t.Errorf("step 1.m0's error %q", s.Error)
		}
	}
}

func TestCancel(t *testing.T) {
	c, _, _ := newEngine(t)
	ctx := context.Background()
	info := submit(t, c, Chain(Group(item("a"), item("b"), item("c")), item("d")))
	id := info.ID
	finish(t, c, id, "0.m0", true, "")
	st, err := c.Cancel(ctx, id, "cancelled by test")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusCancelled || st.Error != "cancelled by test" {
		t.Fatalf("state %+v", st)
	}
	for _, path := range []string{"0.m1", "0.m2"} {
		if _, err := c.insp.GetTaskInfo("default", TaskID(id, path)); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("step %s's task: %v, want deleted", path, err)
		}
	}
	// A step that still finishes is recorded; nothing after it starts.
	if r := finish(t, c, id, "0.m1", true, ""); r.code != "stopped" || len(r.pairs) != 0 {
		t.Fatalf("completion after cancel: %+v", r)
	}
	steps, _, err := c.Steps(ctx, id, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]StepStatus{"0.m0": StepSucceeded, "0.m1": StepSucceeded, "0.m2": StepCancelled, "1": StepWaiting}
	for _, s := range steps {
		if s.Status != want[s.Path] {
			t.Errorf("step %s: %s, want %s", s.Path, s.Status, want[s.Path])
		}
	}
	if _, err := c.Cancel(ctx, id, ""); !errors.Is(err, ErrFinished) {
		t.Fatalf("second cancel: %v, want ErrFinished", err)
	}
	if _, err := c.Cancel(ctx, "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cancel of an unknown id: %v, want ErrNotFound", err)
	}
}

// The reconciler enqueues a step recorded as started whose task is
// missing (a worker died between the two writes), and records a step
// whose task asynq archived without the step being recorded.
func TestReconcile(t *testing.T) {
	c, _, now := newEngine(t)
	ctx := context.Background()
	info := submit(t, c, Chain(item("a"), item("b"), item("c")))
	id := info.ID
	// Step 0 finishes, the process dies before enqueuing step 1.
	if _, err := c.complete(ctx, id, "0", true, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.insp.GetTaskInfo("default", TaskID(id, "1")); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("reconciled before its time: %v", err)
	}
	*now = now.Add(reconcileAfter + time.Second)
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	ti, err := c.insp.GetTaskInfo("default", TaskID(id, "1"))
	if err != nil || ti.State != asynq.TaskStatePending {
		t.Fatalf("step 1 after reconciling: %+v, %v", ti, err)
	}
	// Step 1's task is archived by asynq (a worker died on its last
	// attempt): the reconciler records the failure.
	if err := c.insp.ArchiveTask("default", TaskID(id, "1")); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(reconcileAfter + time.Second)
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st := get(t, c, id)
	if st.Status != StatusFailed || st.FailedStep != "1" {
		t.Fatalf("state %+v, want failed at step 1", st)
	}
	if n, _ := c.rdb.ZCard(ctx, RunningKey).Result(); n != 0 {
		t.Fatalf("%d workflows still due for reconciling", n)
	}
}

func TestPreviousByShape(t *testing.T) {
	c, _, _ := newEngine(t)
	ctx := context.Background()
	info := submit(t, c, Chain(item("a"), Group(item("b"), item("c")), Chain(item("d"), item("e")), Group(item("f")).Then(item("g"), Always), item("h")))
	id := info.ID
	at := func(path string) context.Context {
		return context.WithValue(ctx, stepKey{}, &stepCtx{c: c, id: id, path: path})
	}
	prev := func(path string) string {
		t.Helper()
		b, err := Previous(at(path))
		if err != nil {
			t.Fatalf("previous of %s: %v", path, err)
		}
		return string(b)
	}
	if _, err := Previous(at("0")); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("previous of the first step: %v", err)
	}
	finish(t, c, id, "0", true, `"A"`)
	if got := prev("1.m1"); got != `"A"` {
		t.Fatalf("a member's previous %s, want the stage before the group", got)
	}
	finish(t, c, id, "1.m0", true, `"B"`)
	finish(t, c, id, "1.m1", true, "not json")
	if got := prev("2.0"); got != `["B","not json"]` {
		t.Fatalf("after a group without a callback: %s", got)
	}
	finish(t, c, id, "2.0", true, `"D"`)
	if got := prev("2.1"); got != `"D"` {
		t.Fatal(got)
	}
	finish(t, c, id, "2.1", true, `"E"`)
	if got := prev("3.m0"); got != `"E"` {
		t.Fatalf("after a chain: %s, want its last step's result", got)
	}
	finish(t, c, id, "3.m0", false, "F failed")
	if got := prev("3.cb"); got != `[null]` {
		t.Fatalf("a callback's previous: %s, want its members' results", got)
	}
	g, err := Results(at("3.cb"))
	if err != nil {
		t.Fatal(err)
	}
	if g.Total != 1 || g.Failed != 1 || len(g.Failures) != 1 || g.Failures[0].Step != "3.m0" || g.Failures[0].Error != "F failed" {
		t.Fatalf("results %+v", g)
	}
	finish(t, c, id, "3.cb", true, `{"g":1}`)
	v, err := PreviousAs[map[string]int](at("4"))
	if err != nil || v["g"] != 1 {
		t.Fatalf("after a group with a callback: %v, %v", v, err)
	}
	if _, err := Results(at("4")); err != nil {
		t.Fatalf("results after a group with a callback: %v", err)
	}
	if _, err := Results(at("1.m0")); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("results of a step after a task: %v, want ErrNoPrevious", err)
	}
	if _, err := Previous(ctx); !errors.Is(err, ErrNotInWorkflow) {
		t.Fatalf("outside a workflow: %v", err)
	}
	if b, err := Previous(WithPrevious(ctx, []byte("7"))); err != nil || string(b) != "7" {
		t.Fatalf("WithPrevious: %s, %v", b, err)
	}
	if n, err := PreviousAs[int](WithPrevious(ctx, []byte("7"))); err != nil || n != 7 {
		t.Fatalf("PreviousAs with WithPrevious: %d, %v", n, err)
	}
}

func TestParseNamesTheStep(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"workflow": {"chain": [{"type": "a"}, {"group": [{"type": "b", "colour": 1}]}]}}`, `step 1.m0: unknown field "colour"`},
		{`{"workflow": {"chain": [{"type": "a", "chain": []}]}}`, `step 0: a step is one of`},
		{`{"workflow": {"group": [{"type": "a"}], "policy": "sometimes", "callback": {"type": "b"}}}`, `step 0: policy "sometimes"`},
		{`{"workflow": {"group": [{"type": "a"}], "policy": "always"}}`, `"policy" without a "callback"`},
		{`{"workflow": {"chain": [{"type": "a", "timeout": "soon"}]}}`, `step 0 (a): timeout: "soon" is not a duration`},
		{`{"workflow": {"chain": [{"type": "a", "max_retry": -1}]}}`, `step 0 (a)`},
		{`{"workflow": {"chain": []}}`, `empty chain`},
		{`{"workflow": {"group": []}}`, `step 0: empty group`},
		{`{"chain": []}`, `unknown field "chain"`},
		{`{}`, `no "workflow" field`},
		{`{"workflow": {"type": "a"}, "id": "x", "id": "y"}`, `"id"`},
		{`{"workflow": {"type": "a"}, "retention": "forever"}`, `retention`},
		{`[1]`, `workflow`},
	} {
		_, _, err := Parse([]byte(tc.doc))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrInvalid naming %q", tc.doc, err, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	doc := `{"id": "w1", "name": "n", "retention": 3600, "workflow": {"chain": [
		{"type": "wfe:item", "payload": {"item": "a"}, "queue": "low", "max_retry": 2, "timeout": "30s"},
		{"group": [{"type": "wfe:item", "payload": {"item": "b"}}, {"chain": [{"type": "wfe:item"}]}],
		 "callback": {"type": "wfe:sum"}, "policy": "always"}]}}`
	root, so, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if so.ID != "w1" || so.Name != "n" || so.Retention != time.Hour {
		t.Fatalf("options %+v", so)
	}
	c, _, _ := newEngine(t)
	ch := root.(*ChainNode)
	// wfe:item's payload needs "item": the nested chain's step lacks it.
	if _, err := c.Submit(context.Background(), root, so); err == nil || !strings.Contains(err.Error(), "step 1.m1.0 (wfe:item)") {
		t.Fatalf("err %v, want step 1.m1.0 refused", err)
	}
	ch.steps[1].(*GroupNode).members[1] = item("c")
	info, err := c.Submit(context.Background(), root, so)
	if err != nil {
		t.Fatal(err)
	}
	steps, total, err := c.Steps(context.Background(), info.ID, 0, 10)
	if err != nil || total != 4 {
		t.Fatalf("steps %v total %d: %v", steps, total, err)
	}
	if steps[0].Queue != "low" || steps[0].Status != StepActive || steps[3].Path != "1.cb" || steps[3].Type != "wfe:sum" {
		t.Fatalf("steps %+v", steps)
	}
	var spec taskSpec
	raw, _ := c.rdb.HGet(context.Background(), keys(info.ID)[kSpec], "0").Result()
	if err := json.Unmarshal([]byte(raw), &spec); err != nil || *spec.MaxRetry != 2 || spec.Timeout != 30*time.Second {
		t.Fatalf("spec %s: %v", raw, err)
	}
}

func TestWithResults(t *testing.T) {
	ctx := WithResults(context.Background(), [][]byte{[]byte("1"), nil, []byte("3")}, map[int]string{1: "boom"})
	g, err := Results(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g.Total != 3 || g.Failed != 1 || g.Succeeded != 2 || len(g.Failures) != 1 || g.Failures[0].Member != 1 || g.Failures[0].Error != "boom" {
		t.Fatalf("results %+v", g)
	}
	all, err := g.Results(ctx)
	if err != nil || string(all[0]) != "1" || string(all[1]) != "null" || string(all[2]) != "3" {
		t.Fatalf("results %s, %v", all, err)
	}
	if _, err := Results(WithPrevious(context.Background(), nil)); !errors.Is(err, ErrNotInWorkflow) {
		t.Fatalf("Results under WithPrevious: %v", err)
	}
	if _, err := PreviousAs[int](WithPrevious(context.Background(), nil)); !errors.Is(err, ErrNoResult) {
		t.Fatalf("PreviousAs of no result: %v", err)
	}
}

func TestCheckWritesNothing(t *testing.T) {
	c, mr, _ := newEngine(t)
	n, err := c.Check(context.Background(), Group(item("a"), item("b")).Then(Task(sumType, struct{}{}), Always), SubmitOptions{})
	if err != nil || n != 3 {
		t.Fatalf("check: %d, %v", n, err)
	}
	if _, err := c.Check(context.Background(), Chain(Raw("wfe:nope", nil)), SubmitOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("check of an unknown type: %v", err)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Fatalf("check wrote %v", keys)
	}
}

// A failing callback fails its group and the workflow in its own name,
// whatever member failed before it.
func TestFailingCallbackNamed(t *testing.T) {
	c, _, _ := newEngine(t)
	info := submit(t, c, Group(item("a"), item("b")).Then(Task(sumType, struct{}{}), Always))
	finish(t, c, info.ID, "0.m0", false, "member failed")
	finish(t, c, info.ID, "0.m1", true, "")
	finish(t, c, info.ID, "0.cb", false, "callback failed")
	st := get(t, c, info.ID)
	if st.Status != StatusFailed || st.FailedStep != "0.cb" || st.Error != "callback failed" {
		t.Fatalf("state %+v, want failed at the callback", st)
	}
}

func TestParseTypeErrorsNameTheField(t *testing.T) {
	_, _, err := Parse([]byte(`{"workflow": {"chain": [{"type": 5}]}}`))
	if err == nil || !strings.Contains(err.Error(), `step 0: field "type": want a string, got number`) {
		t.Fatalf("err %v", err)
	}
	_, _, err = Parse([]byte(`{"workflow": {"group": {"type": "a"}}}`))
	if err == nil || !strings.Contains(err.Error(), `field "group": want an array, got object`) {
		t.Fatalf("err %v", err)
	}
	if _, err := newEngineClient(t).Submit(context.Background(), Chain(), SubmitOptions{}); err == nil || err.Error() != "workflow: empty chain: it needs at least one step" {
		t.Fatalf("root error %v", err)
	}
}

func newEngineClient(t *testing.T) *Client {
	c, _, _ := newEngine(t)
	return c
}

// What a step writes after its workflow was cancelled expires with the
// rest of the workflow.
func TestCompletionAfterCancelExpires(t *testing.T) {
	c, mr, _ := newEngine(t)
	info := submit(t, c, Group(item("a"), item("b")))
	if _, err := c.Cancel(context.Background(), info.ID, ""); err != nil {
		t.Fatal(err)
	}
	if r := finish(t, c, info.ID, "0.m0", true, `"late"`); r.code != "stopped" {
		t.Fatalf("reply %+v", r)
	}
	for _, k := range []string{keys(info.ID)[kDone], keys(info.ID)[kRes]} {
		if !mr.Exists(k) || mr.TTL(k) <= 0 {
			t.Errorf("%s: exists %v, ttl %v: want it to expire", k, mr.Exists(k), mr.TTL(k))
		}
	}
}

// Nesting: a callback that is a chain reads its group's members; a group
// whose callback succeeded is no failed member of the group around it; a
// chain ending in a group without a callback has that group's results.
func TestNestedResults(t *testing.T) {
	c, _, _ := newEngine(t)
	ctx := context.Background()
	at := func(id, path string) context.Context {
		return context.WithValue(ctx, stepKey{}, &stepCtx{c: c, id: id, path: path})
	}

	info := submit(t, c, Group(item("a"), item("b")).Then(Chain(Task(sumType, struct{}{}), item("c")), Always))
	finish(t, c, info.ID, "0.m0", true, "1")
	finish(t, c, info.ID, "0.m1", false, "boom")
	if b, err := Previous(at(info.ID, "0.cb.0")); err != nil || string(b) != "[1,null]" {
		t.Fatalf("a chain callback's first step: %s, %v", b, err)
	}
	g, err := Results(at(info.ID, "0.cb.0"))
	if err != nil || g.Total != 2 || g.Failed != 1 {
		t.Fatalf("results in a chain callback: %+v, %v", g, err)
	}
	finish(t, c, info.ID, "0.cb.0", true, "7")
	if b, err := Previous(at(info.ID, "0.cb.1")); err != nil || string(b) != "7" {
		t.Fatalf("the callback chain's second step: %s, %v", b, err)
	}

	info = submit(t, c, Group(Group(item("a"), item("b")).Then(item("cb"), Always), item("c")).Then(Task(sumType, struct{}{}), AllSucceeded))
	finish(t, c, info.ID, "0.m0.m0", false, "boom")
	finish(t, c, info.ID, "0.m0.m1", true, "2")
	finish(t, c, info.ID, "0.m0.cb", true, `"inner"`)
	r := finish(t, c, info.ID, "0.m1", true, "3")
	if got := started(r); len(got) != 1 || got[0] != "0.cb" {
		t.Fatalf("started %v, want the outer callback (the inner group succeeded)", got)
	}
	g, err = Results(at(info.ID, "0.cb"))
	if err != nil || g.Failed != 0 || len(g.Failures) != 0 {
		t.Fatalf("outer results %+v, %v: the inner group succeeded through its callback", g, err)
	}
	if all, err := g.Results(ctx); err != nil || string(all[0]) != `"inner"` || string(all[1]) != "3" {
		t.Fatalf("outer member results %s, %v", all, err)
	}

	info = submit(t, c, Chain(Chain(item("x"), Group(item("a"), item("b"))), item("y")))
	finish(t, c, info.ID, "0.0", true, `"x"`)
	finish(t, c, info.ID, "0.1.m0", true, `"a"`)
	finish(t, c, info.ID, "0.1.m1", true, `"b"`)
	if b, err := Previous(at(info.ID, "1")); err != nil || string(b) != `["a","b"]` {
		t.Fatalf("after a chain ending in a group: %s, %v", b, err)
	}
}

func TestPolicyAlwaysNeedsCallback(t *testing.T) {
	c, _, _ := newEngine(t)
	_, err := c.Submit(context.Background(), Group(item("a")).Then(nil, Always), SubmitOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "without a callback") {
		t.Fatalf("err %v", err)
	}
}

// A worker hears of a cancellation and runs the begin script of the
// cancelled workflow's members, which it would otherwise skip.
func TestCancelTellsWorkers(t *testing.T) {
	c, _, _ := newEngine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); c.RunReconciler(ctx) }()
	info := submit(t, c, Group(item("a"), item("b")))
	c.noteBegan(info.ID)
	if c.mustBegin(ctx, info.ID, "0.m1") {
		t.Fatal("a member of a workflow this process began runs the begin script")
	}
	// The subscription is up once a publish reaches it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := c.rdb.PubSubNumSub(ctx, CancelChannel).Result()
		if err == nil && n[CancelChannel] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no subscriber on the cancel channel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Cancel(ctx, info.ID, ""); err != nil {
		t.Fatal(err)
	}
	for !c.mustBegin(ctx, info.ID, "0.m1") {
		if time.Now().After(deadline) {
			t.Fatal("the cancellation did not reach the worker")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
