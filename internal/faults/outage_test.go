package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// TestRedisOutage takes Redis away from a running worker for several
// seconds, by stopping and restarting it (with an append-only file, so it
// keeps its data) or by freezing it (SIGSTOP, then SIGCONT). The worker
// survives; /health/redis and /health/ready turn 503 and back to 200; the
// enqueue CLI and the cache-aside route fail fast with clear errors
// meanwhile; afterwards processing resumes and every task enqueued before
// the outage completes, once.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		freeze bool
	}{
		{name: "stop and restart"},
		{name: "freeze", freeze: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testOutage(t, tt.freeze)
		})
	}
}

// socketTimeout is REDIS_SOCKET_TIMEOUT in the outage tests: how fast a
// call to an unreachable Redis must fail.
const socketTimeout = 2 * time.Second

func testOutage(t *testing.T, freeze bool) {
	r, url := secureRedis(t, "--appendonly", "yes")
	rdb := redisClient(t, url)
	in := asynq.NewInspectorFromRedisClient(rdb)
	env := []string{
		"REDIS_SOCKET_TIMEOUT=" + socketTimeout.String(),
		"WORKER_CONCURRENCY=2", "WORKER_QUEUES=default=1",
		"HTTP_RATE_LIMIT=1000/1s", // the default limiter, which asks Redis too
	}
	spawned := time.Now()
	w := startWorker(t, url, env...)
	started := time.Now()
	for _, path := range []string{"/health/redis", "/health/ready"} {
		if res := get(w.base+path, 5*time.Second); res.status != http.StatusOK {
			t.Fatalf("GET %s before the outage: %d %s %v", path, res.status, res.body, res.err)
		}
	}

	// Enough work to outlast the start of the outage at two at a time,
	// and a few tasks that come due during it.
	work := workFor(100 * time.Millisecond)
	lines := processTasks("before", 60, func(int) int { return work })
	for i := range 4 {
		id := fmt.Sprintf("delayed-%d", i)
		lines = append(lines, fileTask{ID: id, Payload: processTasks(id, 1, func(int) int { return work })[0].Payload, Delay: "3s"})
	}
	ids := enqueueFile(t, url, lines)
	if !waitUntil(30*time.Second, 10*time.Millisecond, func() bool { return len(w.LogLinesWithMsg(msgDone)) >= 3 }) {
		t.Fatal("no task completed before the outage")
	}

	const minOutage = 5 * time.Second
	outage := time.Now()
	resumed := make(chan time.Time, 1)
	if freeze {
		thawed := r.Pause(10 * time.Second)
		go func() {
			<-thawed
			resumed <- time.Now()
		}()
	} else {
		r.Stop() // SIGTERM: Redis writes its append-only file and exits
	}
	if done := len(w.LogLinesWithMsg(msgDone)); done < len(ids) {
		t.Logf("outage began with %d of %d tasks done", done, len(ids))
	} else {
		t.Fatalf("all %d tasks were done before the outage", done)
	}

	var wg sync.WaitGroup
	wg.Go(func() { checkHealthDown(t, w.base+"/health/redis", outage) })
	wg.Go(func() { checkHealthDown(t, w.base+"/health/ready", outage) })
	wg.Go(func() { checkEnqueueFails(t, url, env) })
	wg.Go(func() { checkCacheFails(t, w.base) })
	wg.Go(func() { checkHTTPEnqueueFails(t, w.base) })
	wg.Wait()
	if w.Exited() {
		t.Fatalf("the worker exited during the outage")
	}

	if !freeze {
		time.Sleep(time.Until(outage.Add(minOutage)))
		r.Start()
		resumed <- time.Now()
	}
	back := <-resumed
	t.Logf("Redis back after %v", back.Sub(outage).Round(time.Millisecond))

	// Nothing Redis had is gone, and the enqueue refused over HTTP
	// during the outage was not half done.
	if infos := taskInfos(t, in, "default", ids); len(infos) != len(ids) {
		t.Errorf("%d of %d tasks in Redis after the outage", len(infos), len(ids))
	}
	if _, err := in.GetTaskInfo("default", httpDuringID); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("task %s, whose enqueue got a 503 during the outage: %v, want asynq.ErrTaskNotFound", httpDuringID, err)
	}
	for _, path := range []string{"/health/redis", "/health/ready"} {
		var res httpResult
		if !waitUntil(30*time.Second, 100*time.Millisecond, func() bool {
			res = get(w.base+path, 5*time.Second)
			return res.status == http.StatusOK
		}) {
			t.Errorf("GET %s after the outage: %d %s %v", path, res.status, res.body, res.err)
			continue
		}
		t.Logf("GET %s: 200 again %v after Redis came back", path, time.Since(back).Round(time.Millisecond))
	}

	// Processing resumes: a new task completes, and every old one.
	after := runEnqueue(t, url, 90*time.Second, env, "--wait", "--wait-timeout", "60s", "--id", "after", "--progress", "never",
		"data:process", `{"key":"after","work":1000}`)
	if after.code != 0 {
		t.Errorf("enqueue --wait after the outage: exit %d\n%s%s", after.code, after.stdout, after.stderr)
	}
	ids = append(ids, "after")

	// Some tasks can stay active after the outage: one whose handler
	// returned while Redis was away (asynq v0.26 never retries moving it
	// out, see asynqSyncerGivesUp), or one whose dequeue Redis ran but
	// whose reply the worker lost. Either waits for its lease to expire and
	// a recoverer to take it back, as a retry, a minute or two later.
	var stuck []string
	active, err := in.ListActiveTasks("default")
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range active {
		stuck = append(stuck, info.ID)
	}
	wait := time.Minute
	if len(stuck) > 0 {
		// The worker's recoverer runs every minute from its start.
		eligible, err := leaseEligible(rdb, stuck)
		if err != nil {
			t.Fatal(err)
		}
		tick := spawned.Add(recovererInterval)
		for tick.Before(eligible) {
			tick = tick.Add(recovererInterval)
		}
		tick = tick.Add(started.Sub(spawned))
		wait = time.Until(tick.Add(maxFirstRetry + forwarderInterval + 30*time.Second))
		t.Logf("tasks %v still active %v after Redis came back; their leases may be recovered %v from now, waiting up to %v",
			stuck, time.Since(back).Round(time.Millisecond), time.Until(eligible).Round(time.Second), wait.Round(time.Second))
	}
	waitCompleted(t, in, "default", ids, wait)
	t.Logf("all %d tasks completed %v after Redis came back", len(ids), time.Since(back).Round(time.Millisecond))
	for id, info := range taskInfos(t, in, "default", ids) {
		if info.Retried > 0 {
			t.Logf("task %s: retried %d, last error %q", id, info.Retried, info.LastErr)
		}
	}

	// Each task completed, never twice at once; a task whose success
	// asynq could not record ran again: at least once.
	l := readLedger(t, w.Proc)
	t.Log(l.summary())
	l.checkNoOverlap(t)
	for _, id := range ids {
		switch n := len(l.done(id)); {
		case n == 0:
			t.Errorf("task %s completed without a %q line: %v", id, msgDone, l[id])
		case n > 1:
			if !slices.Contains(stuck, id) {
				t.Errorf("task %s done %d times, and was not stuck active after the outage: %v", id, n, l[id])
			}
			t.Logf("task %s done %d times: its first success was lost with the outage", id, n)
		}
	}

	var warnings []string
	for _, e := range w.JSONLogLines() {
		if lv, _ := e["level"].(string); lv == "warn" || lv == "error" {
			if m, _ := e["msg"].(string); !slices.Contains(warnings, m) {
				warnings = append(warnings, m)
			}
		}
	}
	t.Logf("the worker's warnings and errors: %q", warnings)
	if code := w.stop(t, 30*time.Second); code != 0 {
		t.Errorf("worker exited %d after SIGTERM, want 0", code)
	}
}

