package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

const (
	// startTimeout bounds how long a worker may take to log "worker
	// started" (a -race binary on a busy machine is slow).
	startTimeout = 30 * time.Second
	// stopTimeout bounds a worker's graceful shutdown.
	stopTimeout = 30 * time.Second
)

// uniqueName returns a name unique to this test run, such as "e2e-3fa9c1d2",
// for queues and key prefixes on the shared servers.
func uniqueName(tb testing.TB) string {
	tb.Helper()
	return "e2e-" + strings.TrimSuffix(strings.TrimPrefix(redistest.Prefix(tb), "t"), ":")
}

// workerEnv returns the environment of a worker on url serving only queue,
// with small concurrency, JSON logs and no web process, then extra.
func workerEnv(url, queue string, extra ...string) []string {
	env := []string{
		"REDIS_CONNECTION_URL=" + url,
		"WORKER_QUEUES=" + queue + "=1",
		"WORKER_CONCURRENCY=2",
		"WORKER_SHUTDOWN_TIMEOUT=5s",
		"LOG_FORMAT=json",
		"HTTP_ADDR=off",
	}
	return append(env, extra...)
}

// startWorkers starts n worker processes with env and waits until each has
// logged "worker started".
func startWorkers(tb testing.TB, n int, env []string) []*proctest.Proc {
	tb.Helper()
	bin := proctest.BuildWorker(tb)
	ws := make([]*proctest.Proc, n)
	for i := range ws {
		ws[i] = proctest.Start(tb, bin, env)
	}
	for _, w := range ws {
		if w.WaitForMsg("worker started", startTimeout) == nil {
			tb.Fatalf("%s did not log \"worker started\" within %v", w, startTimeout)
		}
	}
	return ws
}

// stopWorkers sends SIGTERM to every worker and wants each to exit 0.
func stopWorkers(tb testing.TB, ws []*proctest.Proc) {
	tb.Helper()
	for _, w := range ws {
		if err := w.Signal(syscall.SIGTERM); err != nil {
			tb.Error(err)
		}
	}
	for _, w := range ws {
		code, err := w.Wait(stopTimeout)
		if err != nil || code != 0 {
			tb.Errorf("%s after SIGTERM: exit %d, %v", w, code, err)
		}
	}
}

// doneCounts returns, for each worker, how many "task done" lines it wrote
// per task id of queue.
func doneCounts(ws []*proctest.Proc, queue string) []map[string]int {
	out := make([]map[string]int, len(ws))
	for i, w := range ws {
		out[i] = make(map[string]int)
		for _, l := range w.LogLinesWithMsg("task done") {
			if l["queue"] != queue {
				continue
			}
			if id, ok := l["task_id"].(string); ok {
				out[i][id]++
			}
		}
	}
	return out
}

// sumCounts adds up per-worker counts.
func sumCounts(per []map[string]int) map[string]int {
	all := make(map[string]int)
	for _, m := range per {
		for id, n := range m {
			all[id] += n
		}
	}
	return all
}

// failedLines returns the "task failed" and "task interrupted" lines of
// every worker, as text, for an error message.
func failedLines(ws []*proctest.Proc) []string {
	var out []string
	for _, w := range ws {
		for _, msg := range []string{"task failed", "task interrupted"} {
			for _, l := range w.LogLinesWithMsg(msg) {
				b, _ := json.Marshal(l)
				out = append(out, fmt.Sprintf("%s: %s", w, b))
			}
		}
	}
	return out
}

// problems counts the warning and error log lines of w by message.
func problems(w *proctest.Proc) map[string]int {
	out := make(map[string]int)
	for _, l := range w.JSONLogLines() {
		if l["level"] == "warn" || l["level"] == "error" {
			msg, _ := l["msg"].(string)
			out[msg]++
		}
	}
	return out
}

