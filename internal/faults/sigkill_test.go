package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
)

// asynq v0.26's constants for a task whose worker died: the lease it holds
// is extended to now+leaseDuration on every heartbeat, the recoverer of
// every server runs once at start and then every recovererInterval and
// takes back the tasks whose lease ended more than leaseCutoff ago, and
// puts them in the retry state with the default retry delay of a first
// retry, 15 to 44 s; the forwarder moves due retries to pending every
// forwarderInterval.
const (
	recovererInterval = time.Minute
	leaseCutoff       = 30 * time.Second
	maxFirstRetry     = 45 * time.Second
	forwarderInterval = 5 * time.Second
	heartbeatInterval = 5 * time.Second // how often a server extends its leases
)

// msgRecovered is the worker's log line for a task that asynq's recoverer
// took back from a dead worker, when it runs again.
const msgRecovered = "task recovered after its worker died"

// TestSIGKILLMidTask kills worker A with SIGKILL while it runs long
// data:process tasks; worker B, already running, finishes them after their
// lease has expired, once each, as a retry, and logs and counts each
// recovery. It takes about two minutes, most of it waiting for asynq's
// recoverer.
func TestSIGKILLMidTask(t *testing.T) {
	t.Parallel()

	_, url := secureRedis(t)
	rdb := redisClient(t, url)
	in := asynq.NewInspectorFromRedisClient(rdb)
	const concurrency = 4
	env := []string{"WORKER_CONCURRENCY=" + fmt.Sprint(concurrency), "WORKER_QUEUES=default=1", "HTTP_ADDR=off"}

	a := startWorker(t, url, env...)
	// Four seconds of one core each: four at once on this machine take
	// longer, so they are all still running when B has started.
	work := workFor(4 * time.Second)
	ids := enqueueFile(t, url, processTasks("long", concurrency, func(int) int { return work }))
	if !waitUntil(30*time.Second, 20*time.Millisecond, func() bool {
		q, err := in.GetQueueInfo("default")
		return err == nil && q.Active == concurrency
	}) {
		t.Fatalf("A never ran all %d tasks at once", concurrency)
	}

	// B starts while A holds every task, so it has nothing to take; its
	// recoverer runs at start and every minute from then on. A dies right
	// after: its last lease extension is (almost always) older than B's
	// start, so B's first periodic recovery takes the tasks back.
	bSpawn := time.Now()
	// B serves /metrics, for its count of recovered tasks.
	b := startWorker(t, url, env[:2]...)
	bStarted := time.Now()
	a.Kill()
	killed := time.Now()
	t.Logf("B started in %v; A killed %v after B's start was seen",
		bStarted.Sub(bSpawn).Round(time.Millisecond), killed.Sub(bStarted).Round(time.Millisecond))

	for id, info := range taskInfos(t, in, "default", ids) {
		if info.State != asynq.TaskStateActive {
			t.Fatalf("task %s is %v at the kill, want active: the tasks are too short for this machine", id, info.State)
		}
	}
	eligible, err := leaseEligible(rdb, ids)
	if err != nil {
		t.Fatal(err)
	}
	// B's periodic recoveries run at S+1m, S+2m, ... for some start S
	// between bSpawn and bStarted: the first that comes at or after
	// eligible takes the tasks back.
	recoverBy := bStarted.Add(recovererInterval)
	if eligible.After(bSpawn.Add(recovererInterval)) {
		recoverBy = bStarted.Add(2 * recovererInterval)
	}
	deadline := recoverBy.Add(maxFirstRetry + forwarderInterval + 30*time.Second)
	t.Logf("leases of the killed tasks may be recovered from %v after the kill; B recovers them by %v, so waiting up to %v",
		eligible.Sub(killed).Round(time.Second), recoverBy.Sub(killed).Round(time.Second), deadline.Sub(killed).Round(time.Second))

	// B works meanwhile: fresh tasks complete while A's stay active.
	fresh := enqueueFile(t, url, processTasks("fresh", concurrency, func(int) int { return workFor(50 * time.Millisecond) }))
	waitCompleted(t, in, "default", fresh, 60*time.Second)
	for id, info := range taskInfos(t, in, "default", ids) {
		if info.State != asynq.TaskStateActive {
			t.Errorf("task %s is %v %v after the kill, before its lease expired; want still active",
				id, info.State, time.Since(killed).Round(time.Millisecond))
		}
	}

	// Watch the killed tasks until B has completed them.
	var (
		orphaned  = map[string]time.Duration{}
		requeued  = map[string]time.Duration{}
		completed = map[string]time.Duration{}
	)
	for len(completed) < len(ids) && time.Now().Before(deadline) {
		since := time.Since(killed)
		// Only the listing of active tasks tells an orphan: a task whose
		// lease has expired and that no recoverer has taken back yet.
		active, err := in.ListActiveTasks("default")
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range active {
			if _, ok := orphaned[info.ID]; !ok && info.IsOrphaned {
				orphaned[info.ID] = since
			}
		}
		for id, info := range taskInfos(t, in, "default", ids) {
			if _, ok := requeued[id]; !ok && info.State != asynq.TaskStateActive {
				requeued[id] = since
			}
			if _, ok := completed[id]; !ok && info.State == asynq.TaskStateCompleted {
				completed[id] = since
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("after the kill: orphaned (lease expired) %v; taken back by B's recoverer %v; completed %v",
		sortedDurations(orphaned), sortedDurations(requeued), sortedDurations(completed))
	if len(completed) < len(ids) {
		t.Fatalf("%d of %d killed tasks completed within %v of the kill", len(completed), len(ids), deadline.Sub(killed).Round(time.Second))
	}
	for id, d := range requeued {
		if at := killed.Add(d); at.Before(eligible.Add(-time.Second)) {
			t.Errorf("task %s left the active state %v after the kill, before its lease could have expired (%v)",
				id, d, eligible.Sub(killed))
		}
	}

	infos := taskInfos(t, in, "default", ids)
	for _, id := range ids {
		info := infos[id]
		if info.Retried < 1 {
			t.Errorf("task %s: retried %d, want at least 1 (a lost lease counts as a retry)", id, info.Retried)
		}
		if !strings.Contains(info.LastErr, "lease expired") {
			t.Errorf("task %s: last error %q, want asynq's lease expiry", id, info.LastErr)
		}
		var res tasks.ProcessDataResult
		if err := json.Unmarshal(info.Result, &res); err != nil || res.Value != tasks.Digest(id, work) {
			t.Errorf("task %s: result %s (%v), want the digest", id, info.Result, err)
		}
	}

	l := readLedger(t, a.Proc, b.Proc)
	t.Log(l.summary())
	l.checkDoneOnce(t, append(slices.Clone(ids), fresh...))
	l.checkNoOverlap(t)
	for _, id := range ids {
		for _, r := range l[id] {
			if r.proc == a.String() {
				t.Errorf("A logged task %s, which it was killed in: %v", id, r)
			}
		}
		for _, r := range l.done(id) {
			if r.retry < 1 || !r.start.After(killed) {
				t.Errorf("task %s: B's run %v, want one started after the kill, as retry 1 or more", id, r)
			}
		}
	}
	checkRecoveries(t, b, ids, killed)
	if code := b.stop(t, 30*time.Second); code != 0 {
		t.Errorf("B exited %d after SIGTERM, want 0", code)
	}
}

// leaseEligible returns the time from which asynq's recoverer takes back
// the tasks ids of queue "default", all of them, from their lease scores
// (the lease's end, in Unix seconds).
func leaseEligible(rdb *redis.Client, ids []string) (time.Time, error) {
	zs, err := rdb.ZRangeWithScores(context.Background(), "asynq:{default}:lease", 0, -1).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("read leases: %w", err)
	}
	var last int64
	found := 0
	for _, z := range zs {
		if m, _ := z.Member.(string); slices.Contains(ids, m) {
			last = max(last, int64(z.Score))
			found++
		}
	}
	if found != len(ids) {
		return time.Time{}, fmt.Errorf("%d of %d tasks hold a lease: %v", found, len(ids), zs)
	}
	return time.Unix(last, 0).Add(leaseCutoff), nil
}

// sortedDurations formats the durations of m, rounded, in increasing order.
func sortedDurations(m map[string]time.Duration) string {
	ds := make([]time.Duration, 0, len(m))
	for _, d := range m {
		ds = append(ds, d.Round(100*time.Millisecond))
	}
	slices.Sort(ds)
	return fmt.Sprint(ds)
}

// checkRecoveries checks that w logged one recovery line for each of ids,
// and no other, whose orphaned_for is within the precision the worker
// documents, and that its /metrics counts them.
func checkRecoveries(t *testing.T, w *worker, ids []string, killed time.Time) {
	t.Helper()
	seen := map[string]bool{}
	for _, l := range w.LogLinesWithMsg(msgRecovered) {
		id, _ := l["task_id"].(string)
		if !slices.Contains(ids, id) || seen[id] {
			t.Errorf("%s: unexpected %q line: %v", w, msgRecovered, l)
			continue
		}
		seen[id] = true
		if l["task_type"] != tasks.TypeProcessData || l["queue"] != "default" {
			t.Errorf("%s: task %s recovered with type %v and queue %v, want %s on default", w, id, l["task_type"], l["queue"], tasks.TypeProcessData)
		}
		ts, _ := l["time"].(string)
		at, err := time.Parse(logTime, ts)
		orphaned, ok := l["orphaned_for"].(float64)
		if err != nil || !ok {
			t.Errorf("%s: %q line without time or orphaned_for: %v", w, msgRecovered, l)
			continue
		}
		// orphaned_for counts from A's last lease extension, at most one
		// heartbeat before the kill, and undercounts by at most one
		// recoverer interval (the lease may have expired just after a
		// recovery ran) and a second (asynq stores the recovery in whole
		// seconds).
		since := at.Sub(killed)
		lo := max(since-recovererInterval-time.Second, 2*leaseCutoff)
		hi := since + heartbeatInterval + time.Second
		if d := time.Duration(orphaned * float64(time.Second)); d < lo || d > hi {
			t.Errorf("%s: task %s orphaned_for %v, %v after the kill; want within [%v, %v]", w, id, d.Round(time.Millisecond),
				since.Round(time.Millisecond), lo.Round(time.Millisecond), hi.Round(time.Millisecond))
		}
	}
	t.Logf("%s logged %q for %d tasks", w, msgRecovered, len(seen))
	if len(seen) != len(ids) {
		t.Errorf("%s logged %q for %d of the %d killed tasks", w, msgRecovered, len(seen), len(ids))
	}
	res := get(w.base+"/metrics", 10*time.Second)
	want := fmt.Sprintf(`forgeq_tasks_recovered_total{queue="default",task_type=%q} %d`, tasks.TypeProcessData, len(ids))
	if res.err != nil || !slices.Contains(strings.Split(string(res.body), "\n"), want) {
		t.Errorf("%s /metrics: %v; no line %s", w, res.err, want)
	}
}
