package workflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// The test types: add returns N plus the previous result (a number);
// fail always fails for good; sum, a callback, adds its group's results
// and lists the failures.
type addPayload struct {
	N int `json:"n"`
}

type sumResult struct {
	Sum      int                `json:"sum"`
	Total    int                `json:"total"`
	Failed   int                `json:"failed"`
	Failures []workflow.Failure `json:"failures,omitempty"`
}

type failPayload struct {
	Why string `json:"why"`
}

// recorder counts runs per step path, across the types of one test.
type recorder struct {
	mu   sync.Mutex
	runs map[string]int
}

func (r *recorder) ran(ctx context.Context) {
	_, path, _ := workflow.Current(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	r.runs[path]++
}

func (r *recorder) count(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[path]
}

type types struct {
	add  *tasks.Type[addPayload]
	fail *tasks.Type[failPayload]
	sum  *tasks.Type[struct{}]
	rec  *recorder
}

func newTypes() *types {
	rec := &recorder{}
	t := &types{rec: rec}
	t.add = tasks.Define("wft:add", "Adds n to the previous result.",
		func(ctx context.Context, _ tasks.Deps, p addPayload) ([]byte, error) {
			rec.ran(ctx)
			prev, err := workflow.PreviousAs[int](ctx)
			if err != nil && !errors.Is(err, workflow.ErrNoPrevious) {
				return nil, err
			}
			return json.Marshal(prev + p.N)
		}, asynq.MaxRetry(0))
	t.fail = tasks.Define("wft:fail", "Fails.",
		func(ctx context.Context, _ tasks.Deps, p failPayload) ([]byte, error) {
			rec.ran(ctx)
			return nil, fmt.Errorf("%s: %w", p.Why, asynq.SkipRetry)
		})
	t.sum = tasks.Define("wft:sum", "Sums its group's results.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			rec.ran(ctx)
			g, err := workflow.Results(ctx)
			if err != nil {
				return nil, err
			}
			res := sumResult{Total: g.Total, Failed: g.Failed, Failures: g.Failures}
			err = g.Each(ctx, func(_ int, result []byte, failure string) error {
				if failure == "" && len(result) > 0 {
					var n int
					if err := json.Unmarshal(result, &n); err != nil {
						return err
					}
					res.Sum += n
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			return json.Marshal(res)
		}, asynq.MaxRetry(0))
	return t
}

func (ty *types) app() *worker.App {
	return worker.New("wftest").Register(ty.add, ty.fail, ty.sum)
}

// start runs a worker with the test types on url ("": its embedded Redis).
func start(t *testing.T, ty *types, url string) *forgeqtest.Worker {
	env := map[string]string{"WORKER_CONCURRENCY": "20"}
	if url != "" {
		env["REDIS_CONNECTION_URL"] = url
		env["REDIS_EMBEDDED"] = ""
	}
	return forgeqtest.StartWorker(t, ty.app(), forgeqtest.WorkerOptions{Env: env})
}

func wait(t *testing.T, c *workflow.Client, id string) *workflow.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Wait(ctx, id, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("wait for workflow %s: %v (last state %+v)", id, err, st)
	}
	return st
}

func result(t *testing.T, c *workflow.Client, id, path string) string {
	t.Helper()
	b, err := c.Result(context.Background(), id, path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// servers runs f on miniredis and, when one is configured, a real Redis.
func servers(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("miniredis", func(t *testing.T) { f(t, "redis://"+miniredis.RunT(t).Addr()) })
	t.Run("redis", func(t *testing.T) {
		url := redistest.URL(t, 5)
		flush(t, url)
		f(t, url)
	})
}

func TestChainPassesResults(t *testing.T) {
	servers(t, func(t *testing.T, url string) {
		ty := newTypes()
		w := start(t, ty, url)
		c := w.Services().Workflows
		info, err := c.Submit(context.Background(), workflow.Chain(
			workflow.Task(ty.add, addPayload{N: 1}),
			workflow.Task(ty.add, addPayload{N: 10}),
			workflow.Task(ty.add, addPayload{N: 100}),
		), workflow.SubmitOptions{Name: "three adds"})
		if err != nil {
			t.Fatal(err)
		}
		if info.Total != 3 || info.Started != 1 {
			t.Fatalf("info %+v, want 3 steps, 1 started", info)
		}
		st := wait(t, c, info.ID)
		if st.Status != workflow.StatusSucceeded || st.Done != 3 || st.Failed != 0 || st.Name != "three adds" {
			t.Fatalf("state %+v", st)
		}
		if got := result(t, c, info.ID, "2"); got != "111" {
			t.Fatalf("last step's result %s, want 111", got)
		}
		for _, p := range []string{"0", "1", "2"} {
			if n := ty.rec.count(p); n != 1 {
				t.Errorf("step %s ran %d times", p, n)
			}
		}
	})
}

func TestChainStopsAtFailedStep(t *testing.T) {
	servers(t, func(t *testing.T, url string) {
		ty := newTypes()
		w := start(t, ty, url)
		c := w.Services().Workflows
		info, err := c.Submit(context.Background(), workflow.Chain(
			workflow.Task(ty.add, addPayload{N: 1}),
			workflow.Task(ty.fail, failPayload{Why: "disk full"}, asynq.MaxRetry(0)),
			workflow.Task(ty.add, addPayload{N: 100}),
		), workflow.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := wait(t, c, info.ID)
		if st.Status != workflow.StatusFailed || st.FailedStep != "1" || !strings.Contains(st.Error, "disk full") {
			t.Fatalf("state %+v, want failed at step 1 with its error", st)
		}
		time.Sleep(200 * time.Millisecond)
		if n := ty.rec.count("2"); n != 0 {
			t.Fatalf("the step after the failed one ran %d times", n)
		}
		steps, total, err := c.Steps(context.Background(), info.ID, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := []workflow.StepStatus{workflow.StepSucceeded, workflow.StepFailed, workflow.StepWaiting}
		if total != 3 || len(steps) != 3 {
			t.Fatalf("steps %+v total %d", steps, total)
		}
		for i, s := range steps {
			if s.Status != want[i] {
				t.Errorf("step %s: %s, want %s", s.Path, s.Status, want[i])
			}
		}
	})
}

func TestGroupCallbackRunsOnce(t *testing.T) {
	servers(t, func(t *testing.T, url string) {
		ty := newTypes()
		w := start(t, ty, url)
		c := w.Services().Workflows
		members := make([]workflow.Node, 50)
		want := 0
		for i := range members {
			members[i] = workflow.Task(ty.add, addPayload{N: i})
			want += i
		}
		info, err := c.Submit(context.Background(),
			workflow.Group(members...).Then(workflow.Task(ty.sum, struct{}{}), workflow.AllSucceeded),
			workflow.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := wait(t, c, info.ID)
		if st.Status != workflow.StatusSucceeded || st.Done != 51 {
			t.Fatalf("state %+v", st)
		}
		var got sumResult
		if err := json.Unmarshal([]byte(result(t, c, info.ID, "0.cb")), &got); err != nil {
			t.Fatal(err)
		}
		if got.Sum != want || got.Total != 50 || got.Failed != 0 {
			t.Fatalf("callback result %+v, want sum %d of 50", got, want)
		}
		if n := ty.rec.count("0.cb"); n != 1 {
			t.Fatalf("callback ran %d times", n)
		}
	})
}

func TestGroupPolicies(t *testing.T) {
	servers(t, func(t *testing.T, url string) {
		ty := newTypes()
		w := start(t, ty, url)
		c := w.Services().Workflows
		group := workflow.Group(
			workflow.Task(ty.add, addPayload{N: 1}),
			workflow.Task(ty.fail, failPayload{Why: "bad row"}, asynq.MaxRetry(0)),
			workflow.Chain(workflow.Task(ty.add, addPayload{N: 2}), workflow.Task(ty.fail, failPayload{Why: "late"}, asynq.MaxRetry(0))),
		)
		always, err := c.Submit(context.Background(), group.Then(workflow.Task(ty.sum, struct{}{}), workflow.Always), workflow.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		strict, err := c.Submit(context.Background(), workflow.Chain(group.Then(workflow.Task(ty.sum, struct{}{}), workflow.AllSucceeded), workflow.Task(ty.add, addPayload{N: 5})), workflow.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := wait(t, c, always.ID)
		if st.Status != workflow.StatusSucceeded {
			t.Fatalf("always: %+v", st)
		}
		var got sumResult
		if err := json.Unmarshal([]byte(result(t, c, always.ID, "0.cb")), &got); err != nil {
			t.Fatal(err)
		}
		if got.Sum != 1 || got.Failed != 2 || len(got.Failures) != 2 ||
			got.Failures[0].Member != 1 || got.Failures[0].Step != "0.m1" || !strings.Contains(got.Failures[0].Error, "bad row") ||
			got.Failures[1].Member != 2 || got.Failures[1].Step != "0.m2.1" {
			t.Fatalf("always: callback saw %+v", got)
		}
		st = wait(t, c, strict.ID)
		if st.Status != workflow.StatusFailed || (st.FailedStep != "0.m1" && st.FailedStep != "0.m2.1") {
			t.Fatalf("all_succeeded: %+v", st)
		}
		if n := ty.rec.count("0.cb"); n != 1 { // the always one's only
			t.Fatalf("callbacks ran %d times, want 1 (the strict group's never)", n)
		}
		if n := ty.rec.count("1"); n != 0 {
			t.Fatalf("the step after the failed group ran")
		}
	})
}

func flush(t testing.TB, url string) {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// On a Redis Cluster a workflow's keys share one hash slot (so each of
// its scripts is atomic) and it runs as on one node.
func TestCluster(t *testing.T) {
	url := redistest.ClusterURL(t)
	queue := fmt.Sprintf("wfcluster-%d", time.Now().UnixNano())
	ty := newTypes()
	w := forgeqtest.StartWorker(t, ty.app(), forgeqtest.WorkerOptions{Env: map[string]string{
		"REDIS_CONNECTION_URL": url, "REDIS_EMBEDDED": "", "WORKER_QUEUES": queue + "=1",
	}})
	c := w.Services().Workflows
	q := asynq.Queue(queue)
	info, err := c.Submit(context.Background(), workflow.Chain(
		workflow.Task(ty.add, addPayload{N: 1}, q),
		workflow.Group(workflow.Task(ty.add, addPayload{N: 2}, q), workflow.Task(ty.add, addPayload{N: 3}, q)).
			Then(workflow.Task(ty.sum, struct{}{}, q), workflow.AllSucceeded),
	), workflow.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := wait(t, c, info.ID)
	if st.Status != workflow.StatusSucceeded || st.Done != 4 {
		t.Fatalf("state %+v", st)
	}
	var got sumResult
	if err := json.Unmarshal([]byte(result(t, c, info.ID, "1.cb")), &got); err != nil || got.Sum != 3+4 {
		t.Fatalf("callback result %+v (%v), want 3+4 (each member adds to step 0's 1)", got, err)
	}
	rdb := w.Manager().Client()
	base := workflow.KeyPrefix + "{" + info.ID + "}"
	want, err := rdb.ClusterKeySlot(context.Background(), base).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{":shape", ":spec", ":act", ":done", ":cnt", ":res", ":err", ":order"} {
		slot, err := rdb.ClusterKeySlot(context.Background(), base+suffix).Result()
		if err != nil || slot != want {
			t.Errorf("%s%s: slot %d (%v), want %d", base, suffix, slot, err, want)
		}
	}
}

// A group of 100,000 members completes, its callback runs once and sees
// them all: completion is counted in Redis as each member ends.
func TestGroupOf100000(t *testing.T) {
	url := redistest.URL(t, 35)
	flush(t, url)
	ty := newTypes()
	var members atomic.Int64
	member := tasks.Define("wft:member", "No-op member.",
		func(context.Context, tasks.Deps, struct{}) ([]byte, error) { members.Add(1); return nil, nil })
	w := forgeqtest.StartWorker(t, ty.app().Register(member), forgeqtest.WorkerOptions{Env: map[string]string{
		"REDIS_CONNECTION_URL": url, "REDIS_EMBEDDED": "", "WORKER_CONCURRENCY": "50", "LOG_LEVEL": "warn",
	}})
	c := w.Services().Workflows
	nodes := make([]workflow.Node, 100_000)
	for i := range nodes {
		nodes[i] = workflow.Task(member, struct{}{})
	}
	info, err := c.Submit(context.Background(),
		workflow.Group(nodes...).Then(workflow.Task(ty.sum, struct{}{}), workflow.AllSucceeded), workflow.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := c.Wait(ctx, info.ID, 100*time.Millisecond, nil)
	if err != nil || st.Status != workflow.StatusSucceeded || st.Done != 100_001 {
		t.Fatalf("state %+v: %v", st, err)
	}
	var got sumResult
	if err := json.Unmarshal([]byte(result(t, c, info.ID, "0.cb")), &got); err != nil || got.Total != 100_000 || got.Failed != 0 {
		t.Fatalf("callback saw %+v (%v)", got, err)
	}
	if n := ty.rec.count("0.cb"); n != 1 {
		t.Fatalf("callback ran %d times", n)
	}
	if n := members.Load(); n < 100_000 {
		t.Fatalf("%d members ran", n)
	}
}

// A step whose handler panics on its last attempt fails the workflow,
// naming the panic; the worker's own middleware still sees the panic.
func TestPanicFailsStep(t *testing.T) {
	ty := newTypes()
	boom := tasks.Define("wft:boom", "Panics.",
		func(context.Context, tasks.Deps, struct{}) ([]byte, error) { panic("kaboom") }, asynq.MaxRetry(0))
	w := forgeqtest.StartWorker(t, ty.app().Register(boom), forgeqtest.WorkerOptions{})
	c := w.Services().Workflows
	info, err := c.Submit(context.Background(), workflow.Chain(workflow.Task(boom, struct{}{}), workflow.Task(ty.add, addPayload{N: 1})), workflow.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := wait(t, c, info.ID)
	if st.Status != workflow.StatusFailed || st.FailedStep != "0" || !strings.Contains(st.Error, "handler panic: kaboom") {
		t.Fatalf("state %+v", st)
	}
	if !strings.Contains(w.Logs(), `"outcome":"archived"`) {
		t.Fatalf("the worker's log has no archived outcome for the panic:\n%s", w.Logs())
	}
	if n := ty.rec.count("1"); n != 0 {
		t.Fatal("the step after the panic ran")
	}
}