// manager returns a cache manager on url (TLS with tlsConf), closed at
// cleanup: the tests' own Redis client, the same kind the binaries build.
func manager(tb testing.TB, url string, tlsConf *tls.Config) *cachemgr.Manager {
	tb.Helper()
	m, err := cachemgr.New(cachemgr.Options{URL: url, TLSConfig: tlsConf, SocketTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// processTask is one data:process task of a test, enqueued with its own id.
type processTask struct {
	ID   string
	Key  string
	Work int
}

// processTasks returns n tasks with ids and cache keys under name.
func processTasks(name string, n, work int) []processTask {
	out := make([]processTask, n)
	for i := range out {
		out[i] = processTask{
			ID:   fmt.Sprintf("%s-%04d", name, i),
			Key:  fmt.Sprintf("%s:k%04d", name, i),
			Work: work,
		}
	}
	return out
}

// writeTaskFile writes ts as an enqueue --file JSON Lines file on queue,
// each task kept an hour after it completes, and returns its path.
func writeTaskFile(tb testing.TB, ts []processTask, queue string) string {
	tb.Helper()
	var b strings.Builder
	for _, t := range ts {
		line, err := json.Marshal(map[string]any{
			"type":      tasks.TypeProcessData,
			"id":        t.ID,
			"queue":     queue,
			"retention": "1h",
			"payload":   tasks.ProcessData{Key: t.Key, Work: t.Work},
		})
		if err != nil {
			tb.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	path := filepath.Join(tb.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// runEnqueue runs the enqueue CLI with env and args and wants exit 0.
func runEnqueue(tb testing.TB, env []string, args ...string) *proctest.Proc {
	tb.Helper()
	p := proctest.Start(tb, proctest.BuildEnqueue(tb), append([]string{"LOG_FORMAT=json"}, env...), args...)
	code, err := p.Wait(2 * time.Minute)
	if err != nil || code != 0 {
		tb.Fatalf("enqueue %s: exit %d, %v; output:\n%s", strings.Join(args, " "), code, err, p.Logs())
	}
	return p
}

// waitCompleted waits until asynq counts want completed tasks in queue and
// none pending, active, scheduled or retrying, and fails the test if that
// takes longer than timeout or a task is archived.
func waitCompleted(tb testing.TB, insp *asynq.Inspector, queue string, want int, timeout time.Duration) *asynq.QueueInfo {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		q, err := insp.GetQueueInfo(queue)
		if err == nil {
			if q.Archived > 0 {
				tb.Fatalf("queue %s: %d tasks archived", queue, q.Archived)
			}
			if q.Completed >= want && q.Pending+q.Active+q.Scheduled+q.Retry == 0 {
				return q
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("queue %s after %v: %+v, %v; want %d completed", queue, timeout, q, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkResults wants every task of ts completed in queue with the value
// data:process computes.
func checkResults(tb testing.TB, insp *asynq.Inspector, queue string, ts []processTask) {
	tb.Helper()
	infos, err := insp.ListCompletedTasks(queue, asynq.PageSize(len(ts)+10))
	if err != nil {
		tb.Fatal(err)
	}
	byID := make(map[string]*asynq.TaskInfo, len(infos))
	for _, ti := range infos {
		byID[ti.ID] = ti
	}
	bad := 0
	for _, t := range ts {
		ti := byID[t.ID]
		if ti == nil {
			tb.Errorf("task %s: not among the completed tasks", t.ID)
			bad++
			continue
		}
		var res tasks.ProcessDataResult
		if err := json.Unmarshal(ti.Result, &res); err != nil || res.Value != tasks.Digest(t.Key, t.Work) {
			tb.Errorf("task %s: result %s (%v), want the value %s", t.ID, ti.Result, err, tasks.Digest(t.Key, t.Work))
			bad++
		}
		if bad > 10 {
			tb.Fatal("more than 10 bad results")
		}
	}
}

// removeQueue deletes queue with all its tasks and asynq's stats keys
// for it, and the cache keys, locks and progress reports under keyPrefix
// (task ids start with it too), from the Redis m uses (every
// master of a cluster).
func removeQueue(tb testing.TB, m *cachemgr.Manager, queue, keyPrefix string) {
	tb.Helper()
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(m.Client())
	if err := insp.DeleteQueue(queue, true); err != nil {
		tb.Logf("delete queue %s: %v", queue, err)
	}
	patterns := []string{
		"asynq:{" + queue + "}*",
		m.Key(keyPrefix) + "*",
		m.Key("__lock__:"+keyPrefix) + "*",
		m.Key(tasks.ProgressKey(keyPrefix)) + "*",
	}
	del := func(ctx context.Context, c redis.UniversalClient) error {
		for _, pat := range patterns {
			it := c.Scan(ctx, 0, pat, 500).Iterator()
			for it.Next(ctx) {
				if err := c.Unlink(ctx, it.Val()).Err(); err != nil {
					return err
				}
			}
			if err := it.Err(); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if cc, ok := m.Client().(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return del(ctx, c) })
	} else {
		err = del(ctx, m.Client())
	}
	if err != nil {
		tb.Errorf("clean up queue %s: %v", queue, err)
	}
}
