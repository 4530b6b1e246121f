package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// wfWorkerPackage is the worker program of the workflow tests: cmd/worker
// plus the test-only types below.
const wfWorkerPackage = "github.com/forgeq/forgeq/internal/faults/testdata/wfworker"

// The test-only types of testdata/wfworker. A member sleeps and returns
// its index; collect, a group's callback, returns what Results told it
// (wfCollected); after returns the result of the stage before it.
const (
	typeWFMember  = "faultwf:member"
	typeWFCollect = "faultwf:collect"
	typeWFAfter   = "faultwf:after"
)

// The workflow middleware's log lines for a delivery of a step that has
// already finished, skipped or run again, and the reconciler's for a step
// whose task it enqueues because it is missing.
const (
	msgWFDuplicate   = "workflow step skipped: already finished (a duplicate delivery)"
	msgWFCountedOnce = "workflow step finished again: counted once"
	msgWFMissing     = "workflow: enqueuing a step whose task is missing"
)

// wfMemberArgs is the payload of faultwf:member.
type wfMemberArgs struct {
	Index   int `json:"index"`
	SleepMS int `json:"sleep_ms"`
}

// wfCollected is the result of faultwf:collect.
type wfCollected struct {
	Total     int `json:"total"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Seen      int `json:"seen"`
	Distinct  int `json:"distinct"`
	IndexSum  int `json:"index_sum"`
}

// startWFWorker runs testdata/wfworker on url without its web process,
// retrying a failed task after a second (a lease recovered from a dead
// worker is a retry), with env after that.
func startWFWorker(tb testing.TB, url string, env ...string) *worker {
	tb.Helper()
	all := append([]string{"HTTP_ADDR=off", "WORKER_RETRY_DELAY_MIN=1s", "WORKER_RETRY_DELAY_MAX=1s"}, env...)
	return startWorkerBin(tb, proctest.Build(tb, wfWorkerPackage), url, all...)
}

// wfClient returns a workflow client on rdb that checks steps against the
// task catalogue the workers publish, as the enqueue command does.
func wfClient(rdb redis.UniversalClient) *workflow.Client {
	return workflow.NewClient(rdb, workflow.Options{Types: workflow.CatalogTypes(nil, tasks.NewCatalog(rdb))})
}

// wfKept is the retention of the tests' steps: their tasks stay readable
// (and can be delivered again) once completed. A type's own retention is
// not in the catalogue the test's client checks steps against.
var wfKept = asynq.Retention(time.Hour)

// wfMember returns a faultwf:member step, kept an hour once completed.
func wfMember(tb testing.TB, index, sleepMS int, opts ...asynq.Option) workflow.Node {
	tb.Helper()
	p, err := json.Marshal(wfMemberArgs{Index: index, SleepMS: sleepMS})
	if err != nil {
		tb.Fatal(err)
	}
	return workflow.Raw(typeWFMember, p, append([]asynq.Option{wfKept}, opts...)...)
}

// waitWorkflow waits up to timeout until workflow id is final and returns
// its state.
func waitWorkflow(tb testing.TB, flows *workflow.Client, id string, timeout time.Duration) *workflow.State {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := flows.Wait(ctx, id, 200*time.Millisecond, nil)
	if err != nil {
		tb.Fatalf("workflow %s not final within %v: %v; last state %+v", id, timeout, err, st)
	}
	return st
}

// getWorkflow returns the state of workflow id.
func getWorkflow(tb testing.TB, flows *workflow.Client, id string) *workflow.State {
	tb.Helper()
	st, err := flows.Get(context.Background(), id)
	if err != nil {
		tb.Fatalf("get workflow %s: %v", id, err)
	}
	return st
}

// checkSucceeded checks that workflow st succeeded with every one of its
// total steps counted once, and that Steps lists each as succeeded.
func checkSucceeded(t *testing.T, flows *workflow.Client, st *workflow.State, total int) {
	t.Helper()
	if st.Status != workflow.StatusSucceeded || st.Total != total || st.Done != total || st.Failed != 0 {
		t.Errorf("workflow %s: status %s, done %d of %d (%d failed); want succeeded, %d of %d, none failed",
			st.ID, st.Status, st.Done, st.Total, st.Failed, total, total)
	}
	steps, n, err := flows.Steps(context.Background(), st.ID, 0, total+1)
	if err != nil {
		t.Fatalf("steps of %s: %v", st.ID, err)
	}
	if n != total || len(steps) != total {
		t.Errorf("workflow %s lists %d steps (%d returned), want %d", st.ID, n, len(steps), total)
	}
	for _, s := range steps {
		if s.Status != workflow.StepSucceeded {
			t.Errorf("workflow %s: step %s is %s (%s), want succeeded", st.ID, s.Path, s.Status, s.Error)
		}
	}
}

// collectedAt returns the result of the faultwf:collect (or faultwf:after)
// step at path.
func collectedAt(tb testing.TB, flows *workflow.Client, id, path string) wfCollected {
	tb.Helper()
	b, err := flows.Result(context.Background(), id, path)
	if err != nil {
		tb.Fatalf("result of %s step %s: %v", id, path, err)
	}
	var c wfCollected
	if err := json.Unmarshal(b, &c); err != nil {
		tb.Fatalf("result of %s step %s: %q: %v", id, path, b, err)
	}
	return c
}

// wfLines returns the lines of procs' logs with msg about step path of
// workflow id.
func wfLines(msg, id, path string, procs ...*worker) []map[string]any {
	var out []map[string]any
	for _, p := range procs {
		for _, l := range p.LogLinesWithMsg(msg) {
			if l["workflow_id"] == id && l["step"] == path {
				out = append(out, l)
			}
		}
	}
	return out
}

// TestWorkflowSIGKILL kills worker A with SIGKILL while it runs members
// of a 200-member group (a callback, then one more step, after it), with
// worker B running the others. Once the leases of A's members have
// expired a replacement worker starts, and they run again: the workflow
// succeeds, every step counted once, its callback and the step after it
// run exactly once, and the callback sees all 200 members. It takes a
// little more than a minute, most of it waiting for asynq's lease expiry.
func TestWorkflowSIGKILL(t *testing.T) {
	t.Parallel()

	_, url := secureRedis(t)
	rdb := redisClient(t, url)
	in := asynq.NewInspectorFromRedisClient(rdb)
	flows := wfClient(rdb)
	env := []string{"WORKER_CONCURRENCY=8", "WORKER_QUEUES=default=1"}
	a := startWFWorker(t, url, env...)
	b := startWFWorker(t, url, env...)

	const members = 200
	nodes := make([]workflow.Node, members)
	for i := range nodes {
		nodes[i] = wfMember(t, i, 300)
	}
	root := workflow.Chain(
		workflow.Group(nodes...).Then(workflow.Raw(typeWFCollect, nil, wfKept), workflow.AllSucceeded),
		workflow.Raw(typeWFAfter, nil, wfKept),
	)
	info, err := flows.Submit(context.Background(), root, workflow.SubmitOptions{ID: "sigkill"})
	if err != nil {
		t.Fatal(err)
	}
	const total = members + 2
	if info.Total != total || info.Started != members {
		t.Fatalf("submitted %+v, want %d steps, the %d members started", info, total, members)
	}
	callback, next := workflow.TaskID(info.ID, "0.cb"), workflow.TaskID(info.ID, "1")

	// A dies in the middle of the group: it has finished some members,
	// holds others, and more wait in the queue.
	if !waitUntil(30*time.Second, 5*time.Millisecond, func() bool { return len(a.LogLinesWithMsg(msgDone)) >= 16 }) {
		t.Fatalf("A did not finish 16 members within 30s")
	}
	a.Kill()
	killed := time.Now()

	// B runs the members left in the queue; A's stay active until their
	// lease expires, which tells them from B's.
	var orphans []string
	if !waitUntil(90*time.Second, 250*time.Millisecond, func() bool {
		q, err := in.GetQueueInfo("default")
		if err != nil || q.Pending+q.Scheduled+q.Retry > 0 {
			return false
		}
		active, err := in.ListActiveTasks("default", asynq.PageSize(100))
		if err != nil {
			return false
		}
		orphans = orphans[:0]
		for _, ti := range active {
			if !ti.IsOrphaned {
				return false
			}
			orphans = append(orphans, ti.ID)
		}
		return true
	}) {
		t.Fatalf("the members A held never showed as orphaned; state %+v", getWorkflow(t, flows, info.ID))
	}
	if len(orphans) == 0 {
		t.Fatal("A held no member when it was killed: the members are too short for this machine")
	}
	slices.Sort(orphans)
	st := getWorkflow(t, flows, info.ID)
	t.Logf("A killed holding %d members; %v later B had done the rest: %d of %d steps done",
		len(orphans), time.Since(killed).Round(time.Second), st.Done, st.Total)
	// A member A had recorded just before dying may still be active.
	if st.Status != workflow.StatusRunning || st.Done < members-len(orphans) || st.Done >= members {
		t.Errorf("while A's members are orphaned: status %s, done %d; want running, %d to %d",
			st.Status, st.Done, members-len(orphans), members-1)
	}

	// The replacement's recoverer takes the orphans back when it starts,
	// once their lease ended 30s ago (B's may do it first).
	eligible, err := leaseEligible(rdb, orphans)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(eligible) + time.Second)
	c := startWFWorker(t, url, env...)
	st = waitWorkflow(t, flows, info.ID, 90*time.Second)
	t.Logf("workflow %s %v after the kill", st.Status, st.Finished.Sub(killed).Round(time.Second))
	checkSucceeded(t, flows, st, total)

	want := wfCollected{Total: members, Succeeded: members, Seen: members, Distinct: members, IndexSum: members * (members - 1) / 2}
	if diff := cmp.Diff(want, collectedAt(t, flows, info.ID, "0.cb")); diff != "" {
		t.Errorf("the callback's view of its group (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, collectedAt(t, flows, info.ID, "1")); diff != "" {
		t.Errorf("the step after the group read (-want +got):\n%s", diff)
	}

	l := readLedger(t, a.Proc, b.Proc, c.Proc)
	t.Log(l.summary())
	l.checkNoOverlap(t)
	if n := l.count(msgFailed) + l.count(msgInterrupted); n != 0 {
		t.Errorf("%d handler calls failed or were interrupted, want none", n)
	}
	// The callback and the step after the group: exactly once.
	l.checkDoneOnce(t, []string{callback, next})
	var once []string
	for i := range members {
		path := fmt.Sprintf("0.m%d", i)
		id := workflow.TaskID(info.ID, path)
		if !slices.Contains(orphans, id) {
			once = append(once, id)
			continue
		}
		checkOrphan(t, l, a, []*worker{b, c}, info.ID, path, killed)
	}
	l.checkDoneOnce(t, once)
	for _, w := range []*worker{b, c} {
		if code := w.stop(t, 30*time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0", w, code)
		}
	}
}

// checkOrphan checks what became of the member at path that killed worker
// a held: it runs again in one of the others, once, after the kill, as
// the retry of a recovered task; or, when a had run it to the end and
// recorded it before dying (asynq had not yet marked it completed), the
// others skip its recovered delivery as a duplicate. Either way the
// ledger shows one run, or two when a died between its run and its
// record.
func checkOrphan(t *testing.T, l ledger, a *worker, others []*worker, wfID, path string, killed time.Time) {
	t.Helper()
	id := workflow.TaskID(wfID, path)
	var byA, later []run
	for _, r := range l.done(id) {
		if r.proc == a.String() {
			byA = append(byA, r)
		} else {
			later = append(later, r)
		}
	}
	recovered := 0
	for _, w := range others {
		for _, line := range w.LogLinesWithMsg(msgRecovered) {
			if line["task_id"] == id {
				recovered++
			}
		}
	}
	skipped := len(wfLines(msgWFDuplicate, wfID, path, others...))
	switch {
	case len(later) == 1:
		if r := later[0]; r.retry < 1 || !r.start.After(killed) {
			t.Errorf("member %s held by A: run %v, want one after the kill, as a retry", id, r)
		}
		if recovered != 1 {
			t.Errorf("member %s held by A ran again, with %d %q lines, want 1", id, recovered, msgRecovered)
		}
	case len(later) == 0 && len(byA) == 1 && skipped == 1:
		t.Logf("member %s: A finished it just before it died; its recovered delivery was skipped as a duplicate", id)
	default:
		t.Errorf("member %s held by A: runs by A %v, by the others %v, %d duplicate deliveries skipped; want one run after the kill, or A's and a skipped duplicate",
			id, byA, later, skipped)
	}
}

// TestWorkflowReconcilerEnqueuesLostStep leaves a chain's second step
// marked active with no task to run it, the state a worker killed between
// recording step 0 and enqueuing step 1 leaves: step 1's task is deleted
// from its paused queue before any worker takes it. The reconciler of one
// of the two workers enqueues it once the step has been active for 15s,
// and the chain completes, each step run once. It takes 15 to 35s.
func TestWorkflowReconcilerEnqueuesLostStep(t *testing.T) {
	t.Parallel()

	_, url := secureRedis(t)
	rdb := redisClient(t, url)
	in := asynq.NewInspectorFromRedisClient(rdb)
	flows := wfClient(rdb)
	if err := in.PauseQueue("held"); err != nil {
		t.Fatal(err)
	}
	env := []string{"WORKER_CONCURRENCY=4", "WORKER_QUEUES=default=1,held=1"}
	a := startWFWorker(t, url, env...)
	b := startWFWorker(t, url, env...)

	root := workflow.Chain(wfMember(t, 0, 0), wfMember(t, 1, 0, asynq.Queue("held")), wfMember(t, 2, 0))
	info, err := flows.Submit(context.Background(), root, workflow.SubmitOptions{ID: "lost-step"})
	if err != nil {
		t.Fatal(err)
	}
	lost := workflow.TaskID(info.ID, "1")
	if !waitUntil(30*time.Second, 10*time.Millisecond, func() bool {
		ti, err := in.GetTaskInfo("held", lost)
		return err == nil && ti.State == asynq.TaskStatePending
	}) {
		t.Fatalf("step 1's task %s never waited in the paused queue", lost)
	}
	if err := in.DeleteTask("held", lost); err != nil {
		t.Fatal(err)
	}
	if err := in.UnpauseQueue("held"); err != nil {
		t.Fatal(err)
	}
	steps, _, err := flows.Steps(context.Background(), info.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]workflow.StepStatus, len(steps))
	for i, s := range steps {
		got[i] = s.Status
	}
	if diff := cmp.Diff([]workflow.StepStatus{workflow.StepSucceeded, workflow.StepActive, workflow.StepWaiting}, got); diff != "" {
		t.Fatalf("steps once step 1's task is lost (-want +got):\n%s", diff)
	}

	st := waitWorkflow(t, flows, info.ID, 60*time.Second)
	t.Logf("workflow %s %v after it was submitted", st.Status, st.Finished.Sub(st.Created).Round(time.Second))
	checkSucceeded(t, flows, st, 3)

	ids := []string{workflow.TaskID(info.ID, "0"), lost, workflow.TaskID(info.ID, "2")}
	l := readLedger(t, a.Proc, b.Proc)
	l.checkDoneOnce(t, ids)
	// Step 1 ran only after the reconciler's wait: 15s after step 0
	// ended (step 0 logs its end before the middleware records it,
	// which starts step 1).
	if d0, d1 := l.done(ids[0]), l.done(lost); len(d0) == 1 && len(d1) == 1 {
		if gap := d1[0].start.Sub(d0[0].end); gap < 15*time.Second-10*time.Millisecond {
			t.Errorf("step 1 began %v after step 0 ended, before the reconciler's 15s: not the reconciler's doing", gap)
		}
	}
	if lines := wfLines(msgWFMissing, info.ID, "1", a, b); len(lines) != 1 {
		t.Errorf("the workers logged %q for step 1 %d times, want once: %v", msgWFMissing, len(lines), lines)
	}
}

// TestWorkflowDuplicateDelivery delivers finished steps' tasks again, as
// at-least-once delivery may. First a group member, while the group still
// waits for its other member (held in a paused queue), to a worker that
// has begun no step of the workflow: it skips the duplicate without
// calling the handler, the workflow's counts do not move and the callback
// waits. Then, once the workflow has succeeded, that member and the
// group's callback: the callback is skipped; the member is skipped too,
// or runs again and is counted once (a worker that began a step of the
// workflow in the last 5s lets a member through without reading the
// record: docs/workflows.md). Nothing changes either way.
func TestWorkflowDuplicateDelivery(t *testing.T) {
	t.Parallel()

	_, url := secureRedis(t)
	rdb := redisClient(t, url)
	in := asynq.NewInspectorFromRedisClient(rdb)
	flows := wfClient(rdb)
	if err := in.PauseQueue("held"); err != nil {
		t.Fatal(err)
	}
	env := []string{"WORKER_CONCURRENCY=4", "WORKER_QUEUES=default=1,held=1"}
	a := startWFWorker(t, url, env...)

	root := workflow.Chain(
		workflow.Group(wfMember(t, 0, 0), wfMember(t, 1, 0, asynq.Queue("held"))).
			Then(workflow.Raw(typeWFCollect, nil, wfKept), workflow.AllSucceeded),
		workflow.Raw(typeWFAfter, nil, wfKept),
	)
	info, err := flows.Submit(context.Background(), root, workflow.SubmitOptions{ID: "duplicate"})
	if err != nil {
		t.Fatal(err)
	}
	m0, m1 := workflow.TaskID(info.ID, "0.m0"), workflow.TaskID(info.ID, "0.m1")
	callback, next := workflow.TaskID(info.ID, "0.cb"), workflow.TaskID(info.ID, "1")
	waitCompleted(t, in, "default", []string{m0}, 30*time.Second)
	before := getWorkflow(t, flows, info.ID)
	if before.Status != workflow.StatusRunning || before.Done != 1 {
		t.Fatalf("after member 0: status %s, done %d; want running, 1", before.Status, before.Done)
	}

	// Member 0 again while member 1 waits, to a worker fresh to the
	// workflow: skipped, and the group still waits for member 1.
	if code := a.stop(t, 30*time.Second); code != 0 {
		t.Errorf("%s exited %d after SIGTERM, want 0", a, code)
	}
	b := startWFWorker(t, url, env...)
	redeliver(t, rdb, in, "default", m0)
	waitWFLines(t, []*worker{b}, msgWFDuplicate, info.ID, "0.m0", 1)
	if diff := cmp.Diff(before, getWorkflow(t, flows, info.ID)); diff != "" {
		t.Errorf("workflow state changed with the duplicate of member 0 (-before +after):\n%s", diff)
	}
	l := readLedger(t, a.Proc, b.Proc)
	l.checkDoneOnce(t, []string{m0})
	if rs := l[callback]; len(rs) != 0 {
		t.Errorf("the callback ran before member 1 did: %v", rs)
	}

	if err := in.UnpauseQueue("held"); err != nil {
		t.Fatal(err)
	}
	st := waitWorkflow(t, flows, info.ID, 30*time.Second)
	checkSucceeded(t, flows, st, 4)
	want := wfCollected{Total: 2, Succeeded: 2, Seen: 2, Distinct: 2, IndexSum: 1}
	if diff := cmp.Diff(want, collectedAt(t, flows, info.ID, "0.cb")); diff != "" {
		t.Errorf("the callback's view of its group (-want +got):\n%s", diff)
	}

	// Member 0 and the callback again, once the workflow has succeeded.
	redeliver(t, rdb, in, "default", m0)
	redeliver(t, rdb, in, "default", callback)
	waitWFLines(t, []*worker{b}, msgWFDuplicate, info.ID, "0.cb", 1)
	var skipped, again int
	if !waitUntil(10*time.Second, 10*time.Millisecond, func() bool {
		skipped = len(wfLines(msgWFDuplicate, info.ID, "0.m0", b))
		again = len(wfLines(msgWFCountedOnce, info.ID, "0.m0", b))
		return skipped+again == 2
	}) {
		t.Fatalf("member 0's second duplicate: %d skipped, %d counted once; want one of them", skipped-1, again)
	}
	t.Logf("member 0's duplicate after the workflow succeeded: skipped %d, ran and counted once %d", skipped-1, again)
	if diff := cmp.Diff(st, getWorkflow(t, flows, info.ID)); diff != "" {
		t.Errorf("workflow state changed with the duplicates after it finished (-before +after):\n%s", diff)
	}
	l = readLedger(t, a.Proc, b.Proc)
	l.checkDoneOnce(t, []string{m1, callback, next})
	if n := len(l.done(m0)); n != 1+again {
		t.Errorf("member 0 ran %d times, want %d: %v", n, 1+again, l[m0])
	}
	if diff := cmp.Diff(want, collectedAt(t, flows, info.ID, "0.cb")); diff != "" {
		t.Errorf("the callback's result after the duplicates (-want +got):\n%s", diff)
	}
}

// redeliver enqueues the task id of queue once more, with its type and
// payload, as a second delivery of it: it deletes the completed task
// first, since asynq refuses an id that exists, and waits until the new
// one has completed.
func redeliver(t *testing.T, rdb redis.UniversalClient, in *asynq.Inspector, queue, id string) {
	t.Helper()
	ti, err := in.GetTaskInfo(queue, id)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	if ti.State != asynq.TaskStateCompleted {
		t.Fatalf("task %s is %v, want completed", id, ti.State)
	}
	if err := in.DeleteTask(queue, id); err != nil {
		t.Fatalf("delete task %s: %v", id, err)
	}
	c := asynq.NewClientFromRedisClient(rdb)
	_, err = c.EnqueueContext(context.Background(), asynq.NewTask(ti.Type, ti.Payload),
		asynq.TaskID(id), asynq.Queue(queue), asynq.MaxRetry(ti.MaxRetry), wfKept)
	if err != nil {
		t.Fatalf("enqueue task %s again: %v", id, err)
	}
	waitCompleted(t, in, queue, []string{id}, 30*time.Second)
}

// waitWFLines waits until procs have logged msg n times about step path
// of workflow id, and fails the test unless they did, exactly.
func waitWFLines(t *testing.T, procs []*worker, msg, id, path string, n int) {
	t.Helper()
	count := func() int { return len(wfLines(msg, id, path, procs...)) }
	if !waitUntil(10*time.Second, 10*time.Millisecond, func() bool { return count() >= n }) || count() != n {
		t.Fatalf("%q logged %d times for step %s, want %d", msg, count(), path, n)
	}
}
