package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
)

func TestCheckDedup(t *testing.T) {
	for _, tt := range []struct {
		name      string
		give      tasks.Dedup
		giveDelay time.Duration
		wantErr   string
	}{
		{"keep", tasks.Dedup{Key: "user:42"}, 0, ""},
		{"replace at finish", tasks.Dedup{Key: "k", Mode: tasks.DedupReplace, Release: tasks.ReleaseOnFinish}, 0, ""},
		{"debounce", tasks.Dedup{Key: "k", Mode: tasks.DedupDebounce, MaxDelay: time.Minute}, 10 * time.Second, ""},
		{"empty key", tasks.Dedup{}, 0, `dedup_key "": is empty; want 1 to 256 bytes`},
		{"long key", tasks.Dedup{Key: strings.Repeat("k", 257)}, 0, "is 257 bytes, over the 256-byte limit"},
		{"control character", tasks.Dedup{Key: "a\nb"}, 0, `dedup_key "a\nb": has a control character`},
		{"not UTF-8", tasks.Dedup{Key: "a\xffb"}, 0, "is not valid UTF-8"},
		{"bad mode", tasks.Dedup{Key: "k", Mode: "skip"}, 0, `dedup_mode "skip": want keep, replace or debounce`},
		{"bad release", tasks.Dedup{Key: "k", Release: "end"}, 0, `dedup_release "end": want start or finish`},
		{"max delay without debounce", tasks.Dedup{Key: "k", MaxDelay: time.Minute}, 0, `dedup_max_delay "1m0s": is only for dedup mode debounce`},
		{"debounce without delay", tasks.Dedup{Key: "k", Mode: tasks.DedupDebounce, MaxDelay: time.Minute}, 0, "needs a delay"},
		{"debounce without max delay", tasks.Dedup{Key: "k", Mode: tasks.DedupDebounce}, time.Second, "is required with dedup mode debounce"},
		{"max delay under the delay", tasks.Dedup{Key: "k", Mode: tasks.DedupDebounce, MaxDelay: time.Second}, time.Minute, "want at least the delay (1m0s)"},
		{"max delay too long", tasks.Dedup{Key: "k", Mode: tasks.DedupDebounce, MaxDelay: 400 * 24 * time.Hour}, time.Minute, "want at most 366 days"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tasks.CheckDedup(tt.give, tt.giveDelay)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckDedup: %v", err)
				}
				return
			}
			var oe *tasks.OptionError
			if !errors.As(err, &oe) || !errors.Is(err, tasks.ErrInvalidOption) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CheckDedup: %v; want an *OptionError saying %q", err, tt.wantErr)
			}
		})
	}
}

// dedupItem is a task of type dedup:t on queue with payload and key.
func dedupItem(queue, payload string, d tasks.Dedup, opts ...asynq.Option) tasks.BatchItem {
	return tasks.BatchItem{Type: "dedup:t", Payload: []byte(payload), Options: append([]asynq.Option{asynq.Queue(queue)}, opts...), Dedup: &d}
}

func enqueueOne(tb testing.TB, rdb redis.UniversalClient, it tasks.BatchItem) tasks.BatchResult {
	tb.Helper()
	res, err := tasks.EnqueueBatch(context.Background(), rdb, []tasks.BatchItem{it})
	if err != nil {
		tb.Fatal(err)
	}
	return res[0]
}

