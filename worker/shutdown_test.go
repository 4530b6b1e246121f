package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// workFor returns the data:process work that takes about d on one core
// here, measured with the build mode (race or not) of the tests, which the
// worker binary shares.
func workFor(tb testing.TB, d time.Duration) int {
	tb.Helper()
	const probe = 300_000
	start := time.Now()
	tasks.Digest("calibrate", probe)
	w := int(float64(probe) * float64(d) / float64(time.Since(start)))
	return max(1, min(w, tasks.MaxWork))
}

// enqueueWork enqueues n data:process tasks of the given work with IDs
// prefix-0, prefix-1, ... and a retention, so that completed ones stay
// visible. It returns the IDs.
func enqueueWork(tb testing.TB, url, prefix string, n, work int) []string {
	tb.Helper()
	client := asynq.NewClientFromRedisClient(redisClient(tb, url))
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: id, Work: work}, asynq.TaskID(id), asynq.Retention(time.Hour))
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := client.EnqueueContext(context.Background(), task); err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// taskLines returns the mux's per-task log lines ("task done", "task
// failed", "task interrupted") by task ID, checking that each has every
// field.
func taskLines(tb testing.TB, w *workerProc) map[string][]map[string]any {
	tb.Helper()
	out := map[string][]map[string]any{}
	for _, e := range w.log.entries() {
		if e["msg"] != "task done" && e["msg"] != "task failed" && e["msg"] != "task interrupted" {
			continue
		}
		for _, k := range []string{"task_id", "task_type", "queue", "took", "outcome"} {
			if _, ok := e[k]; !ok {
				tb.Errorf("task log line lacks %s: %v", k, e)
			}
		}
		id, _ := e["task_id"].(string)
		out[id] = append(out[id], e)
	}
	return out
}

