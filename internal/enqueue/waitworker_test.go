package enqueue_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/internal/enqueue"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// dbWaitWorker is the test Redis database of TestWaitWithWorker.
const dbWaitWorker = 48

// TestWaitWithWorker runs a real worker (with its task events on, the
// default) and `enqueue --wait` against it: the handler reports progress
// in five steps and, after each, holds the task until the command's bar
// shows the step; then the command prints the result and exits 0.
func TestWaitWithWorker(t *testing.T) {
	url := redistest.URL(t, dbWaitWorker)
	var stdout, stderr proctest.Buffer
	type report struct {
		step  int
		after time.Duration
	}
	reports := make(chan report, 5)
	stepsType := tasks.Define("waitworker:steps", "Reports progress in five steps.",
		func(ctx context.Context, deps tasks.Deps, _ struct{}) ([]byte, error) {
			for i := 1; i <= 5; i++ {
				mark := fmt.Sprintf("step %d of 5", i)
				start := time.Now()
				if err := deps.ReportProgress(ctx, float64(i*20-10), mark); err != nil {
					return nil, err
				}
				for !strings.Contains(stderr.String(), mark) {
					if time.Since(start) > 10*time.Second {
						return nil, fmt.Errorf("the bar did not show %q within 10s", mark)
					}
					select {
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-time.After(time.Millisecond):
					}
				}
				reports <- report{i, time.Since(start)}
			}
			return []byte(`{"steps":5}`), nil
		}, asynq.MaxRetry(0))
	flush(t, url) // StartWorker uses the database as it is
	forgeqtest.StartWorker(t, worker.New("waitworker").Register(stepsType), forgeqtest.WorkerOptions{Env: map[string]string{
		"REDIS_CONNECTION_URL": url,
		"REDIS_EMBEDDED":       "",
	}})
	reg, err := tasks.NewRegistry(stepsType)
	if err != nil {
		t.Fatal(err)
	}
	code := enqueue.Run(context.Background(), enqueue.Params{
		Prog: "enqueue", Registry: reg, Getenv: func(k string) string { return map[string]string{"REDIS_CONNECTION_URL": url}[k] },
		Stdout: &stdout, Stderr: &stderr,
	}, []string{"waitworker:steps", "{}", "--wait", "--wait-timeout", "30s", "--progress", "always"})
	if code != 0 {
		t.Fatalf("exit %d; stdout %q; stderr %q", code, stdout.String(), stderr.String())
	}
	close(reports)
	// How soon each step shows (events, not the state check) is
	// TestWaitFollowsEvents's and BenchmarkWaitLatency's; here, that each
	// does.
	n := 0
	for range reports {
		n++
	}
	if n != 5 {
		t.Errorf("%d steps shown, want 5", n)
	}
	if out := stdout.String(); !strings.Contains(out, "completed after") || !strings.Contains(out, `result: {"steps":5}`) {
		t.Errorf("stdout %q, want the completed task's result", out)
	}
	if !strings.Contains(stderr.String(), "100% |") {
		t.Errorf("stderr %q, want the full bar", stderr.String())
	}
}

// flush empties database url of the test Redis.
func flush(tb testing.TB, url string) {
	tb.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
}