// TestDedupModes runs each mode on miniredis and real Redis.
func TestDedupModes(t *testing.T) {
	for _, backend := range []struct {
		name string
		rdb  func(testing.TB) redis.UniversalClient
	}{
		{"miniredis", miniRedis},
		{"redis", func(tb testing.TB) redis.UniversalClient { return realRedis(tb) }},
		{"cluster", func(tb testing.TB) redis.UniversalClient { return clusterRedis(tb) }},
	} {
		t.Run(backend.name, func(t *testing.T) {
			rdb := backend.rdb(t)
			insp := asynq.NewInspectorFromRedisClient(rdb)
			queue := fmt.Sprintf("dedup-%d", time.Now().UnixNano())
			payload := func(id string) string {
				ti, err := insp.GetTaskInfo(queue, id)
				if err != nil {
					t.Fatal(err)
				}
				return string(ti.Payload)
			}

			t.Run("keep", func(t *testing.T) {
				d := tasks.Dedup{Key: "keep"}
				first := enqueueOne(t, rdb, dedupItem(queue, `{"v":1}`, d))
				second := enqueueOne(t, rdb, dedupItem(queue, `{"v":2}`, d))
				if first.Deduplicated != "" || second.Deduplicated != tasks.DedupKeep || second.ID != first.ID || second.State != asynq.TaskStatePending {
					t.Errorf("first %+v, second %+v; want the second kept as the first", first, second)
				}
				if got := payload(first.ID); got != `{"v":1}` {
					t.Errorf("payload %s; want the first", got)
				}
			})
			t.Run("replace", func(t *testing.T) {
				d := tasks.Dedup{Key: "replace", Mode: tasks.DedupReplace}
				first := enqueueOne(t, rdb, dedupItem(queue, `{"v":1}`, d, asynq.ProcessIn(time.Hour)))
				second := enqueueOne(t, rdb, dedupItem(queue, `{"v":2}`, d, asynq.ProcessIn(2*time.Hour)))
				if second.Deduplicated != tasks.DedupReplace || second.ID != first.ID || !second.ProcessAt.Equal(first.ProcessAt) {
					t.Errorf("first %+v, second %+v; want the first replaced, its run time kept", first, second)
				}
				if got := payload(first.ID); got != `{"v":2}` {
					t.Errorf("payload %s; want the second", got)
				}
			})
			t.Run("debounce", func(t *testing.T) {
				d := tasks.Dedup{Key: "debounce", Mode: tasks.DedupDebounce, MaxDelay: 3 * time.Second}
				start := time.Now()
				first := enqueueOne(t, rdb, dedupItem(queue, `{"v":1}`, d, asynq.ProcessIn(time.Second)))
				second := enqueueOne(t, rdb, dedupItem(queue, `{"v":2}`, d, asynq.ProcessIn(2*time.Second)))
				if second.Deduplicated != tasks.DedupDebounce || second.ID != first.ID || second.ProcessAt.Unix() < start.Add(2*time.Second).Unix() {
					t.Errorf("first %+v, second %+v; want the first pushed back to 2s", first, second)
				}
				time.Sleep(1200 * time.Millisecond)
				third := enqueueOne(t, rdb, dedupItem(queue, `{"v":3}`, d, asynq.ProcessIn(3*time.Second)))
				// Capped at 3s after the first enqueue, not 4.2s.
				if got := third.ProcessAt.Unix() - start.Add(3*time.Second).Unix(); got < 0 || got > 1 {
					t.Errorf("third runs at %v, %ds past the cap %v", third.ProcessAt, got, start.Add(3*time.Second))
				}
				ti, err := insp.GetTaskInfo(queue, first.ID)
				if err != nil {
					t.Fatal(err)
				}
				if string(ti.Payload) != `{"v":3}` || !ti.NextProcessAt.Equal(third.ProcessAt) || ti.State != asynq.TaskStateScheduled {
					t.Errorf("task %s %v at %v; want the last payload scheduled at %v", ti.Payload, ti.State, ti.NextProcessAt, third.ProcessAt)
				}
			})
			// A task a rate limit or cap postponed is in retry without
			// having started: its key (release at start) still holds it.
			t.Run("postponed holder", func(t *testing.T) {
				ctx := context.Background()
				d := tasks.Dedup{Key: "postponed"}
				first := enqueueOne(t, rdb, dedupItem(queue, `{"v":1}`, d))
				prefix := "asynq:{" + queue + "}:"
				if err := rdb.LRem(ctx, prefix+"pending", 0, first.ID).Err(); err != nil {
					t.Fatal(err)
				}
				if err := rdb.ZAdd(ctx, prefix+"retry", redis.Z{Score: float64(time.Now().Add(time.Second).Unix()), Member: first.ID}).Err(); err != nil {
					t.Fatal(err)
				}
				if err := rdb.HSet(ctx, prefix+"t:"+first.ID, "state", "retry").Err(); err != nil {
					t.Fatal(err)
				}
				second := enqueueOne(t, rdb, dedupItem(queue, `{"v":2}`, d))
				if second.ID != first.ID || second.Deduplicated != tasks.DedupKeep {
					t.Fatalf("second %+v; want the postponed task kept", second)
				}
				d.Mode = tasks.DedupReplace
				third := enqueueOne(t, rdb, dedupItem(queue, `{"v":3}`, d))
				if third.ID != first.ID || third.Deduplicated != tasks.DedupReplace {
					t.Fatalf("third %+v; want the postponed task replaced", third)
				}
				if got := payload(first.ID); got != `{"v":3}` {
					t.Errorf("payload %s; want the replacement", got)
				}
			})
			t.Run("in one batch", func(t *testing.T) {
				d := tasks.Dedup{Key: "batch", Mode: tasks.DedupReplace}
				res, err := tasks.EnqueueBatch(context.Background(), rdb, []tasks.BatchItem{
					dedupItem(queue, `{"v":1}`, d), dedupItem(queue, `{"v":2}`, d), dedupItem(queue, `{"v":3}`, d),
				})
				if err != nil {
					t.Fatal(err)
				}
				if res[1].ID != res[0].ID || res[2].ID != res[0].ID || res[2].Deduplicated != tasks.DedupReplace {
					t.Errorf("results %+v; want one task", res)
				}
				if got := payload(res[0].ID); got != `{"v":3}` {
					t.Errorf("payload %s; want the last", got)
				}
			})
			t.Run("released", func(t *testing.T) {
				d := tasks.Dedup{Key: "released"}
				first := enqueueOne(t, rdb, dedupItem(queue, `{"v":1}`, d))
				if ok, err := tasks.ReleaseDedup(context.Background(), rdb, queue, "released", "another"); ok || err != nil {
					t.Errorf("ReleaseDedup by another task = %v, %v; want false", ok, err)
				}
				if ok, err := tasks.ReleaseDedup(context.Background(), rdb, queue, "released", first.ID); !ok || err != nil {
					t.Errorf("ReleaseDedup = %v, %v; want true", ok, err)
				}
				second := enqueueOne(t, rdb, dedupItem(queue, `{"v":2}`, d))
				if second.Deduplicated != "" || second.ID == first.ID {
					t.Errorf("after release: %+v; want a new task", second)
				}
				// A held task that is gone frees its key too.
				if err := insp.DeleteTask(queue, second.ID); err != nil {
					t.Fatal(err)
				}
				third := enqueueOne(t, rdb, dedupItem(queue, `{"v":3}`, d))
				if third.Deduplicated != "" || third.ID == second.ID {
					t.Errorf("after delete: %+v; want a new task", third)
				}
			})
			t.Run("running", func(t *testing.T) {
				// A task that started: with release at start its key is
				// free; at finish, keep returns it and replace conflicts.
				start := tasks.Dedup{Key: "run-start", Mode: tasks.DedupReplace}
				finish := tasks.Dedup{Key: "run-finish", Mode: tasks.DedupReplace, Release: tasks.ReleaseOnFinish}
				a := enqueueOne(t, rdb, dedupItem(queue, `{"v":1}`, start))
				b := enqueueOne(t, rdb, dedupItem(queue, `{"v":1}`, finish))
				for _, id := range []string{a.ID, b.ID} {
					if err := rdb.HSet(context.Background(), "asynq:{"+queue+"}:t:"+id, "state", "active").Err(); err != nil {
						t.Fatal(err)
					}
				}
				if got := enqueueOne(t, rdb, dedupItem(queue, `{"v":2}`, start)); got.Deduplicated != "" || got.ID == a.ID {
					t.Errorf("release at start, running: %+v; want a new task", got)
				}
				keep := finish
				keep.Mode = tasks.DedupKeep
				if got := enqueueOne(t, rdb, dedupItem(queue, `{"v":2}`, keep)); got.Deduplicated != tasks.DedupKeep || got.ID != b.ID || got.State != asynq.TaskStateActive {
					t.Errorf("release at finish, running, keep: %+v; want the running task", got)
				}
				_, err := tasks.EnqueueBatch(context.Background(), rdb, []tasks.BatchItem{dedupItem(queue, `{"v":2}`, finish)})
				var be *tasks.BatchError
				if !errors.Is(err, tasks.ErrDedupConflict) || !errors.As(err, &be) || be.Holder != b.ID || be.HolderState != "active" {
					t.Errorf("release at finish, running, replace: %v; want ErrDedupConflict naming %s (active)", err, b.ID)
				}
			})
		})
	}
}

