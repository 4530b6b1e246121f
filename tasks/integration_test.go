package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// integrationDB is the test database of this package's worker tests; the
// package owns databases 4 and 5 of REDIS_TEST_URL.
const integrationDB = 4

// waitTimeout bounds every wait for a task to finish.
const waitTimeout = 30 * time.Second

// workerBundle is forgeq's worker in miniature on the real Redis: workers
// processes, each a cache manager with its own client and an asynq server
// on that client serving the default registry, and an enqueuing side.
type workerBundle struct {
	m      *cachemgr.Manager // the enqueuing side's manager, for checks
	client *asynq.Client
	insp   *asynq.Inspector
}

// startWorkers flushes the test database and starts workers worker
// processes on it; everything is shut down in tb.Cleanup, servers first.
func startWorkers(tb testing.TB, workers int) *workerBundle {
	tb.Helper()
	url := redistest.URL(tb, integrationDB)
	newManager := func() *cachemgr.Manager {
		m, err := cachemgr.New(cachemgr.Options{URL: url})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			if err := m.Close(); err != nil {
				tb.Error(err)
			}
		})
		return m
	}
	m := newManager()
	if err := m.Client().FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	for i := range workers {
		wm := newManager()
		log := zaptest.NewLogger(tb).Named(fmt.Sprintf("worker%d", i))
		srv := asynq.NewServerFromRedisClient(wm.Client(), asynq.Config{
			Concurrency:       4,
			Queues:            map[string]int{"default": 3, "low": 1},
			TaskCheckInterval: 10 * time.Millisecond,
			ShutdownTimeout:   3 * time.Second,
			Logger:            log.Sugar(),
		})
		if err := srv.Start(tasks.NewMux(tasks.Default(), tasks.Deps{Cache: wm, Logger: log})); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(srv.Shutdown) // before wm.Close, registered earlier
	}
	client := asynq.NewClientFromRedisClient(m.Client())
	tb.Cleanup(func() { client.Close() })
	insp := asynq.NewInspectorFromRedisClient(m.Client())
	tb.Cleanup(func() { insp.Close() })
	return &workerBundle{m: m, client: client, insp: insp}
}

// workerT is a workerBundle used by one test, whose helpers fail tb.
type workerT struct {
	*workerBundle
	tb testing.TB
}

// with returns b's helpers for the test tb.
func (b *workerBundle) with(tb testing.TB) workerT { return workerT{b, tb} }

