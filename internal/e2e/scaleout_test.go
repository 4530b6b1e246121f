package e2e

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
)

// TestScaleOut runs three worker processes on one Redis deployment,
// enqueues 300 data:process tasks with the CLI, and wants every task run
// exactly once, with the work spread over all three workers.
func TestScaleOut(t *testing.T) {
	t.Parallel()

	const (
		workers = 3
		count   = 300
		work    = 20_000 // a few milliseconds each
	)
	tests := []struct {
		name    string
		giveURL func(testing.TB) string
	}{
		{name: "single", giveURL: func(tb testing.TB) string { return proctest.RedisServer(tb).URL() }},
		{name: "cluster", giveURL: redistest.ClusterURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			url := tt.giveURL(t)
			name := uniqueName(t) // the queue, and the prefix of task ids and cache keys
			m := manager(t, url, nil)
			// Registered before the workers start, so it runs after
			// they are gone.
			t.Cleanup(func() { removeQueue(t, m, name, name) })

			ws := startWorkers(t, workers, workerEnv(url, name))
			ts := processTasks(name, count, work)
			start := time.Now()
			out := runEnqueue(t, []string{"REDIS_CONNECTION_URL=" + url}, "--file", writeTaskFile(t, ts, name))
			t.Logf("enqueue: %s", out.Stdout())

			insp := asynq.NewInspectorFromRedisClient(m.Client())
			q := waitCompleted(t, insp, name, count, 2*time.Minute)
			took := time.Since(start)
			stopWorkers(t, ws) // flushes their logs

			if q.Completed != count || q.ProcessedTotal != count || q.FailedTotal != 0 {
				t.Errorf("queue %s: %d completed, %d processed, %d failed; want %d, %d, 0",
					name, q.Completed, q.ProcessedTotal, q.FailedTotal, count, count)
			}
			if failed := failedLines(ws); len(failed) > 0 {
				t.Errorf("%d tasks failed or were interrupted:\n%v", len(failed), failed)
			}
			checkResults(t, insp, name, ts)

			per := doneCounts(ws, name)
			all := sumCounts(per)
			for _, task := range ts {
				if n := all[task.ID]; n != 1 {
					t.Errorf("task %s: %d \"task done\" lines across the workers, want 1", task.ID, n)
				}
			}
			if len(all) != count {
				t.Errorf("%d distinct task ids done, want %d", len(all), count)
			}
			spread := make([]int, len(per))
			for i, m := range per {
				for _, n := range m {
					spread[i] += n
				}
				if spread[i] == 0 {
					t.Errorf("%s ran no task", ws[i])
				}
			}
			t.Logf("%d tasks on %d workers in %v; tasks per worker: %v", count, workers, took.Round(time.Millisecond), spread)
		})
	}
}
