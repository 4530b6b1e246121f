package worker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
)

// limitArgs is the payload of the limit tests' types.
type limitArgs struct {
	Customer string `json:"customer,omitempty"`
}

// limitBundle is a limiter on miniredis over one type, with a handler that
// blocks until told.
type limitBundle struct {
	mr      *miniredis.Miniredis
	rdb     *redis.Client
	l       *limiter
	h       asynq.Handler
	release chan struct{}
	started chan string
}

func setupLimits(t *testing.T, declare func(*tasks.Type[limitArgs]) *tasks.Type[limitArgs]) *limitBundle {
	t.Helper()
	b := &limitBundle{mr: miniredis.RunT(t), release: make(chan struct{}), started: make(chan string, 10)}
	b.rdb = redis.NewClient(&redis.Options{Addr: b.mr.Addr()})
	t.Cleanup(func() { b.rdb.Close() })
	typ := declare(tasks.Define("test:limited", "limited", func(ctx context.Context, _ tasks.Deps, p limitArgs) ([]byte, error) {
		id, _ := testTaskOf(ctx)
		b.started <- id
		<-b.release
		return nil, nil
	}))
	reg, err := tasks.NewRegistry(typ)
	if err != nil {
		t.Fatal(err)
	}
	b.l = newLimiter(b.rdb, reg, zap.NewNop())
	if b.l == nil {
		t.Fatal("no limiter for a limited type")
	}
	b.l.jitter = func(int64) int64 { return 0 }
	b.l.task = testTaskOf
	d, _ := reg.Lookup("test:limited")
	b.h = b.l.middleware()(d.Handler(tasks.Deps{}))
	return b
}

// run processes a task with id and payload in a goroutine; the returned
// channel gets its error.
func (b *limitBundle) run(id, customer string) <-chan error {
	done := make(chan error, 1)
	payload := `{}`
	if customer != "" {
		payload = `{"customer":"` + customer + `"}`
	}
	go func() {
		done <- b.h.ProcessTask(taskContext(id, "default"), asynq.NewTask("test:limited", []byte(payload)))
	}()
	return done
}

// testTask is the context key of taskContext.
type testTask struct{}

// taskContext is a context carrying a task id and queue for testTaskOf,
// which stands in for asynq's.
func taskContext(id, queue string) context.Context {
	return context.WithValue(context.Background(), testTask{}, [2]string{id, queue})
}

func testTaskOf(ctx context.Context) (id, queue string) {
	v, _ := ctx.Value(testTask{}).([2]string)
	return v[0], v[1]
}

func wantPostponed(t *testing.T, err error, reason string) *tasks.PostponeError {
	t.Helper()
	pe, ok := tasks.AsPostpone(err)
	if !ok {
		t.Fatalf("error %v, want a postponement (%s)", err, reason)
	}
	if pe.Reason != reason {
		t.Fatalf("postponed for %q, want %q", pe.Reason, reason)
	}
	if got := tasks.Outcome(context.Background(), err); got != tasks.OutcomePostponed {
		t.Errorf("Outcome = %q, want %q", got, tasks.OutcomePostponed)
	}
	return pe
}

func TestLimiterNone(t *testing.T) {
	t.Parallel()
	reg, err := tasks.NewRegistry(tasks.Define("test:free", "free", func(context.Context, tasks.Deps, limitArgs) ([]byte, error) { return nil, nil }))
	if err != nil {
		t.Fatal(err)
	}
	l := newLimiter(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), reg, zap.NewNop())
	if len(l.defs) != 0 {
		t.Errorf("limits for types without limits: %v", l.defs)
	}
	// A type without limits runs without a Redis call (none answers).
	h := l.middleware()(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	if err := h.ProcessTask(context.Background(), asynq.NewTask("test:free", []byte("{}"))); err != nil {
		t.Error(err)
	}
}