// enqueue enqueues the task a constructor returned, keeping its result for
// an hour, and returns its info.
func (w workerT) enqueue(task *asynq.Task, err error) *asynq.TaskInfo {
	tb, b := w.tb, w.workerBundle
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
	info, err := b.client.EnqueueContext(context.Background(), task, asynq.Retention(time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	return info
}

// wait polls the task of info until it is in state want, and calls poll (if
// not nil) on every round. It fails the test if the task ends in another
// state or waitTimeout passes.
func (w workerT) wait(info *asynq.TaskInfo, want asynq.TaskState, poll func()) *asynq.TaskInfo {
	tb, b := w.tb, w.workerBundle
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if poll != nil {
			poll()
		}
		got, err := b.insp.GetTaskInfo(info.Queue, info.ID)
		switch {
		case err != nil && !errors.Is(err, asynq.ErrTaskNotFound):
			tb.Fatalf("task %s: %v", info.ID, err)
		case err != nil:
		case got.State == want:
			return got
		case got.State == asynq.TaskStateCompleted || got.State == asynq.TaskStateArchived:
			tb.Fatalf("task %s (%s) ended %v, want %v; last error %q", info.ID, info.Type, got.State, want, got.LastErr)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task %s (%s) not %v after %v", info.ID, info.Type, want, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// done waits for the task of info to complete and returns its result.
func done[R any](w workerT, info *asynq.TaskInfo) R {
	tb := w.tb
	tb.Helper()
	var r R
	got := w.wait(info, asynq.TaskStateCompleted, nil)
	if err := json.Unmarshal(got.Result, &r); err != nil {
		tb.Fatalf("task %s: result %q: %v", info.ID, got.Result, err)
	}
	return r
}

// progress returns the last progress report of the task of info.
func (w workerT) progress(info *asynq.TaskInfo) tasks.Progress {
	tb := w.tb
	tb.Helper()
	p, err := tasks.ReadProgress(context.Background(), w.m, info.ID)
	if err != nil {
		tb.Fatalf("progress of task %s: %v", info.ID, err)
	}
	return p
}

func TestWorker(t *testing.T) {
	b := startWorkers(t, 2)

	t.Run("group", func(t *testing.T) {
		t.Run("process_data computes, then hits the cache", func(t *testing.T) {
			t.Parallel()
			testWorkerProcessData(t, b)
		})
		t.Run("a payload that can never parse is archived at once", func(t *testing.T) {
			t.Parallel()
			testWorkerBadPayload(t, b)
		})
		t.Run("a task past its timeout stops and caches nothing", func(t *testing.T) {
			t.Parallel()
			testWorkerTimeout(t, b)
		})
		t.Run("invalidate", func(t *testing.T) {
			t.Parallel()
			testWorkerInvalidate(t, b)
		})
		t.Run("warm", func(t *testing.T) {
			t.Parallel()
			testWorkerWarm(t, b)
		})
	})
	// Alone, as it takes more worker slots than one worker has.
	t.Run("process_data computes once across workers", func(t *testing.T) {
		testWorkerComputeOnce(t, b)
	})
	// Alone, as it empties the whole cache.
	t.Run("invalidating everything leaves asynq's keys alone", func(t *testing.T) {
		testWorkerWipe(t, b)
	})
}

func testWorkerProcessData(t *testing.T, b *workerBundle) {
	w := b.with(t)
	ctx := context.Background()
	key := redistest.Prefix(t) + "report"
	const work = 2_000_000 // 0.2s (1s with -race): long enough to watch
	p := tasks.ProcessData{Key: key, Work: work, TTLSeconds: 600}
	want := tasks.ProcessDataResult{Key: key, Value: tasks.Digest(key, work), Source: tasks.SourceComputed}

	info := w.enqueue(tasks.NewProcessDataTask(p))
	var seen []float64 // progress percentages, as a progress bar polls them
	w.wait(info, asynq.TaskStateCompleted, func() {
		if pr, err := tasks.ReadProgress(ctx, b.m, info.ID); err == nil {
			if len(seen) == 0 || seen[len(seen)-1] != pr.Percent {
				seen = append(seen, pr.Percent)
			}
		}
	})
	got := done[tasks.ProcessDataResult](w, info)
	if got.TookMS <= 0 {
		t.Errorf("took_ms = %d for %d rounds, want > 0", got.TookMS, work)
	}
	got.TookMS = 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first result (-want +got):\n%s", diff)
	}
	t.Logf("progress seen: %v", seen)
	if !slices.IsSorted(seen) || !slices.ContainsFunc(seen, func(p float64) bool { return p > 0 && p < 100 }) {
		t.Errorf("progress seen %v, want rising percentages with some between 0 and 100", seen)
	}
	pr := w.progress(info)
	if diff := cmp.Diff(tasks.Progress{TaskID: info.ID, Percent: 100, Message: "computed and cached"}, pr,
		cmpIgnoreUpdated); diff != "" {
		t.Errorf("final progress (-want +got):\n%s", diff)
	}

	cached, err := b.m.Get(ctx, key)
	if err != nil || cached != want.Value {
		t.Errorf("cached value %q, %v; want Digest %q", cached, err, want.Value)
	}
	if ttl := b.m.Client().TTL(ctx, b.m.Key(key)).Val(); ttl <= 0 || ttl > 600*time.Second {
		t.Errorf("TTL %v, want up to 600s", ttl)
	}

	info = w.enqueue(tasks.NewProcessDataTask(p))
	got = done[tasks.ProcessDataResult](w, info)
	got.TookMS = 0
	want.Source = tasks.SourceCache
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("second result (-want +got):\n%s", diff)
	}
	if pr := w.progress(info); pr.Percent != 100 || pr.Message != "cache hit" {
		t.Errorf("second task's progress %+v, want 100 and cache hit", pr)
	}
}

// cmpIgnoreUpdated compares Progress values without their timestamps.
var cmpIgnoreUpdated = cmp.Transformer("noUpdated", func(p tasks.Progress) tasks.Progress {
	p.Updated = time.Time{}
	return p
})

func testWorkerComputeOnce(t *testing.T, b *workerBundle) {
	w := b.with(t)
	key := redistest.Prefix(t) + "shared"
	const work, n = 1_000_000, 6 // more tasks than one worker runs at once
	infos := make([]*asynq.TaskInfo, n)
	for i := range infos {
		infos[i] = w.enqueue(tasks.NewProcessDataTask(tasks.ProcessData{Key: key, Work: work}))
	}
	sources := map[string]int{}
	for _, info := range infos {
		r := done[tasks.ProcessDataResult](w, info)
		if r.Value != tasks.Digest(key, work) {
			t.Errorf("task %s: value %q, want the digest", info.ID, r.Value)
		}
		sources[r.Source]++
	}
	if diff := cmp.Diff(map[string]int{tasks.SourceComputed: 1, tasks.SourceCache: n - 1}, sources); diff != "" {
		t.Errorf("sources of %d tasks on one key (-want +got):\n%s", n, diff)
	}
}

func testWorkerBadPayload(t *testing.T, b *workerBundle) {
	tests := []struct {
		name        string
		giveType    string
		givePayload string
		wantLastErr string
	}{
		{"malformed JSON", tasks.TypeProcessData, `{"key":`,
			"tasks: invalid payload: data:process: malformed JSON at byte 7: unexpected end of JSON input: skip retry for the task"},
		{"unknown field", tasks.TypeInvalidate, `{"keys":["a"],"pattrn":"*"}`,
			`tasks: invalid payload: cache:invalidate: unknown field "pattrn": skip retry for the task`},
		{"out of range", tasks.TypeWarm, `{"keys":["a"],"work":0}`,
			`tasks: invalid payload: cache:warm: field "work": 0 is out of range [1, 1000000]: skip retry for the task`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := b.with(t)
			// Bypass the validating constructors, as a foreign producer would.
			info := w.enqueue(asynq.NewTask(tt.giveType, []byte(tt.givePayload), asynq.MaxRetry(5)), nil)
			got := w.wait(info, asynq.TaskStateArchived, nil)
			if got.Retried != 0 {
				t.Errorf("retried %d times, want 0", got.Retried)
			}
			if diff := cmp.Diff(tt.wantLastErr, got.LastErr); diff != "" {
				t.Errorf("last error (-want +got):\n%s", diff)
			}
		})
	}
}

func testWorkerTimeout(t *testing.T, b *workerBundle) {
	w := b.with(t)
	ctx := context.Background()
	key := redistest.Prefix(t) + "slow"
	info := w.enqueue(tasks.NewProcessDataTask(tasks.ProcessData{Key: key, Work: tasks.MaxWork},
		asynq.Timeout(time.Second), asynq.MaxRetry(0))) // asynq counts timeouts in whole seconds
	got := w.wait(info, asynq.TaskStateArchived, nil)
	if !strings.Contains(got.LastErr, "context deadline exceeded") {
		t.Errorf("last error %q, want the deadline", got.LastErr)
	}
	// asynq archives the task at its deadline whatever the handler does;
	// the computation has stopped too once its lock (held and renewed
	// while computing, released when compute returns) is gone, seconds
	// before MaxWork rounds could finish.
	lock := b.m.Key("__lock__:" + key)
	for deadline := time.Now().Add(time.Second); b.m.Client().Exists(ctx, lock).Val() == 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("compute lock %s still held 1s after the timeout: the computation goes on", lock)
		}
	}
	if _, err := b.m.Get(ctx, key); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("Get after the timeout: %v, want ErrMiss", err)
	}
}

