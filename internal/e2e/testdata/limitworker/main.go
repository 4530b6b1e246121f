// Command limitworker is the worker of the limit tests
// (internal/e2e/limits_test.go): forgeq's worker with three test-only task
// types that declare limits, named after LIMIT_TEST_PREFIX so that every
// test run has its own:
//
//   - PREFIX:rated: at most 20 start per second (RateLimit(20, time.Second));
//   - PREFIX:capped: at most 3 run at once (MaxConcurrent(3));
//   - PREFIX:keyed: at most 1 runs at once per key (MaxConcurrentPerKey).
//
// Each handler logs "limit task started", sleeps sleep_ms milliseconds,
// then logs one "limit task ran" line with its start and end (start_us, end_us: Unix microseconds), from
// which the tests compute the observed rate and concurrency.
package main

import (
	"context"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// args is the payload of the test types.
type args struct {
	Key     string `json:"key,omitempty"`
	SleepMS int    `json:"sleep_ms"`
}

// ran sleeps, then logs the call.
func ran(ctx context.Context, deps tasks.Deps, p args) ([]byte, error) {
	start := time.Now()
	id, _ := asynq.GetTaskID(ctx)
	deps.Logger.Info("limit task started", zap.String("task_id", id))
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Duration(p.SleepMS) * time.Millisecond):
	}
	deps.Logger.Info("limit task ran", zap.String("task_id", id), zap.String("key", p.Key),
		zap.Int64("start_us", start.UnixMicro()), zap.Int64("end_us", time.Now().UnixMicro()))
	return nil, nil
}

func main() {
	prefix := os.Getenv("LIMIT_TEST_PREFIX")
	if prefix == "" {
		prefix = "limit"
	}
	rated := tasks.Define(prefix+":rated", "Test only: at most 20 per second.", ran).
		RateLimit(20, time.Second)
	capped := tasks.Define(prefix+":capped", "Test only: at most 3 at once.", ran).
		MaxConcurrent(3)
	keyed := tasks.Define(prefix+":keyed", "Test only: at most 1 at once per key.", ran).
		MaxConcurrentPerKey(1, func(a args) string { return a.Key })
	worker.New("limitworker").Register(rated, capped, keyed).Main()
}
