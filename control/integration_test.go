package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// integrationDB is the test Redis database of this file.
const integrationDB = 50

// waitArgs is the payload of the cancel:wait tasks of the tests.
type waitArgs struct {
	Stubborn bool `json:"stubborn,omitempty" help:"ignore the context until released"`
	Fail     bool `json:"fail,omitempty" help:"fail at once (retried)"`
}

// tracker records which worker runs which task, and when a handler saw
// its context end.
type tracker struct {
	mu      sync.Mutex
	ranOn   map[string]string    // task id -> worker
	stopped map[string]time.Time // task id -> when ctx ended
	started chan string          // task ids, as they start
	release chan struct{}        // ends the stubborn handlers
}

func newTracker() *tracker {
	return &tracker{ranOn: map[string]string{}, stopped: map[string]time.Time{},
		started: make(chan string, 100), release: make(chan struct{})}
}

// waitType is the cancel:wait type of worker name: its handler waits for
// its context to end (or, stubborn, for the release).
func waitType(name string, tr *tracker) *tasks.Type[waitArgs] {
	return tasks.Define("cancel:wait", "Wait to be cancelled",
		func(ctx context.Context, _ tasks.Deps, a waitArgs) ([]byte, error) {
			id, _ := asynq.GetTaskID(ctx)
			tr.mu.Lock()
			tr.ranOn[id] = name
			tr.mu.Unlock()
			tr.started <- id
			switch {
			case a.Fail:
				return nil, errors.New("fails, to be retried")
			case a.Stubborn:
				<-tr.release
				return nil, nil
			}
			<-ctx.Done()
			tr.mu.Lock()
			tr.stopped[id] = time.Now()
			tr.mu.Unlock()
			return nil, ctx.Err()
		})
}

// waitStarted waits for n tasks to start and returns their ids.
func (tr *tracker) waitStarted(tb testing.TB, n int) []string {
	tb.Helper()
	var ids []string
	for len(ids) < n {
		select {
		case id := <-tr.started:
			ids = append(ids, id)
		case <-time.After(30 * time.Second):
			tb.Fatalf("%d of %d tasks started within 30s", len(ids), n)
		}
	}
	return ids
}

func (tr *tracker) worker(id string) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ranOn[id]
}

func (tr *tracker) stoppedAt(id string) time.Time {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.stopped[id]
}

// metric returns the value of the series line of w's /metrics that starts
// with prefix, or "" when there is none.
func metric(tb testing.TB, w *forgeqtest.Worker, prefix string) string {
	tb.Helper()
	resp, err := http.Get(w.URL("/metrics"))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(line, prefix))
		}
	}
	return ""
}

