package workflow_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// Group members of a type capped at one at a time are postponed, not
// failed: on their only attempt (MaxRetry(0)) too, and no postponement is
// recorded as the step's outcome. Each runs once, one at a time, and the
// callback sees them all succeeded.
func TestGroupOfCappedType(t *testing.T) {
	servers(t, func(t *testing.T, url string) {
		ty := newTypes()
		var running, most atomic.Int32
		one := tasks.Define("wft:one", "Returns n, one at a time.",
			func(ctx context.Context, _ tasks.Deps, p addPayload) ([]byte, error) {
				ty.rec.ran(ctx)
				n := running.Add(1)
				defer running.Add(-1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(30 * time.Millisecond)
				return json.Marshal(p.N)
			}, asynq.MaxRetry(0)).MaxConcurrent(1)
		env := map[string]string{"WORKER_CONCURRENCY": "20"}
		if url != "" {
			env["REDIS_CONNECTION_URL"] = url
			env["REDIS_EMBEDDED"] = ""
		}
		w := forgeqtest.StartWorker(t, worker.New("wftest").Register(ty.add, ty.fail, ty.sum, one),
			forgeqtest.WorkerOptions{Env: env})
		c := w.Services().Workflows
		members := make([]workflow.Node, 8)
		want := 0
		for i := range members {
			members[i] = workflow.Task(one, addPayload{N: i})
			want += i
		}
		info, err := c.Submit(context.Background(),
			workflow.Group(members...).Then(workflow.Task(ty.sum, struct{}{}), workflow.AllSucceeded),
			workflow.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := wait(t, c, info.ID)
		if st.Status != workflow.StatusSucceeded || st.Done != 9 || st.Failed != 0 {
			t.Fatalf("state %+v", st)
		}
		var got sumResult
		if err := json.Unmarshal([]byte(result(t, c, info.ID, "0.cb")), &got); err != nil {
			t.Fatal(err)
		}
		if got.Sum != want || got.Total != 8 || got.Failed != 0 {
			t.Fatalf("callback result %+v, want sum %d of 8", got, want)
		}
		if m := most.Load(); m != 1 {
			t.Errorf("%d members ran at once, want 1", m)
		}
		for i := range members {
			if n := ty.rec.count("0.m" + string(rune('0'+i))); n != 1 {
				t.Errorf("member %d ran %d times, want 1", i, n)
			}
		}
	})
}
