package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()

	least := func(int64) int64 { return 0 }
	most := func(k int64) int64 { return k - 1 }
	tests := []struct {
		name             string
		giveMin, giveMax time.Duration
		giveRetried      int
		wantLo, wantHi   time.Duration // with no jitter, with the most
	}{
		{name: "first retry", giveMin: time.Second, giveMax: time.Minute, giveRetried: 0, wantLo: time.Second, wantHi: 1500 * time.Millisecond},
		{name: "second retry doubles", giveMin: time.Second, giveMax: time.Minute, giveRetried: 1, wantLo: 2 * time.Second, wantHi: 3 * time.Second},
		{name: "third retry doubles again", giveMin: time.Second, giveMax: time.Minute, giveRetried: 2, wantLo: 4 * time.Second, wantHi: 6 * time.Second},
		{name: "sixth retry", giveMin: time.Second, giveMax: time.Minute, giveRetried: 5, wantLo: 32 * time.Second, wantHi: 48 * time.Second},
		{name: "jitter capped", giveMin: time.Second, giveMax: 40 * time.Second, giveRetried: 5, wantLo: 32 * time.Second, wantHi: 40 * time.Second},
		{name: "doubling capped", giveMin: time.Second, giveMax: time.Minute, giveRetried: 6, wantLo: time.Minute, wantHi: time.Minute},
		{name: "far past the cap", giveMin: time.Second, giveMax: time.Minute, giveRetried: 1000, wantLo: time.Minute, wantHi: time.Minute},
		{name: "huge cap does not overflow", giveMin: time.Second, giveMax: time.Duration(1<<63 - 1), giveRetried: 200, wantLo: time.Duration(1<<63 - 1), wantHi: time.Duration(1<<63 - 1)},
		{name: "min equals max", giveMin: 5 * time.Second, giveMax: 5 * time.Second, giveRetried: 0, wantLo: 5 * time.Second, wantHi: 5 * time.Second},
		{name: "defaults: first retry", giveMin: 10 * time.Second, giveMax: time.Hour, giveRetried: 0, wantLo: 10 * time.Second, wantHi: 15 * time.Second},
		{name: "defaults: capped at the ninth retry", giveMin: 10 * time.Second, giveMax: time.Hour, giveRetried: 9, wantLo: time.Hour, wantHi: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := retryDelay(tt.giveMin, tt.giveMax, least)(tt.giveRetried, nil, nil); got != tt.wantLo {
				t.Errorf("no jitter: delay %v, want %v", got, tt.wantLo)
			}
			if got := retryDelay(tt.giveMin, tt.giveMax, most)(tt.giveRetried, nil, nil); got != tt.wantHi {
				t.Errorf("most jitter: delay %v, want %v", got, tt.wantHi)
			}
		})
	}
}

// TestRetryDelayJitter checks that with real randomness a burst of
// failures gets delays spread over the whole jitter range.
func TestRetryDelayJitter(t *testing.T) {
	t.Parallel()

	f := retryDelay(time.Second, time.Hour, rand.Int64N)
	const lo, hi = 2 * time.Second, 3 * time.Second // the second retry
	seen := map[time.Duration]bool{}
	var below, above int // below and above the middle of the range
	for range 1000 {
		d := f(1, nil, nil)
		if d < lo || d > hi {
			t.Fatalf("delay %v outside [%v, %v]", d, lo, hi)
		}
		seen[d] = true
		if d < (lo+hi)/2 {
			below++
		} else {
			above++
		}
	}
	// Lockstep would be one value; uniform jitter puts about 500 on each
	// side of the middle.
	if len(seen) < 900 || below < 350 || above < 350 {
		t.Errorf("1000 delays: %d distinct, %d below and %d above the middle; want them spread", len(seen), below, above)
	}
}

// TestRunRetriesAfterConfiguredDelay runs the whole worker in-process on
// the test Redis with WORKER_RETRY_DELAY_MIN=4s. A data:process task fails
// on its first attempt (its cache key holds a list, so reading it fails
// with WRONGTYPE), is scheduled for a retry 4 to 6 seconds later (asynq's
// default would be 15 to 45 seconds), and once the key is fixed (which
// the delay leaves seconds for, on a loaded machine too) the retry
// succeeds.
func TestRunRetriesAfterConfiguredDelay(t *testing.T) {
	t.Parallel()

	url := flushedURL(t, benchDB)
	rdb := redisClient(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const key = "retry:1"
	if err := rdb.LPush(ctx, "cache:"+key, "not a string").Err(); err != nil {
		t.Fatal(err)
	}

	log := &logBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, env(map[string]string{
			"REDIS_CONNECTION_URL": url, "LOG_FORMAT": "json", "HTTP_ADDR": "off",
			"WORKER_SHUTDOWN_TIMEOUT": "2s", "WORKER_RETRY_DELAY_MIN": "4s", "WORKER_RETRY_DELAY_MAX": "1m",
		}), &bytes.Buffer{}, log)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", log)
		}
	})
	log.waitMsg(t, "worker started", 10*time.Second)
	if e := log.withMsg("worker starting"); len(e) != 1 || e[0]["retry_delay_min"] != 4.0 || e[0]["retry_delay_max"] != 60.0 {
		t.Errorf("worker starting = %v, want retry_delay_min 4 and retry_delay_max 60 (seconds)", e)
	}

	task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: key, Work: 1000}, asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	info, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	in := asynq.NewInspectorFromRedisClient(rdb)

	failed := waitTaskState(t, in, info.Queue, info.ID, asynq.TaskStateRetry, 10*time.Second)
	if failed.Retried != 1 || !strings.Contains(failed.LastErr, "WRONGTYPE") {
		t.Errorf("after the first attempt: retried %d, last error %q; want 1 and WRONGTYPE", failed.Retried, failed.LastErr)
	}
	// asynq keeps both times in whole seconds: a delay in [4s, 6s] (4s
	// plus up to half again) shows as 4s to 6s.
	if d := failed.NextProcessAt.Sub(failed.LastFailedAt); d < 4*time.Second || d > 6*time.Second {
		t.Errorf("retry scheduled %v after the failure, want 4s to 6s", d)
	}
	if err := rdb.Del(ctx, "cache:"+key).Err(); err != nil {
		t.Fatal(err)
	}

	// Generous, yet below the 15s that asynq's default delay waits at least.
	got := waitTaskState(t, in, info.Queue, info.ID, asynq.TaskStateCompleted, 12*time.Second)
	if got.Retried != 1 {
		t.Errorf("completed after %d retries, want 1", got.Retried)
	}
	// The retry was due at the start of a whole second at least 4s after
	// the one the failure fell in.
	if d := got.CompletedAt.Sub(got.LastFailedAt); d < 4*time.Second {
		t.Errorf("retry completed %v after the failure, want at least the 4s delay", d)
	}
	var res tasks.ProcessDataResult
	if err := json.Unmarshal(got.Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Value != tasks.Digest(key, 1000) || res.Source != tasks.SourceComputed {
		t.Errorf("result %+v, want the computed digest", res)
	}
	var outcomes []any
	for _, e := range log.entries() {
		if e["task_id"] == info.ID && (e["msg"] == "task failed" || e["msg"] == "task done") {
			outcomes = append(outcomes, e["outcome"])
		}
	}
	if d := cmp.Diff([]any{"retry", "done"}, outcomes); d != "" {
		t.Errorf("task log outcomes (-want +got)\n%s", d)
	}
}
