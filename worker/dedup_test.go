package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// dedupDB is the test database of the dedup middleware's tests.
const dedupDB = 54

// TestDedupRelease runs tasks enqueued with a dedup key on an asynq server
// with the middleware, on real Redis: with release at start the key is
// free while the handler runs; at finish it is held until the handler
// returns, and a failure with a retry left keeps it.
func TestDedupRelease(t *testing.T) {
	opt, err := redis.ParseURL(redistest.URL(t, dedupDB))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		key  string
		held int64 // EXISTS of the key while the handler ran
	}
	ran := make(chan seen, 10)
	release := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.Use(newDedupRelease(rdb, zaptest.NewLogger(t)).middleware)
	mux.HandleFunc("dedup:run", func(ctx context.Context, task *asynq.Task) error {
		key, _, _ := tasks.DedupOf(task)
		q, _ := asynq.GetQueueName(ctx)
		ran <- seen{key, rdb.Exists(ctx, tasks.DedupKey(q, key)).Val()}
		<-release
		if string(task.Payload()) == "fail" {
			return errors.New("failed")
		}
		return nil
	})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 4, LogLevel: asynq.FatalLevel,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour }})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	for _, tt := range []struct {
		name          string
		givePayload   string
		giveRelease   tasks.DedupRelease
		wantHeldWhile int64
		wantHeldAfter int64
	}{
		{"start", "ok", tasks.ReleaseOnStart, 0, 0},
		{"finish", "ok", tasks.ReleaseOnFinish, 1, 0},
		{"finish, failed with a retry left", "fail", tasks.ReleaseOnFinish, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprint("key-", tt.giveRelease, "-", tt.givePayload)
			if _, err := tasks.EnqueueBatch(ctx, rdb, []tasks.BatchItem{{Type: "dedup:run", Payload: []byte(tt.givePayload),
				Options: []asynq.Option{asynq.MaxRetry(1)}, Dedup: &tasks.Dedup{Key: key, Release: tt.giveRelease}}}); err != nil {
				t.Fatal(err)
			}
			var s seen
			select {
			case s = <-ran:
			case <-time.After(10 * time.Second):
				t.Fatal("the task did not run")
			}
			if s.key != key || s.held != tt.wantHeldWhile {
				t.Errorf("while running: key %q held %d; want %q held %d", s.key, s.held, key, tt.wantHeldWhile)
			}
			release <- struct{}{}
			deadline := time.Now().Add(5 * time.Second)
			for {
				held := rdb.Exists(ctx, tasks.DedupKey("default", key)).Val()
				if held == tt.wantHeldAfter {
					if tt.wantHeldAfter == 1 {
						time.Sleep(200 * time.Millisecond) // and stays held
						if rdb.Exists(ctx, tasks.DedupKey("default", key)).Val() != 1 {
							t.Error("key released after a failure with a retry left")
						}
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the task: key held %d; want %d", held, tt.wantHeldAfter)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
