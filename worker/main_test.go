package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// binDir holds the worker binary that workerBinary builds once.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// workerBinary builds cmd/worker (this package with the built-in types) once per test run (with -race when the
// tests run with it) and returns its path.
func workerBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "forgeq-worker-test-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "worker")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, proctest.WorkerPackage)...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// logBuffer collects a process's log output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// entries returns the JSON log lines written so far; other lines are
// skipped.
func (b *logBuffer) entries() []map[string]any { return proctest.JSONLines(b.String()) }

// withMsg returns the log entries whose msg is msg.
func (b *logBuffer) withMsg(msg string) []map[string]any {
	return proctest.WithMsg(b.entries(), msg)
}

// waitMsg waits until a log entry with msg appears and returns it.
func (b *logBuffer) waitMsg(tb testing.TB, msg string, timeout time.Duration) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if es := b.withMsg(msg); len(es) > 0 {
			return es[0]
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no log line %q within %v; log:\n%s", msg, timeout, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// workerProc is a worker process started by startWorker.
type workerProc struct {
	cmd  *exec.Cmd
	log  *logBuffer // stderr: the JSON log and run's final error
	done chan struct{}
	err  error // of cmd.Wait, once done is closed
}

// startWorker starts the worker binary with only env (plus PATH and HOME)
// in its environment, JSON logs on. Cleanup kills it if it still runs.
func startWorker(tb testing.TB, env map[string]string, args ...string) *workerProc {
	tb.Helper()
	cmd := exec.Command(workerBinary(tb), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_FORMAT=json", "HTTP_ADDR=off"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	w := &workerProc{cmd: cmd, log: &logBuffer{}, done: make(chan struct{})}
	cmd.Stderr = w.log
	cmd.Stdout = w.log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = cmd.Process.Kill()
			<-w.done
		}
		if tb.Failed() {
			tb.Logf("worker %d log:\n%s", cmd.Process.Pid, w.log)
		}
	})
	return w
}

// stop sends SIGTERM.
func (w *workerProc) stop(tb testing.TB) {
	tb.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code.
func (w *workerProc) wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		tb.Fatalf("worker did not exit within %v; log:\n%s", timeout, w.log)
	}
	var ee *exec.ExitError
	switch {
	case w.err == nil:
		return 0
	case errors.As(w.err, &ee):
		return ee.ExitCode()
	default:
		tb.Fatal(w.err)
		return -1
	}
}

// freeAddr returns a 127.0.0.1 address no one listens on (at the time).
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// dbLocks serializes the tests of this package that share a test
// database; see flushedURL.
var dbLocks [16]sync.Mutex

// flushedURL returns the test Redis URL of db, flushed. The test holds db
// until it ends: tests (and subtests) asking for the same database run one
// at a time, so that none flushes it under another. A test must not ask
// twice for one database, nor a subtest for its parent's.
func flushedURL(tb testing.TB, db int) string {
	tb.Helper()
	dbLocks[db].Lock()
	tb.Cleanup(dbLocks[db].Unlock)
	url := redistest.URL(tb, db)
	rdb := redisClient(tb, url)
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return url
}