func testWorkerInvalidate(t *testing.T, b *workerBundle) {
	w := b.with(t)
	ctx := context.Background()
	pre := redistest.Prefix(t)
	for _, k := range []string{"user:1", "user:2", "order:1", "order:2"} {
		if err := b.m.Set(ctx, pre+k, "v", 0); err != nil {
			t.Fatal(err)
		}
	}

	info := w.enqueue(tasks.NewInvalidateTask(tasks.Invalidate{Keys: []string{pre + "order:1", pre + "missing"}}))
	if diff := cmp.Diff(tasks.InvalidateResult{Deleted: 1}, done[tasks.InvalidateResult](w, info)); diff != "" {
		t.Errorf("result by keys (-want +got):\n%s", diff)
	}
	info = w.enqueue(tasks.NewInvalidateTask(tasks.Invalidate{Pattern: pre + "user:*"}))
	if diff := cmp.Diff(tasks.InvalidateResult{Deleted: 2}, done[tasks.InvalidateResult](w, info)); diff != "" {
		t.Errorf("result by pattern (-want +got):\n%s", diff)
	}
	if pr := w.progress(info); pr.Percent != 100 {
		t.Errorf("progress %+v, want 100", pr)
	}

	var left []string
	for _, k := range []string{"user:1", "user:2", "order:1", "order:2"} {
		if _, err := b.m.Get(ctx, pre+k); err == nil {
			left = append(left, k)
		}
	}
	if diff := cmp.Diff([]string{"order:2"}, left); diff != "" {
		t.Errorf("keys left (-want +got):\n%s", diff)
	}
}

