package forgeqtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/worker"
)

// greetingRoute answers GET /greetings/{name} with the greeting steps
// cached for name.
func greetingRoute(s worker.Services) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := s.Manager.Get(r.Context(), "greeting:"+r.PathValue("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		io.WriteString(w, v)
	})
}

func TestStartWorkerRunsACustomType(t *testing.T) {
	t.Parallel()
	app := worker.New("greeter").Register(steps).Handle("GET /greetings/{name}", greetingRoute)
	w := forgeqtest.StartWorker(t, app, forgeqtest.WorkerOptions{Env: map[string]string{"WORKER_CONCURRENCY": "2"}})

	if !strings.HasPrefix(w.RedisURL(), "redis://127.0.0.1:") || strings.HasSuffix(w.RedisURL(), ":0") {
		t.Errorf("RedisURL() = %q, want the embedded Redis's real loopback port", w.RedisURL())
	}
	ctx := t.Context()
	ok, err := steps.Enqueue(ctx, w.Client(), stepsArgs{Name: "grace", Steps: 2}, asynq.TaskID("ok"), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := steps.Enqueue(ctx, w.Client(), stepsArgs{Name: "eve", Steps: 1, Fail: "permanent"}, asynq.TaskID("bad"))
	if err != nil {
		t.Fatal(err)
	}

	done := w.WaitTask(t, ok.Queue, ok.ID, 30*time.Second)
	if done.State != asynq.TaskStateCompleted {
		t.Fatalf("task ok: %s (%s), want completed", done.State, done.LastErr)
	}
	var res stepsResult
	if err := json.Unmarshal(done.Result, &res); err != nil || res.Greeting != "hello, grace" {
		t.Errorf("task ok: result %s (%v), want the greeting hello, grace", done.Result, err)
	}
	failed := w.WaitTask(t, bad.Queue, bad.ID, 30*time.Second)
	if failed.State != asynq.TaskStateArchived || !strings.Contains(failed.LastErr, `name "eve" is banned`) {
		t.Errorf("task bad: %s with %q, want archived at once (SkipRetry)", failed.State, failed.LastErr)
	}

	// The route reads what the handler cached, through the worker's
	// manager, as the test can.
	resp, err := http.Get(w.URL("/greetings/grace"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hello, grace" {
		t.Errorf("GET /greetings/grace: %d %q, want 200 hello, grace", resp.StatusCode, body)
	}
	if v, err := w.Manager().Get(ctx, "greeting:grace"); err != nil || v != "hello, grace" {
		t.Errorf("the worker's cache: %q, %v", v, err)
	}
	if !strings.Contains(w.Logs(), `"msg":"worker started"`) {
		t.Errorf("the log lacks the worker's JSON start line:\n%s", w.Logs())
	}

	w.Stop(t)
	w.Stop(t) // again: a no-op, as at cleanup
	if !strings.Contains(w.Logs(), `"msg":"worker stopped"`) {
		t.Errorf("the log lacks the worker's stop line:\n%s", w.Logs())
	}
}

func TestStartWorkersSideBySide(t *testing.T) {
	t.Parallel()
	a := forgeqtest.StartWorker(t, worker.New("a").Register(steps), forgeqtest.WorkerOptions{})
	b := forgeqtest.StartWorker(t, worker.New("b").Register(steps), forgeqtest.WorkerOptions{Env: map[string]string{"HTTP_ADDR": "off"}})

	if a.RedisURL() == b.RedisURL() {
		t.Errorf("both workers on %s, want an embedded Redis each", a.RedisURL())
	}
	if a.HTTPAddr() == "" || b.HTTPAddr() != "" {
		t.Errorf("HTTPAddr() = %q and %q, want one address and \"\" (HTTP_ADDR=off)", a.HTTPAddr(), b.HTTPAddr())
	}
}

// TestStartWorkerDashboardRedisInfo checks the dashboard's Redis page on
// the embedded default: GET /monitoring/api/redis_info answers with the
// server's real INFO (a version and an uptime), as a redis-server child
// gives it; miniredis's INFO has neither.
func TestStartWorkerDashboardRedisInfo(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not on PATH: the embedded Redis is miniredis")
	}
	w := forgeqtest.StartWorker(t, worker.New("info"), forgeqtest.WorkerOptions{})

	resp, err := http.Get(w.URL("/monitoring/api/redis_info"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Address string            `json:"address"`
		Info    map[string]string `json:"info"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET redis_info: %s, %v", resp.Status, err)
	}
	for _, k := range []string{"redis_version", "uptime_in_days", "uptime_in_seconds", "connected_clients", "used_memory_human", "rdb_last_save_time"} {
		if got.Info[k] == "" {
			t.Errorf("info lacks %s: %v", k, got.Info)
		}
	}
	if "redis://"+got.Address != w.RedisURL() {
		t.Errorf("address %q, want the worker's Redis %s", got.Address, w.RedisURL())
	}
}

// recordingTB is a testing.TB whose failures are recorded rather than
// failing the test, for checking what StartWorker reports.
type recordingTB struct {
	testing.TB
	mu       sync.Mutex
	failures []string
	cleanups []func()
}

func (r *recordingTB) Helper()             {}
func (r *recordingTB) Logf(string, ...any) {}
func (r *recordingTB) Cleanup(f func())    { r.cleanups = append(r.cleanups, f) }
func (r *recordingTB) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.failures) > 0
}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

// A worker that exits before it runs (a bad flag) is reported once, and
// the cleanup does not then wait for a stop that cannot come.
func TestStartWorkerExitsBeforeItRuns(t *testing.T) {
	rec := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		forgeqtest.StartWorker(rec, worker.New("bad"), forgeqtest.WorkerOptions{Args: []string{"--no-such-flag"}, StopTimeout: 20 * time.Second})
	}()
	<-done
	start := time.Now()
	for i := len(rec.cleanups) - 1; i >= 0; i-- {
		rec.cleanups[i]()
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("cleanup took %v: it waited for a worker that had exited", took)
	}
	if len(rec.failures) != 1 || !strings.Contains(rec.failures[0], "exited with code 2 before it ran") {
		t.Errorf("failures %q, want exactly the exit before running", rec.failures)
	}
}