// TestGracefulShutdown runs the worker binary, SIGTERMs it with tasks in
// flight and checks that none is lost: each either completed or is back in
// its queue, none is left active, and the process exits 0 in time. The
// subtests share DB 6 and run in turn.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()

	t.Run("running tasks finish", func(t *testing.T) {
		url := flushedURL(t, 6)
		const shutdownTimeout = 10 * time.Second
		w := startWorker(t, map[string]string{
			"REDIS_CONNECTION_URL":    url,
			"WORKER_CONCURRENCY":      "4",
			"WORKER_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
		})
		w.log.waitMsg(t, "worker started", 30*time.Second)
		ids := enqueueWork(t, url, "finish", 20, workFor(t, time.Second))

		// The first task is done: the other three of the first four are
		// about to be, and new ones start as slots free up.
		w.log.waitMsg(t, "task done", 60*time.Second)
		sigterm := time.Now()
		w.stop(t)
		if code := w.wait(t, shutdownTimeout+10*time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		t.Logf("exited %v after SIGTERM", time.Since(sigterm).Round(time.Millisecond))

		in := asynq.NewInspectorFromRedisClient(redisClient(t, url))
		lines := taskLines(t, w)
		var completed, pending []string
		for _, id := range ids {
			info, err := in.GetTaskInfo("default", id)
			if err != nil {
				t.Errorf("task %s lost: %v", id, err)
				continue
			}
			switch info.State {
			case asynq.TaskStateCompleted:
				completed = append(completed, id)
				var res tasks.ProcessDataResult
				if err := json.Unmarshal(info.Result, &res); err != nil || res.Value == "" {
					t.Errorf("task %s: result %q (%v)", id, info.Result, err)
				}
				if n := len(lines[id]); n != 1 || lines[id][0]["outcome"] != "done" {
					t.Errorf("task %s completed with log lines %v, want one with outcome done", id, lines[id])
				}
			case asynq.TaskStatePending, asynq.TaskStateRetry:
				pending = append(pending, id)
			default:
				t.Errorf("task %s is %v after shutdown", id, info.State)
			}
		}
		t.Logf("%d completed, %d back in the queue", len(completed), len(pending))
		if q, err := in.GetQueueInfo("default"); err != nil || q.Active != 0 {
			t.Errorf("queue after shutdown: %+v, %v; want nothing active", q, err)
		}
		if len(completed) < 2 || len(pending) == 0 {
			t.Errorf("completed %d and left %d; the test wants tasks on both sides of SIGTERM", len(completed), len(pending))
		}

		// At least one task that was running at SIGTERM finished after it.
		entries := w.log.entries()
		down := slices.IndexFunc(entries, func(e map[string]any) bool {
			return e["msg"] == "worker shutting down: no new tasks; running tasks may finish"
		})
		if down < 0 || !slices.ContainsFunc(entries[down:], func(e map[string]any) bool { return e["msg"] == "task done" }) {
			t.Errorf("no task finished after the shutdown began (line %d)", down)
		}
		for id, ls := range lines {
			if !slices.Contains(completed, id) {
				t.Errorf("log lines for task %s, which did not complete: %v", id, ls)
			}
		}
	})

	t.Run("tasks over the timeout go back to the queue", func(t *testing.T) {
		url := flushedURL(t, 6)
		const shutdownTimeout = time.Second
		w := startWorker(t, map[string]string{
			"REDIS_CONNECTION_URL":    url,
			"WORKER_CONCURRENCY":      "2",
			"WORKER_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
		})
		w.log.waitMsg(t, "worker started", 30*time.Second)
		ids := enqueueWork(t, url, "abort", 4, workFor(t, 8*time.Second))

		in := asynq.NewInspectorFromRedisClient(redisClient(t, url))
		deadline := time.Now().Add(20 * time.Second)
		for {
			q, err := in.GetQueueInfo("default")
			if err == nil && q.Active == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("two tasks never ran at once: %+v, %v", q, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		sigterm := time.Now()
		w.stop(t)
		if code := w.wait(t, shutdownTimeout+handlerGrace+10*time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		t.Logf("exited %v after SIGTERM", time.Since(sigterm).Round(time.Millisecond))

		for _, id := range ids {
			info, err := in.GetTaskInfo("default", id)
			switch {
			case err != nil:
				t.Errorf("task %s lost: %v", id, err)
			case info.State != asynq.TaskStatePending:
				t.Errorf("task %s is %v, want pending again", id, info.State)
			case info.Retried != 0:
				t.Errorf("task %s: retried %d, want 0 (going back to the queue is no retry)", id, info.Retried)
			}
		}
		if q, err := in.GetQueueInfo("default"); err != nil || q.Active != 0 || q.Pending != len(ids) {
			t.Errorf("queue after shutdown: %+v, %v; want %d pending, none active", q, err, len(ids))
		}
		// The two handlers that were cut off returned and logged once
		// each, as interrupted, before the process exited.
		lines := taskLines(t, w)
		if len(lines) != 2 {
			t.Errorf("log lines for %d tasks, want the 2 that ran: %v", len(lines), lines)
		}
		for id, ls := range lines {
			if len(ls) != 1 || ls[0]["msg"] != "task interrupted" || ls[0]["outcome"] != "canceled" {
				t.Errorf("task %s logged %v, want one line: task interrupted, outcome canceled", id, ls)
			}
		}
		if ws := w.log.withMsg("handlers still running after shutdown; their tasks are back on their queue"); len(ws) != 0 {
			t.Errorf("handlers outlived the grace period: %v", ws)
		}
	})
}

// TestBinarySIGHUP: a hangup (the worker's terminal closed) shuts the
// worker down as SIGTERM does: it exits 0 once stopped, and its server
// entry is gone from Redis.
func TestBinarySIGHUP(t *testing.T) {
	t.Parallel()

	url := redistest.URL(t, 24)
	rdb := redisClient(t, url)
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	p := proctest.Start(t, proctest.BuildWorker(t), []string{
		"REDIS_CONNECTION_URL=" + url, "HTTP_ADDR=off", "LOG_FORMAT=json", "WORKER_SHUTDOWN_TIMEOUT=2s",
	})
	if !p.WaitForLog(`"worker started"`, 30*time.Second) {
		t.Fatalf("worker did not start:\n%s", p.Logs())
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	// asynq's heartbeater writes the server's entry on a goroutine of its
	// own, which may run after "worker started".
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		servers, err := insp.Servers()
		if err == nil && len(servers) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers before SIGHUP: %v, %v; want 1", servers, err)
		}
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v after SIGHUP; want 0", code, err)
	}
	if len(proctest.WithMsg(p.JSONLogLines(), "worker stopped")) != 1 {
		t.Errorf("no \"worker stopped\" line:\n%s", p.Logs())
	}
	if servers, err := insp.Servers(); err != nil || len(servers) != 0 {
		t.Errorf("servers after SIGHUP: %v, %v; want none", servers, err)
	}
}