// redisClient returns a go-redis client for url, closed at cleanup.
func redisClient(tb testing.TB, url string) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// env returns a getenv backed by m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRunHelp(t *testing.T) {
	t.Parallel()

	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, env(nil), &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Usage: worker", "--redis-embedded-addr", "--worker-schedule json", "WORKER_TASK_CHECK_INTERVAL", "SIGTERM"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestRunBadConfig(t *testing.T) {
	t.Parallel()

	// Redis is unreachable at this URL: each error must come before any
	// attempt to reach it.
	const unreachable = "redis://127.0.0.1:1/0"
	tests := []struct {
		name     string
		giveArgs []string
		giveEnv  map[string]string
		wantErr  []string
	}{
		{
			name:    "bad number",
			giveEnv: map[string]string{"WORKER_CONCURRENCY": "abc"},
			wantErr: []string{`config:`, `WORKER_CONCURRENCY: "abc" is not a whole number`},
		},
		{
			name:    "several bad settings",
			giveEnv: map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "soon", "REDIS_EMBEDDED": "maybe"},
			wantErr: []string{`WORKER_SHUTDOWN_TIMEOUT: "soon" is not a duration`, `REDIS_EMBEDDED: "maybe" is not auto, true or false`},
		},
		{
			name:     "bad flag value",
			giveArgs: []string{"--worker-task-check-interval", "-1"},
			wantErr:  []string{`--worker-task-check-interval: "-1" is not positive`},
		},
		{
			name:     "unknown flag",
			giveArgs: []string{"--worker-concurency", "2"},
			wantErr:  []string{`unknown flag: --worker-concurency`, `see worker --help`},
		},
		{
			name:     "argument",
			giveArgs: []string{"start"},
			wantErr:  []string{`unexpected argument "start"`},
		},
		{
			name:    "schedule: unknown task type",
			giveEnv: map[string]string{"WORKER_SCHEDULE": `[{"name": "nightly", "spec": "@daily", "type": "email:send"}]`},
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("nightly"): tasks: unknown task type "email:send" (known: cache:invalidate, cache:warm, data:process)`},
		},
		{
			name: "schedule: payload unfit for the type",
			giveEnv: map[string]string{"WORKER_SCHEDULE": `[{"name": "ok", "spec": "@daily", "type": "cache:invalidate", "payload": {"pattern": "tmp:*"}},
				{"name": "report", "spec": "@hourly", "type": "data:process", "payload": {"key": "r", "work": 0}}]`},
			wantErr: []string{`WORKER_SCHEDULE: entry 2 ("report"): tasks: invalid payload: data:process: `, `work`},
		},
		{
			name:    "schedule: bad spec",
			giveEnv: map[string]string{"WORKER_SCHEDULE": `[{"name": "x", "spec": "every minute", "type": "cache:invalidate"}]`},
			wantErr: []string{`WORKER_SCHEDULE: entry 1 ("x"): spec "every minute"`},
		},
		{
			name:    "web process exposed without credentials",
			giveEnv: map[string]string{"HTTP_ADDR": "0.0.0.0:0"},
			wantErr: []string{`web: refusing to listen beyond loopback without credentials: HTTP_ADDR "0.0.0.0:0" is not a loopback address: set HTTP_AUTH_USERNAME and HTTP_AUTH_PASSWORD`},
		},
		{
			name:     "web process on every interface without credentials",
			giveArgs: []string{"--http-addr", ":8080"},
			wantErr:  []string{`HTTP_ADDR ":8080" is not a loopback address`},
		},
		{
			name:    "username without password",
			giveEnv: map[string]string{"HTTP_ADDR": "0.0.0.0:0", "HTTP_AUTH_USERNAME": "admin"},
			wantErr: []string{`config:`, `HTTP_AUTH_USERNAME: "admin" is set without a password (HTTP_AUTH_PASSWORD or --http-auth-password)`},
		},
		{
			name:    "bad rate limit",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "lots"},
			wantErr: []string{`HTTP_RATE_LIMIT: "lots" is not a rate limit`},
		},
		{
			name:    "embedded forced with a URL",
			giveEnv: map[string]string{"REDIS_EMBEDDED": "true"},
			wantErr: []string{`REDIS_EMBEDDED (redis.embedded) is true but REDIS_CONNECTION_URL (redis.url) is set`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := map[string]string{"REDIS_CONNECTION_URL": unreachable, "LOG_FORMAT": "json"}
			for k, v := range tt.giveEnv {
				e[k] = v
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.giveArgs, env(e), &stdout, &stderr)
			if err == nil {
				t.Fatal("run succeeded")
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("error is not a usage error (exit 2): %v", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(stderr.String(), "unreachable") {
				t.Errorf("run tried Redis before failing on the config:\n%s", stderr.String())
			}
		})
	}
}

func TestBinaryBadConfig(t *testing.T) {
	t.Parallel()

	w := startWorker(t, map[string]string{"WORKER_QUEUES": "default=0", "REDIS_CONNECTION_URL": "redis://127.0.0.1:1"})
	if code := w.wait(t, 30*time.Second); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	want := `worker: config:` + "\n" + `  WORKER_QUEUES: "default=0": weight 0 of queue "default" is too small`
	if !strings.Contains(w.log.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, w.log)
	}
}

func TestRunRedisUnreachable(t *testing.T) {
	t.Parallel()

	t.Run("cause and time taken", func(t *testing.T) {
		t.Parallel()
		// go-redis gives up on a refused port well before the socket
		// timeout; with a timeout of a second, the ping's own deadline
		// ends it first. Either way the error says how long it took and
		// that the connection was refused.
		for _, timeout := range []string{"1", "10s"} {
			var stderr bytes.Buffer
			start := time.Now()
			err := run(context.Background(), nil, env(map[string]string{
				"REDIS_CONNECTION_URL": "redis://" + freeAddr(t), "REDIS_SOCKET_TIMEOUT": timeout, "LOG_FORMAT": "json", "HTTP_ADDR": "off",
			}), &bytes.Buffer{}, &stderr)
			took := time.Since(start)
			if err == nil {
				t.Fatal("run succeeded with no Redis")
			}
			if !strings.Contains(err.Error(), "connection refused") {
				t.Errorf("REDIS_SOCKET_TIMEOUT=%s: error hides the cause: %v", timeout, err)
			}
			m := regexp.MustCompile(`gave up after ([0-9.]+m?s)`).FindStringSubmatch(err.Error())
			if m == nil {
				t.Errorf("REDIS_SOCKET_TIMEOUT=%s: error does not say how long it took: %v", timeout, err)
				continue
			}
			if d, perr := time.ParseDuration(m[1]); perr != nil || d > took {
				t.Errorf("REDIS_SOCKET_TIMEOUT=%s: error says %s, but run took %v: %v", timeout, m[1], took, err)
			}
		}
	})

	addr := freeAddr(t)
	var stderr bytes.Buffer
	start := time.Now()
	err := run(context.Background(), nil, env(map[string]string{
		"REDIS_EMBEDDED": "false", "REDIS_EMBEDDED_ADDR": addr, "REDIS_SOCKET_TIMEOUT": "2s", "LOG_FORMAT": "json",
	}), &bytes.Buffer{}, &stderr)
	if err == nil {
		t.Fatal("run succeeded with no Redis")
	}
	for _, want := range []string{"redis://" + addr + " is unreachable (gave up after ", "REDIS_EMBEDDED=false", "REDIS_CONNECTION_URL=redis://host:6379"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("run took %v to fail", took)
	}
}

// TestRunEmbedded runs the whole worker in-process on an embedded Redis,
// with HTTP_ADDR off: a task goes through, no web process runs, and
// cancelling ctx shuts everything down, the embedded Redis last.
func TestRunEmbedded(t *testing.T) {
	t.Parallel()

	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &logBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--redis-embedded-addr", addr}, env(map[string]string{
			"LOG_FORMAT": "json", "LOG_LEVEL": "debug", "WORKER_CONCURRENCY": "2", "WORKER_SHUTDOWN_TIMEOUT": "2s",
			"HTTP_ADDR": "off",
		}), &bytes.Buffer{}, log)
	}()
	log.waitMsg(t, "worker started", 10*time.Second)
	if e := log.withMsg("worker starting"); len(e) != 1 || e[0]["http_addr"] != "off" {
		t.Errorf("worker starting = %v, want http_addr off", e)
	}
	var warns []map[string]any
	for _, e := range log.entries() {
		if msg, _ := e["msg"].(string); strings.HasPrefix(msg, "no Redis configured: started an EMBEDDED IN-MEMORY Redis: ") &&
			strings.HasSuffix(msg, "; queued tasks and cached data are LOST when the worker exits. For a real Redis, set REDIS_CONNECTION_URL=redis://host:6379") {
			warns = append(warns, e)
		}
	}
	if len(warns) != 1 || warns[0]["level"] != "warn" || warns[0]["addr"] != addr {
		t.Errorf("embedded Redis warning = %v", warns)
	}

	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	client := asynq.NewClientFromRedisClient(rdb)
	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "embedded:1", Work: 1000}, asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.EnqueueContext(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	got := waitTaskState(t, asynq.NewInspectorFromRedisClient(rdb), info.Queue, info.ID, asynq.TaskStateCompleted, 10*time.Second)
	var res tasks.ProcessDataResult
	if err := json.Unmarshal(got.Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Value != tasks.Digest("embedded:1", 1000) {
		t.Errorf("result %+v, want value %s", res, tasks.Digest("embedded:1", 1000))
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("run did not return after cancel; log:\n%s", log)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("embedded Redis still listens at %s after run returned", addr)
	}
	if e := log.withMsg("web listening"); len(e) != 0 {
		t.Errorf("a web process ran with HTTP_ADDR off: %v", e)
	}
	msgs := []string{}
	for _, e := range log.entries() {
		msgs = append(msgs, e["msg"].(string))
	}
	order := []string{"worker shutting down: no new tasks; running tasks may finish", "worker stopped", "embedded Redis stopped; its data is gone"}
	last := -1
	for _, want := range order {
		i := indexFrom(msgs, want, last+1)
		if i < 0 {
			t.Fatalf("log lacks %q after %v; messages: %q", want, order, msgs)
		}
		last = i
	}
}

func indexFrom(s []string, v string, from int) int {
	for i := from; i < len(s); i++ {
		if s[i] == v {
			return i
		}
	}
	return -1
}

// waitTaskState waits until the task is in state and returns its info.
func waitTaskState(tb testing.TB, in *asynq.Inspector, queue, id string, state asynq.TaskState, timeout time.Duration) *asynq.TaskInfo {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		info, err := in.GetTaskInfo(queue, id)
		if err == nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task %s: not %v within %v (info %+v, err %v)", id, state, timeout, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
