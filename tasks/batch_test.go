package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// batchDB is the test database of the batch and dedup tests.
const batchDB = 53

// realRedis returns a client on the flushed batch test database.
func realRedis(tb testing.TB) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(redistest.URL(tb, batchDB))
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	tb.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return rdb
}

// clusterRedis returns a client on the test cluster.
func clusterRedis(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	raw := strings.TrimPrefix(redistest.ClusterURL(tb), "redis+cluster://")
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(raw, ",")})
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// miniRedis returns a client on a new miniredis.
func miniRedis(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// TestBatchMatchesAsynqClient enqueues the same tasks with asynq.Client
// and with EnqueueBatch and checks that asynq's Inspector reads them back
// identically, and that the task hashes have the same fields.
func TestBatchMatchesAsynqClient(t *testing.T) {
	rdb := realRedis(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	at := time.Now().Add(time.Hour).Truncate(time.Second)
	for _, tt := range []struct {
		name string
		opts []asynq.Option
	}{
		{"defaults", nil},
		{"queue and retries", []asynq.Option{asynq.Queue("reports"), asynq.MaxRetry(3), asynq.Timeout(90 * time.Second)}},
		{"zero retries", []asynq.Option{asynq.MaxRetry(0)}},
		{"deadline", []asynq.Option{asynq.Deadline(at)}},
		{"deadline and timeout", []asynq.Option{asynq.Deadline(at), asynq.Timeout(time.Minute)}},
		{"retention", []asynq.Option{asynq.Retention(36 * time.Hour)}},
		{"scheduled", []asynq.Option{asynq.ProcessAt(at), asynq.Queue("later")}},
		{"unique", []asynq.Option{asynq.Unique(time.Hour)}},
		{"unique scheduled", []asynq.Option{asynq.Unique(time.Hour), asynq.ProcessAt(at)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Unique tasks need payloads apart.
			want, err := client.EnqueueContext(ctx, asynq.NewTask("batch:test", []byte(`{"by":"asynq","name":"`+tt.name+`"}`), tt.opts...))
			if err != nil {
				t.Fatal(err)
			}
			res, err := tasks.EnqueueBatch(ctx, rdb, []tasks.BatchItem{{Type: "batch:test", Payload: []byte(`{"by":"forgeq","name":"` + tt.name + `"}`), Options: tt.opts}})
			if err != nil {
				t.Fatal(err)
			}
			gotInfo, err := insp.GetTaskInfo(res[0].Queue, res[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			wantInfo, err := insp.GetTaskInfo(want.Queue, want.ID)
			if err != nil {
				t.Fatal(err)
			}
			if res[0].State != wantInfo.State || res[0].Queue != wantInfo.Queue || !res[0].ProcessAt.Equal(nextOrZero(wantInfo)) {
				t.Errorf("result %+v; want state %v, queue %s, process at %v", res[0], wantInfo.State, wantInfo.Queue, nextOrZero(wantInfo))
			}
			ignore := cmpopts.IgnoreFields(asynq.TaskInfo{}, "ID", "Payload", "NextProcessAt")
			if d := cmp.Diff(wantInfo, gotInfo, ignore, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("Inspector reads the batch's task differently (-asynq +batch):\n%s", d)
			}
			if d := gotInfo.NextProcessAt.Sub(wantInfo.NextProcessAt); d < -2*time.Second || d > 2*time.Second {
				t.Errorf("NextProcessAt %v; asynq's %v", gotInfo.NextProcessAt, wantInfo.NextProcessAt)
			}
			wantHash := rdb.HGetAll(ctx, "asynq:{"+want.Queue+"}:t:"+want.ID).Val()
			gotHash := rdb.HGetAll(ctx, "asynq:{"+res[0].Queue+"}:t:"+res[0].ID).Val()
			if d := cmp.Diff(hashFields(wantHash), hashFields(gotHash)); d != "" {
				t.Errorf("task hash fields differ (-asynq +batch):\n%s", d)
			}
		})
	}
	// asynq.Client sees the batch's ids and locks.
	res, err := tasks.EnqueueBatch(ctx, rdb, []tasks.BatchItem{{Type: "batch:test", Payload: []byte(`{"n":1}`), Options: []asynq.Option{asynq.TaskID("taken"), asynq.Unique(time.Hour)}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.EnqueueContext(ctx, asynq.NewTask("batch:test", []byte(`{"n":2}`), asynq.TaskID(res[0].ID))); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("asynq.Client with a batch's id: %v; want ErrTaskIDConflict", err)
	}
	if _, err := client.EnqueueContext(ctx, asynq.NewTask("batch:test", []byte(`{"n":1}`), asynq.Unique(time.Hour))); !errors.Is(err, asynq.ErrDuplicateTask) {
		t.Errorf("asynq.Client with a batch's unique task: %v; want ErrDuplicateTask", err)
	}
}

func nextOrZero(ti *asynq.TaskInfo) time.Time {
	if ti.State == asynq.TaskStateScheduled {
		return ti.NextProcessAt.Truncate(time.Second)
	}
	return time.Time{}
}

// hashFields returns the field names of a task hash, with the values of
// those that do not depend on the id or the clock.
func hashFields(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		switch k {
		case "state":
			out[k] = v
		case "unique_key":
			out[k] = strings.Split(v, ":unique:")[0] + ":unique:<type>:<md5>"
		default:
			out[k] = "<set>"
		}
	}
	return out
}

// TestBatchRunsOnAsynqWorker runs tasks EnqueueBatch wrote on an asynq
// server, and checks their payloads and headers reach the handler.
func TestBatchRunsOnAsynqWorker(t *testing.T) {
	rdb := realRedis(t)
	ctx := context.Background()
	const n = 50
	items := make([]tasks.BatchItem, n)
	for i := range items {
		items[i] = tasks.BatchItem{Type: "batch:run", Payload: fmt.Appendf(nil, `{"i":%d}`, i)}
		if i%2 == 1 {
			items[i].Dedup = &tasks.Dedup{Key: fmt.Sprint("k", i)}
		}
	}
	if _, err := tasks.EnqueueBatch(ctx, rdb, items); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		done = make(chan struct{})
	)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 4, LogLevel: asynq.FatalLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("batch:run", func(_ context.Context, task *asynq.Task) error {
		mu.Lock()
		defer mu.Unlock()
		key, _, _ := tasks.DedupOf(task)
		seen[string(task.Payload())] = key
		if len(seen) == n {
			close(done)
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("ran %d of %d tasks", len(seen), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		want := ""
		if i%2 == 1 {
			want = fmt.Sprint("k", i)
		}
		if got := seen[fmt.Sprintf(`{"i":%d}`, i)]; got != want {
			t.Errorf("task %d: dedup header %q; want %q", i, got, want)
		}
	}
}

// TestBatchConflictEnqueuesNothing puts a taken id, a held uniqueness lock
// and a dedup key held by another type in the middle of a batch: each
// fails the whole batch, names its item, and leaves Redis as it was.
func TestBatchConflictEnqueuesNothing(t *testing.T) {
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
			ctx := context.Background()
			queue := fmt.Sprintf("conflict-%d", time.Now().UnixNano())
			q := asynq.Queue(queue)
			pre := []tasks.BatchItem{
				{Type: "batch:a", Payload: []byte(`{"x":1}`), Options: []asynq.Option{q, asynq.TaskID("taken")}},
				{Type: "batch:a", Payload: []byte(`{"x":2}`), Options: []asynq.Option{q, asynq.Unique(time.Hour)}},
				{Type: "batch:a", Payload: []byte(`{"x":3}`), Options: []asynq.Option{q}, Dedup: &tasks.Dedup{Key: "held"}},
			}
			if _, err := tasks.EnqueueBatch(ctx, rdb, pre); err != nil {
				t.Fatal(err)
			}
			insp := asynq.NewInspectorFromRedisClient(rdb)
			before := countTasks(t, insp, queue)
			for _, tt := range []struct {
				name    string
				give    tasks.BatchItem
				wantErr error
			}{
				{"id", tasks.BatchItem{Type: "batch:a", Payload: []byte(`{}`), Options: []asynq.Option{q, asynq.TaskID("taken")}}, asynq.ErrTaskIDConflict},
				{"unique", tasks.BatchItem{Type: "batch:a", Payload: []byte(`{"x":2}`), Options: []asynq.Option{q, asynq.Unique(time.Hour)}}, asynq.ErrDuplicateTask},
				{"dedup type", tasks.BatchItem{Type: "batch:b", Payload: []byte(`{}`), Options: []asynq.Option{q}, Dedup: &tasks.Dedup{Key: "held", Mode: tasks.DedupReplace}}, tasks.ErrDedupConflict},
			} {
				t.Run(tt.name, func(t *testing.T) {
					items := make([]tasks.BatchItem, 0, 101)
					for i := range 50 {
						items = append(items, tasks.BatchItem{Type: "batch:a", Payload: fmt.Appendf(nil, `{"i":%d}`, i), Options: []asynq.Option{q}})
					}
					items = append(items, tt.give)
					for i := range 50 {
						items = append(items, tasks.BatchItem{Type: "batch:a", Payload: fmt.Appendf(nil, `{"j":%d}`, i), Options: []asynq.Option{q, asynq.ProcessIn(time.Hour)}})
					}
					_, err := tasks.EnqueueBatch(ctx, rdb, items)
					var be *tasks.BatchError
					if !errors.As(err, &be) || be.Index != 50 || !errors.Is(err, tt.wantErr) {
						t.Fatalf("EnqueueBatch: %v; want a *BatchError at item 50 wrapping %v", err, tt.wantErr)
					}
					if got := countTasks(t, insp, queue); got != before {
						t.Errorf("queue holds %v after the aborted batch; want %v", got, before)
					}
				})
			}
		})
	}
}

func countTasks(tb testing.TB, insp *asynq.Inspector, queue string) [2]int {
	tb.Helper()
	qi, err := insp.GetQueueInfo(queue)
	if err != nil {
		tb.Fatal(err)
	}
	return [2]int{qi.Pending, qi.Scheduled}
}

// TestBatchCluster enqueues a batch over three queues of the cluster: one
// script per queue, each task readable by asynq's Inspector.
func TestBatchCluster(t *testing.T) {
	rdb := clusterRedis(t)
	ctx := context.Background()
	base := fmt.Sprintf("bc-%d", time.Now().UnixNano())
	var items []tasks.BatchItem
	for i := range 30 {
		items = append(items, tasks.BatchItem{Type: "batch:c", Payload: fmt.Appendf(nil, `{"i":%d}`, i),
			Options: []asynq.Option{asynq.Queue(fmt.Sprint(base, "-", i%3))}})
	}
	res, err := tasks.EnqueueBatch(ctx, rdb, items)
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for i, r := range res {
		ti, err := insp.GetTaskInfo(r.Queue, r.ID)
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		if string(ti.Payload) != string(items[i].Payload) || ti.State != asynq.TaskStatePending {
			t.Errorf("item %d: %s %v; want %s pending", i, ti.Payload, ti.State, items[i].Payload)
		}
	}
}

// TestBatchRefusesBadItems checks the items before anything is sent.
func TestBatchRefusesBadItems(t *testing.T) {
	rdb := miniRedis(t)
	for _, tt := range []struct {
		name     string
		give     []tasks.BatchItem
		wantText string
	}{
		{"bad queue", []tasks.BatchItem{{Type: "a", Options: []asynq.Option{asynq.Queue("bad queue!")}}}, `queue "bad queue!": has a character outside`},
		{"group", []tasks.BatchItem{{Type: "a", Options: []asynq.Option{asynq.Group("g")}}}, "task groups are not supported"},
		{"id twice", []tasks.BatchItem{{Type: "a", Options: []asynq.Option{asynq.TaskID("x")}}, {Type: "a", Options: []asynq.Option{asynq.TaskID("x")}}}, `batch item 1: id "x": already used by item 0`},
		{"dedup and unique", []tasks.BatchItem{{Type: "a", Options: []asynq.Option{asynq.Unique(time.Hour)}, Dedup: &tasks.Dedup{Key: "k"}}}, "cannot be combined with unique"},
		{"debounce without delay", []tasks.BatchItem{{Type: "a", Dedup: &tasks.Dedup{Key: "k", Mode: tasks.DedupDebounce, MaxDelay: time.Minute}}}, "needs a delay"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tasks.EnqueueBatch(context.Background(), rdb, tt.give)
			if err == nil || !errors.Is(err, tasks.ErrInvalidOption) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("EnqueueBatch: %v; want ErrInvalidOption saying %q", err, tt.wantText)
			}
		})
	}
}
