package forgeqtest

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/worker"
)

// Defaults of WorkerOptions.
const (
	DefaultStartTimeout = 30 * time.Second
	DefaultStopTimeout  = 30 * time.Second
)

// WorkerOptions configure StartWorker. The zero value runs the worker with
// StartWorker's environment and no flags.
type WorkerOptions struct {
	// Env holds settings (environment variables, as in `NAME --help`) on
	// top of StartWorker's; an empty value unsets one of those. The
	// worker sees no other variable of the test's environment.
	Env map[string]string
	// Args are the worker's flags, as os.Args[1:] would hold them.
	Args []string
	// StartTimeout bounds the wait for the worker to run. Default
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// StopTimeout bounds the wait for the worker to stop once its context
	// is cancelled. Default DefaultStopTimeout.
	StopTimeout time.Duration
}

// Worker is a worker started by StartWorker, running in the test process.
// Its methods are safe for concurrent use.
type Worker struct {
	started     worker.Started
	cancel      context.CancelFunc
	done        chan int // Run's exit code, once
	stopTimeout time.Duration
	log         *syncBuffer

	stopOnce sync.Once
	code     int // Run's exit code, once it has returned
}

// StartWorker runs app.Run in a goroutine, with o.Args and an environment
// of its own: an embedded in-memory Redis (REDIS_EMBEDDED=true: a
// redis-server child process when redis-server is on PATH, else miniredis)
// on a free loopback port (REDIS_EMBEDDED_ADDR=127.0.0.1:0), the web process on
// another (HTTP_ADDR=127.0.0.1:0), JSON logs (LOG_FORMAT=json), a 5s
// WORKER_SHUTDOWN_TIMEOUT, then o.Env. It returns once the worker runs:
// its Redis started, its web process listening and its asynq server
// taking tasks. The worker's log is kept (Logs) and shown when the test
// fails.
//
// At cleanup the worker is stopped (Stop) and must exit with code 0. The
// embedded Redis and its data go with it.
func StartWorker(tb testing.TB, app *worker.App, o WorkerOptions) *Worker {
	tb.Helper()
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	env := map[string]string{
		"REDIS_EMBEDDED":          "true",
		"REDIS_EMBEDDED_ADDR":     "127.0.0.1:0",
		"HTTP_ADDR":               "127.0.0.1:0",
		"LOG_FORMAT":              "json",
		"WORKER_SHUTDOWN_TIMEOUT": "5s",
	}
	maps.Copy(env, o.Env)

	ctx, cancel := context.WithCancel(context.Background())
	w := &Worker{cancel: cancel, done: make(chan int, 1), stopTimeout: o.StopTimeout, log: &syncBuffer{}}
	started := make(chan worker.Started, 1)
	tb.Cleanup(func() {
		// Registered first, so it runs last: after Stop, with the
		// shutdown's lines in the log.
		if tb.Failed() {
			tb.Logf("forgeqtest: worker log:\n%s", w.log)
		}
	})
	go func() {
		w.done <- app.Run(ctx, o.Args, worker.Env{
			Getenv: func(k string) string { return env[k] },
			Stdin:  strings.NewReader(""),
			Stdout: w.log,
			Stderr: w.log,
			Started: func(s worker.Started) {
				select {
				case started <- s:
				default:
				}
			},
		})
	}()
	tb.Cleanup(func() { w.Stop(tb) })

	select {
	case w.started = <-started:
	case code := <-w.done:
		w.code = code
		w.stopOnce.Do(func() {}) // it has stopped: Stop has nothing to wait for
		tb.Fatalf("forgeqtest: the worker exited with code %d before it ran; log:\n%s", code, w.log)
	case <-time.After(o.StartTimeout):
		tb.Fatalf("forgeqtest: the worker did not run within %v; log:\n%s", o.StartTimeout, w.log)
	}
	return w
}

// Stop cancels the worker's context, waits for it to shut down and fails
// the test unless it exits with code 0 in time. Later calls only report
// the first one's outcome; cleanup calls it.
func (w *Worker) Stop(tb testing.TB) {
	tb.Helper()
	w.stopOnce.Do(func() {
		w.cancel()
		select {
		case code := <-w.done:
			w.code = code
		case <-time.After(w.stopTimeout):
			tb.Errorf("forgeqtest: the worker did not stop within %v of its context's end", w.stopTimeout)
			return
		}
		if w.code != 0 {
			tb.Errorf("forgeqtest: the worker exited with code %d, want 0", w.code)
		}
	})
}

// Client returns the worker's asynq client (on the worker's Redis client):
// enqueue with it, or with a tasks.Type's Enqueue. Valid until the worker
// stops.
func (w *Worker) Client() *asynq.Client { return w.started.Client }

// Inspector returns the worker's asynq inspector. Valid until the worker
// stops.
func (w *Worker) Inspector() *asynq.Inspector { return w.started.Inspector }

// Manager returns the worker's cache manager: read what handlers stored.
// Valid until the worker stops.
func (w *Worker) Manager() *cachemgr.Manager { return w.started.Manager }

// Services returns everything the worker handed its routes.
func (w *Worker) Services() worker.Services { return w.started.Services }

// RedisURL returns the URL of the worker's Redis (the embedded one, unless
// Env points it elsewhere), e.g. for the enqueue command.
func (w *Worker) RedisURL() string { return w.started.RedisURL }

// HTTPAddr returns the web process's host:port, "" when Env turned it off.
func (w *Worker) HTTPAddr() string { return w.started.HTTPAddr }

// URL returns the web process's URL for path ("/health/ready").
func (w *Worker) URL(path string) string { return "http://" + w.started.HTTPAddr + path }

// Logs returns the worker's output so far: its JSON log lines, and what it
// printed.
func (w *Worker) Logs() string { return w.log.String() }

// waitPoll is how often WaitTask looks at a task.
const waitPoll = 20 * time.Millisecond

// WaitTask waits up to timeout until the task id of queue is completed or
// archived (failed for good), and returns its TaskInfo: State, Result,
// LastErr. A task that is not there yet is waited for.
//
// asynq deletes a completed task at once unless it has a retention, so
// only tasks enqueued with asynq.Retention (or a type whose defaults have
// one) can be seen completed: WaitTask would wait for others until it
// fails. An archived task is kept either way.
func (w *Worker) WaitTask(tb testing.TB, queue, id string, timeout time.Duration) *asynq.TaskInfo {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var (
		last *asynq.TaskInfo
		err  error
	)
	for {
		last, err = w.Inspector().GetTaskInfo(queue, id)
		if err == nil && (last.State == asynq.TaskStateCompleted || last.State == asynq.TaskStateArchived) {
			return last
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
			tb.Fatalf("forgeqtest: task %s of queue %s: %v", id, queue, err)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(waitPoll)
	}
	if err != nil {
		tb.Fatalf("forgeqtest: task %s of queue %s not found after %v (a completed task without a retention is deleted at once: enqueue it with asynq.Retention)", id, queue, timeout)
	}
	tb.Fatalf("forgeqtest: task %s of queue %s still %s after %v (last error %q)", id, queue, last.State, timeout, last.LastErr)
	return nil
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