func TestLimiterMaxConcurrent(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, func(t *tasks.Type[limitArgs]) *tasks.Type[limitArgs] { return t.MaxConcurrent(2) })

	first, second := b.run("t1", ""), b.run("t2", "")
	<-b.started
	<-b.started
	pe := wantPostponed(t, <-b.run("t3", ""), tasks.PostponedConcurrency)
	if pe.Delay != capDelayMin {
		t.Errorf("delay %v, want %v (no jitter)", pe.Delay, capDelayMin)
	}
	running, err := b.rdb.ZRange(context.Background(), "forgeq:limit:{test:limited}:running", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(running)
	if d := cmp.Diff([]string{"t1", "t2"}, running); d != "" {
		t.Errorf("leases (-want +got)\n%s", d)
	}
	waiting, _ := b.rdb.ZRange(context.Background(), "forgeq:limit:{test:limited}:running:waiting", 0, -1).Result()
	if d := cmp.Diff([]string{"default\x00t3"}, waiting); d != "" {
		t.Errorf("waiting (-want +got)\n%s", d)
	}

	close(b.release)
	for _, c := range []<-chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-b.run("t3", ""); err != nil {
		t.Fatalf("after the release: %v", err)
	}
	if n, _ := b.rdb.ZCard(context.Background(), "forgeq:limit:{test:limited}:running:waiting").Result(); n != 0 {
		t.Errorf("%d waiting entries left after t3 ran", n)
	}
}

func TestLimiterReleaseFreesSlot(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, func(t *tasks.Type[limitArgs]) *tasks.Type[limitArgs] { return t.MaxConcurrent(1) })
	close(b.release)
	for i := range 3 {
		if err := <-b.run("t"+string(rune('a'+i)), ""); err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
	}
	if n := b.mr.Exists("forgeq:limit:{test:limited}:running"); n {
		if got, _ := b.rdb.ZCard(context.Background(), "forgeq:limit:{test:limited}:running").Result(); got != 0 {
			t.Errorf("%d leases left after the tasks ended", got)
		}
	}
}

// A lease not renewed (its worker died) expires, and its slot is free.
func TestLimiterLeaseExpires(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, func(t *tasks.Type[limitArgs]) *tasks.Type[limitArgs] { return t.MaxConcurrent(1) })
	ctx := context.Background()
	now := time.Now()
	b.mr.SetTime(now)
	keys := capKeys("test:limited", true, "")
	if full, err := b.l.acquire(ctx, keys, "dead", "default", []int{1}); err != nil || full != 0 {
		t.Fatalf("acquire = %d, %v", full, err)
	}
	if full, err := b.l.acquire(ctx, keys, "other", "default", []int{1}); err != nil || full != 1 {
		t.Fatalf("acquire over the cap = %d, %v; want 1", full, err)
	}
	// The same task delivered again (recovered) keeps its slot.
	if full, err := b.l.acquire(ctx, keys, "dead", "default", []int{1}); err != nil || full != 0 {
		t.Fatalf("acquire again by the holder = %d, %v", full, err)
	}
	b.mr.SetTime(now.Add(leaseTTL - time.Second))
	if full, _ := b.l.acquire(ctx, keys, "other", "default", []int{1}); full != 1 {
		t.Fatal("slot free before its lease expired")
	}
	b.mr.SetTime(now.Add(leaseTTL + time.Second))
	if full, err := b.l.acquire(ctx, keys, "other", "default", []int{1}); err != nil || full != 0 {
		t.Fatalf("acquire after the lease expired = %d, %v; want 0", full, err)
	}
	// A renewal keeps a lease alive, and says when it was lost.
	b.mr.SetTime(now.Add(leaseTTL + 20*time.Second))
	if lost, err := renewScript.Run(ctx, b.rdb, keys, "other", leaseTTL.Milliseconds()).Int(); err != nil || lost != 0 {
		t.Fatalf("renew = %d, %v", lost, err)
	}
	b.mr.SetTime(now.Add(2*leaseTTL + 10*time.Second))
	if full, _ := b.l.acquire(ctx, keys, "third", "default", []int{1}); full != 1 {
		t.Error("renewed lease expired")
	}
	if lost, err := renewScript.Run(ctx, b.rdb, keys, "gone", leaseTTL.Milliseconds()).Int(); err != nil || lost != 1 {
		t.Errorf("renew of a lease not held = %d, %v; want 1 lost", lost, err)
	}
	if ttl := b.mr.TTL(keys[0]); ttl <= 0 || ttl > leaseTTL {
		t.Errorf("lease set TTL %v, want within the lease", ttl)
	}
}