// logLine returns the first JSON log line of w with msg and task_id id.
func logLine(w *forgeqtest.Worker, msg, id string) map[string]any {
	for _, line := range strings.Split(w.Logs(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg && m["task_id"] == id {
			return m
		}
	}
	return nil
}

func waitLogLine(tb testing.TB, w *forgeqtest.Worker, msg, id string) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := logLine(w, msg, id); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no log %q of task %s within 15s; log:\n%s", msg, id, w.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCancelAcrossWorkers runs two workers on the real Redis and cancels
// tasks running on each, over HTTP through the other worker's web
// process and with Cancel; a handler that ignores its context; and tasks
// waiting in their queue (pending, scheduled, retry).
func TestCancelAcrossWorkers(t *testing.T) {
	url := redistest.URL(t, integrationDB)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	queue := "cancel-" + strings.TrimSuffix(redistest.Prefix(t), ":")
	tr := newTracker()
	env := map[string]string{
		"REDIS_CONNECTION_URL":   url,
		"REDIS_EMBEDDED":         "false",
		"WORKER_QUEUES":          queue + "=1",
		"WORKER_CONCURRENCY":     "2",
		"WORKER_RETRY_DELAY_MIN": "1h",
		"WORKER_RETRY_DELAY_MAX": "1h",
	}
	workers := map[string]*forgeqtest.Worker{}
	for _, name := range []string{"a", "b"} {
		workers[name] = forgeqtest.StartWorker(t, worker.New(name).Register(waitType(name, tr)), forgeqtest.WorkerOptions{Env: env})
	}
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	enqueue := func(t *testing.T, id string, a waitArgs, opts ...asynq.Option) {
		t.Helper()
		p, _ := json.Marshal(a)
		opts = append([]asynq.Option{asynq.Queue(queue), asynq.TaskID(id), asynq.MaxRetry(3)}, opts...)
		if _, err := client.Enqueue(asynq.NewTask("cancel:wait", p), opts...); err != nil {
			t.Fatal(err)
		}
	}
	checkArchived := func(t *testing.T, id, by string) {
		t.Helper()
		info, err := insp.GetTaskInfo(queue, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != asynq.TaskStateArchived || info.LastErr != "cancelled by "+by || info.Retried != 0 {
			t.Errorf("task %s: state %s, last error %q, retried %d; want archived, \"cancelled by %s\", not retried",
				id, info.State, info.LastErr, info.Retried, by)
		}
	}

	t.Run("running", func(t *testing.T) {
		ids := make([]string, 4)
		for i := range ids {
			ids[i] = fmt.Sprintf("run-%d", i)
			enqueue(t, ids[i], waitArgs{})
		}
		tr.waitStarted(t, 4) // two on each worker (WORKER_CONCURRENCY=2)
		on := map[string][]string{}
		for _, id := range ids {
			on[tr.worker(id)] = append(on[tr.worker(id)], id)
		}
		if len(on["a"]) != 2 || len(on["b"]) != 2 {
			t.Fatalf("tasks by worker: %v, want two on each", on)
		}

		// A task running on b, cancelled over HTTP through a's web process.
		id := on["b"][0]
		req, _ := http.NewRequest(http.MethodDelete, workers["a"].URL("/api/tasks/"+queue+"/"+id), nil)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE: status %d: %s", resp.StatusCode, body)
		}
		var got control.Result
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		t.Logf("over HTTP: task on worker b saw its ctx end %v after the DELETE was sent", tr.stoppedAt(id).Sub(start))
		if got.State != "archived" || got.Was != "active" || got.Reason != "cancelled by an HTTP request" {
			t.Errorf("DELETE answered %+v, want archived, was active, cancelled by an HTTP request", got)
		}
		checkArchived(t, id, "an HTTP request")
		line := waitLogLine(t, workers["b"], "task cancelled", id)
		if line["outcome"] != tasks.OutcomeCancelled {
			t.Errorf("log line %v, want outcome cancelled", line)
		}
		if v := metric(t, workers["b"], `forgeq_tasks_failed_total{outcome="cancelled",queue="`+queue+`",task_type="cancel:wait"} `); v != "1" {
			t.Errorf("b's forgeq_tasks_failed_total{outcome=\"cancelled\"} = %q, want 1", v)
		}

		// A task running on a, and the rest, with Cancel.
		for _, id := range []string{on["a"][0], on["a"][1], on["b"][1]} {
			start := time.Now()
			got, err := control.Cancel(ctx, rdb, queue, id, "alice")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("Cancel: task %s on worker %s saw its ctx end %v after Cancel was called; Cancel returned after %v",
				id, tr.worker(id), tr.stoppedAt(id).Sub(start), time.Since(start))
			if got.State != "archived" || got.Was != "active" || got.By != "alice" {
				t.Errorf("Cancel = %+v, want archived, was active, by alice", got)
			}
			checkArchived(t, id, "alice")
		}
		if v := metric(t, workers["a"], `forgeq_tasks_cancel_ignored_total{queue="`+queue+`",task_type="cancel:wait"} `); v != "0" {
			t.Errorf("a's forgeq_tasks_cancel_ignored_total = %q, want 0", v)
		}
		// Cancelling again: already finished.
		if _, err := control.Cancel(ctx, rdb, queue, on["a"][0], "alice"); !errors.Is(err, control.ErrFinished) {
			t.Errorf("second Cancel: %v, want ErrFinished", err)
		}
	})

	t.Run("ignores its context", func(t *testing.T) {
		enqueue(t, "stubborn", waitArgs{Stubborn: true})
		tr.waitStarted(t, 1)
		w := workers[tr.worker("stubborn")]
		start := time.Now()
		got, err := control.Cancel(ctx, rdb, queue, "stubborn", "alice")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Cancel of a handler ignoring its context returned after %v: %+v", time.Since(start), got)
		if got.State != "archived" {
			t.Errorf("Cancel = %+v, want archived after the worker's grace period", got)
		}
		checkArchived(t, "stubborn", "alice")
		waitLogLine(t, w, "cancelled task's handler ignores its context", "stubborn")
		waitLogLine(t, w, "cancelled task archived while its handler still runs", "stubborn")
		if v := metric(t, w, `forgeq_tasks_cancel_ignored_total{queue="`+queue+`",task_type="cancel:wait"} `); v != "1" {
			t.Errorf("forgeq_tasks_cancel_ignored_total = %q, want 1", v)
		}
		close(tr.release)
		waitLogLine(t, w, "handler of a cancelled task returned at last", "stubborn")
		checkArchived(t, "stubborn", "alice")
	})

	t.Run("workflow step", func(t *testing.T) {
		// workflow.Client.Cancel stops a running step through the same
		// signal: archived, "cancelled by workflow", not retried.
		wc := workers["a"].Services().Workflows
		info, err := wc.Submit(ctx, workflow.Chain(
			workflow.Task(waitType("a", tr), waitArgs{}, asynq.Queue(queue)),
			workflow.Task(waitType("a", tr), waitArgs{}, asynq.Queue(queue)),
		), workflow.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		id := tr.waitStarted(t, 1)[0]
		if id != workflow.TaskID(info.ID, "0") {
			t.Fatalf("started %s, want the first step", id)
		}
		if _, err := wc.Cancel(ctx, info.ID, "test"); err != nil {
			t.Fatal(err)
		}
		workers["a"].WaitTask(t, queue, id, 15*time.Second)
		checkArchived(t, id, "workflow")
		st, err := wc.Get(ctx, info.ID)
		if err != nil || st.Status != workflow.StatusCancelled {
			t.Errorf("workflow state %+v, %v; want cancelled", st, err)
		}
	})

	t.Run("waiting", func(t *testing.T) {
		enqueue(t, "retry", waitArgs{Fail: true})
		tr.waitStarted(t, 1)
		enqueue(t, "scheduled", waitArgs{}, asynq.ProcessIn(time.Hour))
		if _, err := client.Enqueue(asynq.NewTask("cancel:wait", []byte(`{}`)), asynq.Queue(queue+"-idle"), asynq.TaskID("pending")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			info, err := insp.GetTaskInfo(queue, "retry")
			if err == nil && info.State == asynq.TaskStateRetry {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task retry: %v, %v; want it in the retry state", info, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, tt := range []struct{ queue, id, wantWas string }{
			{queue, "retry", "retry"}, {queue, "scheduled", "scheduled"}, {queue + "-idle", "pending", "pending"},
		} {
			got, err := control.Cancel(ctx, rdb, tt.queue, tt.id, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if got.State != control.StateCancelled || got.Was != tt.wantWas {
				t.Errorf("Cancel(%s) = %+v, want cancelled, was %s", tt.id, got, tt.wantWas)
			}
			if _, err := insp.GetTaskInfo(tt.queue, tt.id); !errors.Is(err, asynq.ErrTaskNotFound) {
				t.Errorf("task %s after Cancel: %v, want it gone", tt.id, err)
			}
			if _, err := control.Cancel(ctx, rdb, tt.queue, tt.id, "bob"); !errors.Is(err, control.ErrFinished) {
				t.Errorf("second Cancel(%s): %v, want ErrFinished", tt.id, err)
			}
		}
	})
}