// TestDedupConcurrentProducers has 50 producers enqueue with one key at
// once on real Redis, each mode in turn: exactly one task exists, every
// producer is told its id, and exactly one of them made it.
func TestDedupConcurrentProducers(t *testing.T) {
	for _, backend := range []struct {
		name string
		rdb  func(testing.TB) redis.UniversalClient
	}{
		{"redis", func(tb testing.TB) redis.UniversalClient { return realRedis(tb) }},
		{"cluster", func(tb testing.TB) redis.UniversalClient { return clusterRedis(tb) }},
	} {
		t.Run(backend.name, func(t *testing.T) {
			rdb := backend.rdb(t)
			insp := asynq.NewInspectorFromRedisClient(rdb)
			for _, d := range []tasks.Dedup{
				{Key: "k", Mode: tasks.DedupKeep},
				{Key: "k", Mode: tasks.DedupReplace},
				{Key: "k", Mode: tasks.DedupDebounce, MaxDelay: time.Hour},
			} {
				t.Run(string(d.Mode), func(t *testing.T) {
					queue := fmt.Sprintf("producers-%s-%d", d.Mode, time.Now().UnixNano())
					const producers = 50
					var (
						wg      sync.WaitGroup
						results = make([]tasks.BatchResult, producers)
						errs    = make([]error, producers)
					)
					start := make(chan struct{})
					for i := range producers {
						wg.Go(func() {
							<-start
							res, err := tasks.EnqueueBatch(context.Background(), rdb,
								[]tasks.BatchItem{dedupItem(queue, fmt.Sprintf(`{"p":%d}`, i), d, asynq.ProcessIn(time.Minute))})
							if err == nil {
								results[i] = res[0]
							}
							errs[i] = err
						})
					}
					close(start)
					wg.Wait()
					made, ids := 0, map[string]bool{}
					for i, err := range errs {
						if err != nil {
							t.Fatalf("producer %d: %v", i, err)
						}
						ids[results[i].ID] = true
						if results[i].Deduplicated == "" {
							made++
						} else if results[i].Deduplicated != d.Mode {
							t.Errorf("producer %d: deduplicated as %q; want %q", i, results[i].Deduplicated, d.Mode)
						}
					}
					qi, err := insp.GetQueueInfo(queue)
					if err != nil {
						t.Fatal(err)
					}
					if made != 1 || len(ids) != 1 || qi.Size != 1 {
						t.Errorf("%d producers made a task, %d ids returned, the queue holds %d; want 1, 1, 1", made, len(ids), qi.Size)
					}
				})
			}
		})
	}
}