func TestLimiterPerKey(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, func(t *tasks.Type[limitArgs]) *tasks.Type[limitArgs] {
		return t.MaxConcurrent(3).MaxConcurrentPerKey(1, func(p limitArgs) string { return p.Customer })
	})
	a1 := b.run("a1", "acme")
	<-b.started
	wantPostponed(t, <-b.run("a2", "acme"), tasks.PostponedKey)
	b2 := b.run("b1", "globex")
	<-b.started
	free := b.run("n1", "") // no key: only the type's cap
	<-b.started
	wantPostponed(t, <-b.run("n2", ""), tasks.PostponedConcurrency)
	close(b.release)
	for _, c := range []<-chan error{a1, b2, free} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-b.run("a3", "acme"); err != nil {
		t.Fatalf("after the release: %v", err)
	}
}

func TestLimiterRate(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, func(t *tasks.Type[limitArgs]) *tasks.Type[limitArgs] {
		return t.RateLimit(2, time.Hour).MaxConcurrent(5)
	})
	close(b.release)
	for _, id := range []string{"r1", "r2"} {
		if err := <-b.run(id, ""); err != nil {
			t.Fatal(err)
		}
	}
	pe := wantPostponed(t, <-b.run("r3", ""), tasks.PostponedRate)
	if pe.Delay < 29*time.Minute || pe.Delay > 31*time.Minute {
		t.Errorf("postponed for %v, want about 30m (one per half hour)", pe.Delay)
	}
	// The rate's refusal gave the concurrency slot back.
	if n, _ := b.rdb.ZCard(context.Background(), "forgeq:limit:{test:limited}:running").Result(); n != 0 {
		t.Errorf("%d leases held after a rate refusal", n)
	}
	if !b.mr.Exists("rate:forgeq:limit:{test:limited}:rate") {
		t.Error("no GCRA state under rate:forgeq:limit:{test:limited}:rate")
	}
}

// Freeing a slot moves the longest waiting task from its retry set back to
// its queue, and only a task still waiting there.
func TestLimiterWakesWaiting(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, func(t *tasks.Type[limitArgs]) *tasks.Type[limitArgs] { return t.MaxConcurrent(1) })
	ctx := context.Background()
	holder := b.run("h", "")
	<-b.started
	wantPostponed(t, <-b.run("w1", ""), tasks.PostponedConcurrency)
	wantPostponed(t, <-b.run("w2", ""), tasks.PostponedConcurrency)
	// What asynq does with them: w1 went to the retry set; w2 did too,
	// but was deleted since (its hash is gone).
	b.mr.HSet("asynq:{default}:t:w1", "state", "retry")
	if _, err := b.mr.ZAdd("asynq:{default}:retry", 1, "w1"); err != nil {
		t.Fatal(err)
	}
	close(b.release)
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	pending, _ := b.rdb.LRange(ctx, "asynq:{default}:pending", 0, -1).Result()
	if d := cmp.Diff([]string{"w1"}, pending); d != "" {
		t.Errorf("pending (-want +got)\n%s", d)
	}
	if s := b.mr.HGet("asynq:{default}:t:w1", "state"); s != "pending" {
		t.Errorf("w1 state %q, want pending", s)
	}
	if n, _ := b.rdb.ZCard(ctx, "asynq:{default}:retry").Result(); n != 0 {
		t.Errorf("%d tasks left in the retry set", n)
	}
	// A task not in the retry state is never moved.
	b.mr.HSet("asynq:{default}:t:x", "state", "archived")
	if b.l.wake(ctx, "default\x00x") {
		t.Error("woke an archived task")
	}
}