// checkHealthDown waits for the health check at url to answer 503 with a
// JSON body.
func checkHealthDown(t *testing.T, url string, outage time.Time) {
	var res httpResult
	if !waitUntil(8*time.Second, 100*time.Millisecond, func() bool {
		res = get(url, 10*time.Second)
		return res.status == http.StatusServiceUnavailable
	}) {
		t.Errorf("GET %s during the outage: %d %s %v, want 503", url, res.status, res.body, res.err)
		return
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(res.body, &body); err != nil || (body.Status != "unhealthy" && body.Status != "unready") {
		t.Errorf("GET %s during the outage: body %s (%v)", url, res.body, err)
	}
	t.Logf("GET %s: 503 %v into the outage (that request took %v): %s",
		url, time.Since(outage).Round(time.Millisecond), res.took.Round(time.Millisecond), res.body)
}

// checkEnqueueFails runs the enqueue CLI against the unreachable Redis: it
// must exit 1 within about the socket timeout, saying so.
func checkEnqueueFails(t *testing.T, url string, env []string) {
	res := runEnqueue(t, url, time.Minute, env, "--id", "during", "data:process", `{"key":"during","work":1}`)
	t.Logf("enqueue during the outage: exit %d after %v: %s", res.code, res.took.Round(time.Millisecond), strings.TrimSpace(res.stderr))
	if res.code != 1 {
		t.Errorf("enqueue during the outage: exit %d, want 1\n%s%s", res.code, res.stdout, res.stderr)
	}
	// The socket timeout, and the start of a -race binary on a busy
	// machine.
	if limit := socketTimeout + 4*time.Second; res.took > limit {
		t.Errorf("enqueue during the outage took %v, want at most %v", res.took, limit)
	}
	if !strings.Contains(res.stderr, "cannot reach Redis") {
		t.Errorf("enqueue during the outage: stderr %q does not say Redis is unreachable", res.stderr)
	}
}

// checkCacheFails asks the cache-aside route for a cold key while Redis is
// unreachable: a 5xx JSON error, fast.
func checkCacheFails(t *testing.T, base string) {
	res := get(base+"/api/cache/outage-key", time.Minute)
	t.Logf("GET /api/cache during the outage: %d after %v: %s", res.status, res.took.Round(time.Millisecond), res.body)
	checkFailedFast(t, "GET /api/cache", res)
}

// httpDuringID is the id of the task posted during the outage.
const httpDuringID = "http-during"

// checkHTTPEnqueueFails posts a task while Redis is unreachable: a 5xx
// JSON error, fast. testOutage checks, once Redis is back, that nothing
// was enqueued.
func checkHTTPEnqueueFails(t *testing.T, base string) {
	res := send(http.MethodPost, base+"/api/tasks/data:process",
		`{"id":"`+httpDuringID+`","queue":"default","payload":{"key":"http-during","work":1}}`, time.Minute)
	t.Logf("POST /api/tasks during the outage: %d after %v: %s", res.status, res.took.Round(time.Millisecond), res.body)
	checkFailedFast(t, "POST /api/tasks", res)
}

// checkFailedFast checks an HTTP answer given while Redis was unreachable:
// a 5xx JSON error within the rate limiter's call and one more call, each
// bounded by the socket timeout, and slack for a busy machine.
func checkFailedFast(t *testing.T, what string, res httpResult) {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	failed := res.err == nil && res.status >= 500 && json.Unmarshal(res.body, &body) == nil && body.Error.Code != ""
	if limit := 2*socketTimeout + 2*time.Second; !failed || res.took > limit {
		t.Errorf("%s during the outage: %d %s %v after %v, want a 5xx JSON error within %v", what, res.status, res.body, res.err, res.took, limit)
	}
}