func testWorkerWarm(t *testing.T, b *workerBundle) {
	w := b.with(t)
	ctx := context.Background()
	pre := redistest.Prefix(t)
	const work = 2000
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sitem:%d", pre, i)
	}
	// One key is cached already, by a data:process task.
	done[tasks.ProcessDataResult](w, w.enqueue(tasks.NewProcessDataTask(tasks.ProcessData{Key: keys[7], Work: work})))

	info := w.enqueue(tasks.NewWarmTask(tasks.Warm{Keys: keys, Work: work}))
	if diff := cmp.Diff(tasks.WarmResult{Warmed: 300, Computed: 299, Cached: 1}, done[tasks.WarmResult](w, info)); diff != "" {
		t.Errorf("first result (-want +got):\n%s", diff)
	}
	if got := info.Queue; got != "low" {
		t.Errorf("queue %q, want low", got)
	}
	if pr := w.progress(info); pr.Percent != 100 || pr.Message != "warmed 300 keys: 299 computed, 1 cached" {
		t.Errorf("progress %+v, want 100 and a summary", pr)
	}
	for _, k := range keys {
		if v, err := b.m.Get(ctx, k); err != nil || v != tasks.Digest(k, work) {
			t.Fatalf("Get(%q) = %q, %v; want its digest", k, v, err)
		}
	}

	info = w.enqueue(tasks.NewWarmTask(tasks.Warm{Keys: keys, Work: work}))
	if diff := cmp.Diff(tasks.WarmResult{Warmed: 300, Cached: 300}, done[tasks.WarmResult](w, info)); diff != "" {
		t.Errorf("second result (-want +got):\n%s", diff)
	}
}

func testWorkerWipe(t *testing.T, b *workerBundle) {
	w := b.with(t)
	ctx := context.Background()
	rdb := b.m.Client()
	// A task waiting in asynq's scheduled set, and a cache key.
	later := w.enqueue(tasks.NewProcessDataTask(tasks.ProcessData{Key: "later", Work: 1}, asynq.ProcessIn(time.Hour)))
	if err := b.m.Set(ctx, "doomed", "v", 0); err != nil {
		t.Fatal(err)
	}
	before, err := rdb.Keys(ctx, "asynq:*").Result() // KEYS is fine on a test database
	if err != nil {
		t.Fatal(err)
	}

	info := w.enqueue(tasks.NewInvalidateTask(tasks.Invalidate{Pattern: "*"}))
	if r := done[tasks.InvalidateResult](w, info); r.Deleted < 1 {
		t.Errorf("deleted %d keys, want the cache's", r.Deleted)
	}

	if left, _ := rdb.Keys(ctx, b.m.KeyPrefix()+"*").Result(); len(left) > 1 { // the wipe's own final progress report
		t.Errorf("cache keys left after the wipe: %q", left)
	}
	var lost []string
	for _, k := range before {
		if rdb.Exists(ctx, k).Val() == 0 {
			lost = append(lost, k)
		}
	}
	if len(lost) > 0 {
		t.Errorf("asynq keys lost by the wipe: %q", lost)
	}
	if got, err := b.insp.GetTaskInfo(later.Queue, later.ID); err != nil || got.State != asynq.TaskStateScheduled {
		t.Errorf("scheduled task after the wipe: %+v, %v", got, err)
	}
	// The workers still work.
	key := redistest.Prefix(t) + "after"
	if r := done[tasks.ProcessDataResult](w, w.enqueue(tasks.NewProcessDataTask(tasks.ProcessData{Key: key, Work: 10}))); r.Value != tasks.Digest(key, 10) {
		t.Errorf("result after the wipe: %+v", r)
	}
}