// The worker's mux logs a postponed task as such and counts it in
// forgeq_tasks_postponed_total, not as processed or failed.
func TestNewMuxPostponed(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	x, err := metrics.New(metrics.Options{Manager: m, TaskTypes: []string{"test:rated"}, Queues: []string{"default"}})
	if err != nil {
		t.Fatal(err)
	}
	rated := tasks.Define("test:rated", "rated", func(context.Context, tasks.Deps, limitArgs) ([]byte, error) { return nil, nil }).
		RateLimit(1, time.Hour)
	reg, err := tasks.NewRegistry(rated)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	lim := newLimiter(rdb, reg, zap.NewNop())
	lim.task = testTaskOf
	mux := newMux(reg, tasks.Deps{Cache: m, Logger: zap.New(core)}, x, nil, nil, nil, nil, lim, nil)
	for _, id := range []string{"a", "b"} {
		err := mux.ProcessTask(taskContext(id, "default"), asynq.NewTask("test:rated", []byte("{}")))
		if (err == nil) != (id == "a") {
			t.Fatalf("%s: %v", id, err)
		}
	}
	var got []string
	for _, e := range logs.All() {
		f := e.ContextMap()
		line := e.Message + " " + f["outcome"].(string)
		if r, ok := f["reason"]; ok {
			line += " " + r.(string)
		}
		got = append(got, line)
	}
	if d := cmp.Diff([]string{"task done done", "task postponed postponed rate"}, got); d != "" {
		t.Errorf("log lines (-want +got)\n%s", d)
	}
	families, err := x.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			counts[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = mt.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		// Outside asynq the queue is "unknown"; the series of the
		// served queue exist from the start.
		"forgeq_tasks_postponed_total{unknown,rate,test:rated}":            1,
		"forgeq_tasks_postponed_total{default,rate,test:rated}":            0,
		"forgeq_tasks_postponed_total{default,concurrency,test:rated}":     0,
		"forgeq_tasks_postponed_total{default,concurrency_key,test:rated}": 0,
		"forgeq_tasks_processed_total{unknown,test:rated}":                 1,
	} {
		got, ok := counts[name]
		if !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	for name, v := range counts {
		if strings.HasPrefix(name, "forgeq_tasks_failed_total") && v != 0 {
			t.Errorf("%s = %v, want 0", name, v)
		}
	}
}

func TestPostponeDelay(t *testing.T) {
	t.Parallel()
	f := postponeDelay(func(int, error, *asynq.Task) time.Duration { return time.Hour })
	if d := f(5, errors.New("x"), nil); d != time.Hour {
		t.Errorf("failure: %v, want next's 1h", d)
	}
	if d := f(5, tasks.Postpone(2*time.Second, "mine"), nil); d != 2*time.Second {
		t.Errorf("postponed: %v, want 2s", d)
	}
}

// A start under a sub-second rate wakes a task the rate turned away when
// the next token is due, instead of leaving it to asynq's whole seconds.
func TestLimiterRateWakesWaiting(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, func(t *tasks.Type[limitArgs]) *tasks.Type[limitArgs] {
		return t.RateLimitBurst(20, time.Second, 1)
	})
	close(b.release)
	ctx := context.Background()
	if err := <-b.run("first", ""); err != nil {
		t.Fatal(err)
	}
	pe := wantPostponed(t, <-b.run("second", ""), tasks.PostponedRate)
	if pe.Delay <= 0 || pe.Delay > 50*time.Millisecond {
		t.Errorf("postponed for %v, want up to 50ms (one per 50ms)", pe.Delay)
	}
	waiting, _ := b.rdb.ZRange(ctx, rateWaitKey("test:limited"), 0, -1).Result()
	if d := cmp.Diff([]string{"default\x00second"}, waiting); d != "" {
		t.Errorf("rate waiting (-want +got)\n%s", d)
	}
	// asynq moves it to the retry set with a delay in whole seconds.
	b.mr.HSet("asynq:{default}:t:second", "state", "retry")
	if _, err := b.mr.ZAdd("asynq:{default}:retry", float64(time.Now().Add(time.Second).Unix()), "second"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		pending, _ := b.rdb.LRange(ctx, "asynq:{default}:pending", 0, -1).Result()
		if slices.Equal(pending, []string{"second"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %v 2s after the first start, want [second]: not woken", pending)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-b.run("second", ""); err != nil {
		t.Fatalf("woken task: %v", err)
	}
	if n, _ := b.rdb.ZCard(ctx, rateWaitKey("test:limited")).Result(); n != 0 {
		t.Errorf("%d rate waiting entries left after the task started", n)
	}
}
