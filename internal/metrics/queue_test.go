package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/internal/redistest"
)

// enqueue puts tasks of type "q:test" on queue, each with opts.
func enqueue(tb testing.TB, rdb redis.UniversalClient, queue string, n int, opts ...asynq.Option) {
	tb.Helper()
	c := asynq.NewClientFromRedisClient(rdb)
	for range n {
		if _, err := c.EnqueueContext(tb.Context(), asynq.NewTask("q:test", nil), append(opts, asynq.Queue(queue))...); err != nil {
			tb.Fatalf("enqueue on %s: %v", queue, err)
		}
	}
}

// queueStates returns the expected forgeq_queue_tasks samples of queue:
// the given counts, 0 for the other states.
func queueStates(queue string, counts map[string]float64) map[string]float64 {
	out := make(map[string]float64)
	for _, s := range []string{"pending", "active", "scheduled", "retry", "archived", "completed", "aggregating"} {
		out[fmt.Sprintf("forgeq_queue_tasks{queue=%q,state=%q}", queue, s)] = counts[s]
	}
	return out
}

// asynqStates returns the expected samples of queue's asynq_* families
// that asynqmon charts, except latency and memory: asynq_tasks_enqueued_total
// for each state asynq's exporter reports (the given counts, 0 for the
// others), asynq_queue_size (every state but completed), and the processed
// and failed totals.
func asynqStates(queue string, counts map[string]float64, processed, failed float64) map[string]float64 {
	out := make(map[string]float64)
	size := 0.0
	for _, s := range []string{"active", "pending", "scheduled", "retry", "archived", "completed"} {
		out[fmt.Sprintf("asynq_tasks_enqueued_total{queue=%q,state=%q}", queue, s)] = counts[s]
		if s != "completed" {
			size += counts[s]
		}
	}
	out[fmt.Sprintf("asynq_queue_size{queue=%q}", queue)] = size
	out[fmt.Sprintf("asynq_tasks_processed_total{queue=%q}", queue)] = processed
	out[fmt.Sprintf("asynq_tasks_failed_total{queue=%q}", queue)] = failed
	return out
}

func TestQueueMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	enqueue(t, b.rdb, "default", 2)
	enqueue(t, b.rdb, "critical", 1)
	enqueue(t, b.rdb, "critical", 1, asynq.ProcessIn(time.Hour))
	if err := b.insp.PauseQueue("critical"); err != nil {
		t.Fatal(err)
	}

	want := queueStates("default", map[string]float64{"pending": 2})
	for k, v := range queueStates("critical", map[string]float64{"pending": 1, "scheduled": 1}) {
		want[k] = v
	}
	got := samples(t, b.x.Registry(), "forgeq_queue_tasks")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("queue tasks (-want +got):\n%s", diff)
	}

	want = asynqStates("default", map[string]float64{"pending": 2}, 0, 0)
	for k, v := range asynqStates("critical", map[string]float64{"pending": 1, "scheduled": 1}, 0, 0) {
		want[k] = v
	}
	got = samples(t, b.x.Registry(), "asynq_tasks_enqueued_total", "asynq_queue_size",
		"asynq_tasks_processed_total", "asynq_tasks_failed_total")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("asynq_* queue metrics (-want +got):\n%s", diff)
	}

	err := testutil.GatherAndCompare(b.x.Registry(), strings.NewReader(`
# HELP forgeq_queue_paused Whether an asynq queue is paused (1) or not (0).
# TYPE forgeq_queue_paused gauge
forgeq_queue_paused{queue="critical"} 1
forgeq_queue_paused{queue="default"} 0
# HELP forgeq_queue_processed_total Tasks processed from an asynq queue by all workers, succeeded or failed.
# TYPE forgeq_queue_processed_total counter
forgeq_queue_processed_total{queue="critical"} 0
forgeq_queue_processed_total{queue="default"} 0
# HELP forgeq_queue_failed_total Tasks of an asynq queue that failed in any worker.
# TYPE forgeq_queue_failed_total counter
forgeq_queue_failed_total{queue="critical"} 0
forgeq_queue_failed_total{queue="default"} 0
# HELP forgeq_queue_scrape_errors_total Errors of asynq queue reads, and reads slower than the scrape timeout; the last good read is served meanwhile.
# TYPE forgeq_queue_scrape_errors_total counter
forgeq_queue_scrape_errors_total 0
`), "forgeq_queue_paused", "forgeq_queue_processed_total", "forgeq_queue_failed_total", "forgeq_queue_scrape_errors_total")
	if err != nil {
		t.Error(err)
	}

	// How long the oldest pending task has waited is checked on real Redis
	// (TestQueueMetricsRedis); here only that each queue has one sample.
	lat := samples(t, b.x.Registry(), "forgeq_queue_latency_seconds", "asynq_queue_latency_seconds")
	if len(lat) != 4 {
		t.Errorf("latency samples = %v, want one per queue and family", lat)
	}
}

func TestQueueMetricsWithoutInspector(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	enqueue(t, b.rdb, "default", 1)
	x, err := metrics.New(metrics.Options{Manager: b.m})
	if err != nil {
		t.Fatal(err)
	}
	if got := samples(t, x.Registry(), "forgeq_queue_tasks", "forgeq_queue_scrape_errors_total"); len(got) != 0 {
		t.Errorf("queue samples without an Inspector: %v", got)
	}
}

func TestQueueScrapeErrorKeepsScrape(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{QueueScrapeInterval: time.Nanosecond}) // a read per scrape
	enqueue(t, b.rdb, "default", 1)
	b.mr.SetError("ERR injected")
	defer b.mr.SetError("")

	for i := 1; i <= 2; i++ {
		code, body := scrape(t, b.x.Handler())
		if code != 200 {
			t.Fatalf("scrape %d: status %d", i, code)
		}
		if strings.Contains(body, "forgeq_queue_tasks{") {
			t.Errorf("scrape %d: queue metrics served while Redis fails", i)
		}
		if want := fmt.Sprintf("\nforgeq_queue_scrape_errors_total %d\n", i); !strings.Contains(body, want) {
			t.Errorf("scrape %d: no %q in the scrape", i, strings.TrimSpace(want))
		}
		if !strings.Contains(body, `forgeq_cache_calls_total{op="get"} 0`) {
			t.Errorf("scrape %d: cache metrics missing", i)
		}
		if !strings.Contains(body, "\nforgeq_queue_scrape_age_seconds +Inf\n") {
			t.Errorf("scrape %d: no infinite forgeq_queue_scrape_age_seconds before the first good read", i)
		}
	}
}

// blackhole returns the address of a TCP server that accepts connections and
// never answers.
func blackhole(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestQueueScrapeTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	slow := redis.NewClient(&redis.Options{Addr: blackhole(t), MaxRetries: -1, ReadTimeout: 5 * time.Second})
	t.Cleanup(func() { slow.Close() })
	x, err := metrics.New(metrics.Options{
		Manager:            b.m,
		Inspector:          asynq.NewInspectorFromRedisClient(slow),
		QueueScrapeTimeout: 50 * time.Millisecond,
		Logger:             zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}

	// The second scrape finds the first read still running: it does not
	// start another, and the slow read counts as one error.
	for i := 1; i <= 2; i++ {
		start := time.Now()
		got := samples(t, x.Registry(), "forgeq_queue_tasks", "forgeq_queue_scrape_errors_total")
		if took := time.Since(start); took > time.Second {
			t.Errorf("scrape %d took %v with a 50ms queue timeout", i, took)
		}
		if diff := cmp.Diff(map[string]float64{"forgeq_queue_scrape_errors_total": 1}, got); diff != "" {
			t.Errorf("scrape %d (-want +got):\n%s", i, diff)
		}
	}
}

// TestQueueMetricsRedis runs a real asynq server with TaskMiddleware on
// Redis, so the queue label comes from asynq and asynq's own totals move.
func TestQueueMetricsRedis(t *testing.T) {
	t.Parallel()
	opts, err := redis.ParseURL(redistest.URL(t, 11))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	ctx := t.Context()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)
	// A read per scrape, so that the loop below sees the totals move.
	x, err := metrics.New(metrics.Options{Manager: m, Inspector: insp, Logger: zaptest.NewLogger(t), QueueScrapeInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}

	c := asynq.NewClientFromRedisClient(rdb)
	for _, e := range []struct {
		typ, queue string
	}{{"q:ok", "default"}, {"q:ok", "critical"}, {"q:bad", "critical"}} {
		if _, err := c.EnqueueContext(ctx, asynq.NewTask(e.typ, nil), asynq.Queue(e.queue)); err != nil {
			t.Fatal(err)
		}
	}
	// A plain failure with no retry left: archived after this attempt.
	if _, err := c.EnqueueContext(ctx, asynq.NewTask("q:fail", nil), asynq.Queue("default"), asynq.MaxRetry(0)); err != nil {
		t.Fatal(err)
	}
	enqueue(t, rdb, "critical", 1, asynq.ProcessIn(time.Hour))
	// A task on a queue no server takes, whose wait is backdated by 90s:
	// asynq measures a queue's latency from the pending_since field of its
	// oldest pending task's hash.
	waiting, err := c.EnqueueContext(ctx, asynq.NewTask("q:ok", nil), asynq.Queue("waiting"))
	if err != nil {
		t.Fatal(err)
	}
	const waited = 90 * time.Second
	backdated := time.Now()
	if n, err := rdb.HSet(ctx, "asynq:{waiting}:t:"+waiting.ID, "pending_since", backdated.Add(-waited).UnixNano()).Result(); err != nil || n != 0 {
		t.Fatalf("backdate pending_since: %d new fields, %v; want 0 (the field exists), nil", n, err)
	}

	mux := asynq.NewServeMux()
	mux.Use(x.TaskMiddleware())
	mux.HandleFunc("q:ok", func(context.Context, *asynq.Task) error { return nil })
	mux.HandleFunc("q:bad", func(context.Context, *asynq.Task) error {
		return fmt.Errorf("bad payload: %w", asynq.SkipRetry)
	})
	mux.HandleFunc("q:fail", func(context.Context, *asynq.Task) error { return errors.New("failed") })
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 2,
		Queues:      map[string]int{"default": 1, "critical": 1},
		Logger:      zaptest.NewLogger(t).Sugar(),
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	deadline := time.Now().Add(15 * time.Second)
	for {
		got := samples(t, x.Registry(), "forgeq_tasks_processed_total", "forgeq_queue_processed_total")
		if got[`forgeq_queue_processed_total{queue="critical"}`] == 2 && got[`forgeq_queue_processed_total{queue="default"}`] == 2 &&
			got[`forgeq_tasks_processed_total{queue="critical",task_type="q:bad"}`] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks not processed in time: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}

	scrapeStart := time.Now()
	got := samples(t, x.Registry(), "forgeq_tasks_processed_total", "forgeq_tasks_failed_total",
		"forgeq_queue_processed_total", "forgeq_queue_failed_total", "forgeq_queue_tasks", "forgeq_queue_scrape_errors_total",
		"forgeq_queue_latency_seconds",
		"asynq_tasks_enqueued_total", "asynq_queue_size", "asynq_queue_latency_seconds",
		"asynq_queue_memory_usage_approx_bytes", "asynq_tasks_processed_total", "asynq_tasks_failed_total")
	scrapeEnd := time.Now()

	// The waiting queue's latency is how long its task has waited, in
	// seconds: between the backdated wait at the start and the end of the
	// scrape.
	lo, hi := (waited + scrapeStart.Sub(backdated)).Seconds(), (waited + scrapeEnd.Sub(backdated)).Seconds()
	for _, name := range []string{"forgeq_queue_latency_seconds", "asynq_queue_latency_seconds"} {
		for _, q := range []string{"default", "critical", "waiting"} {
			k := fmt.Sprintf("%s{queue=%q}", name, q)
			v, ok := got[k]
			switch {
			case !ok:
				t.Errorf("no %s sample", k)
			case q == "waiting" && (v < lo || v > hi):
				t.Errorf("%s = %v, want the oldest pending task's wait, in [%v, %v]", k, v, lo, hi)
			case q != "waiting" && v != 0:
				t.Errorf("%s = %v, want 0 for a queue with no pending task", k, v)
			}
			delete(got, k)
		}
	}
	// Memory use is an estimate by sampling: only check that each queue
	// that holds tasks reports some.
	for _, q := range []string{"default", "critical", "waiting"} {
		k := fmt.Sprintf("asynq_queue_memory_usage_approx_bytes{queue=%q}", q)
		if v := got[k]; v <= 0 {
			t.Errorf("%s = %v, want > 0 for a queue holding tasks", k, v)
		}
		delete(got, k)
	}

	want := map[string]float64{
		`forgeq_tasks_processed_total{queue="default",task_type="q:ok"}`:                     1,
		`forgeq_tasks_processed_total{queue="critical",task_type="q:ok"}`:                    1,
		`forgeq_tasks_processed_total{queue="critical",task_type="q:bad"}`:                   1,
		`forgeq_tasks_processed_total{queue="default",task_type="q:fail"}`:                   1,
		`forgeq_tasks_failed_total{outcome="skip_retry",queue="critical",task_type="q:bad"}`: 1,
		`forgeq_tasks_failed_total{outcome="archived",queue="default",task_type="q:fail"}`:   1,
		`forgeq_queue_processed_total{queue="default"}`:                                      2,
		`forgeq_queue_processed_total{queue="critical"}`:                                     2,
		`forgeq_queue_failed_total{queue="default"}`:                                         1,
		`forgeq_queue_failed_total{queue="critical"}`:                                        1,
		`forgeq_queue_processed_total{queue="waiting"}`:                                      0,
		`forgeq_queue_failed_total{queue="waiting"}`:                                         0,
		`forgeq_queue_scrape_errors_total`:                                                   0,
	}
	for _, m := range []map[string]float64{
		queueStates("default", map[string]float64{"archived": 1}),
		queueStates("critical", map[string]float64{"scheduled": 1, "archived": 1}),
		queueStates("waiting", map[string]float64{"pending": 1}),
		asynqStates("default", map[string]float64{"archived": 1}, 2, 1),
		asynqStates("critical", map[string]float64{"scheduled": 1, "archived": 1}, 2, 1),
		asynqStates("waiting", map[string]float64{"pending": 1}, 0, 0),
	} {
		for k, v := range m {
			want[k] = v
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics after processing (-want +got):\n%s", diff)
	}

	// /metrics serves every family that the asynqmon dashboard's charts
	// query (asynqmon v0.7 metrics_handler.go), for each of our queues.
	_, body := scrape(t, x.Handler())
	for _, name := range asynqmonQueries {
		for _, q := range []string{"default", "critical", "waiting"} {
			if !regexp.MustCompile(`(?m)^` + name + `\{(.*,)?queue="` + q + `"[,}]`).MatchString(body) {
				t.Errorf("/metrics has no %s sample for queue %s", name, q)
			}
		}
	}
}

// asynqmonQueries are the metric families that asynqmon's charts query from
// Prometheus.
var asynqmonQueries = []string{
	"asynq_queue_size", "asynq_queue_latency_seconds", "asynq_queue_memory_usage_approx_bytes",
	"asynq_tasks_processed_total", "asynq_tasks_failed_total", "asynq_tasks_enqueued_total",
}

// Scrapes that follow each other at once all read the queues: a read that
// has returned its result is not "still running".
func TestQueueScrapesBackToBack(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	enqueue(t, b.rdb, "default", 1)
	for i := range 300 {
		got := samples(t, b.x.Registry(), "forgeq_queue_scrape_errors_total")
		if n := got["forgeq_queue_scrape_errors_total"]; n != 0 {
			t.Fatalf("scrape %d: %v scrape errors", i, n)
		}
	}
}

// TestQueueSeriesFromStart checks that the configured queues that Redis
// does not know yet are scraped with zero values beside the queues it
// knows, and that a read that fails before any good one leaves every queue
// out: zeros would hide the failure.
func TestQueueSeriesFromStart(t *testing.T) {
	t.Parallel()
	names := []string{
		"forgeq_queue_tasks", "forgeq_queue_paused", "forgeq_queue_processed_total", "forgeq_queue_failed_total",
		"forgeq_queue_scrape_errors_total",
		"asynq_tasks_enqueued_total", "asynq_queue_size", "asynq_tasks_processed_total", "asynq_tasks_failed_total",
	}
	failing := setup(t, metrics.Options{Queues: []string{"critical", "default", "low"}})
	failing.mr.SetError("ERR injected")
	if diff := cmp.Diff(map[string]float64{"forgeq_queue_scrape_errors_total": 1}, samples(t, failing.x.Registry(), names...)); diff != "" {
		t.Errorf("queue series while Redis fails from the start (-want +got):\n%s", diff)
	}

	b := setup(t, metrics.Options{Queues: []string{"critical", "default", "low"}})
	enqueue(t, b.rdb, "default", 2)
	enqueue(t, b.rdb, "other", 1) // not configured: read from Redis as before

	want := map[string]float64{"forgeq_queue_scrape_errors_total": 0}
	for _, q := range []struct {
		name    string
		pending float64
	}{{"critical", 0}, {"default", 2}, {"low", 0}, {"other", 1}} {
		for _, m := range []map[string]float64{
			queueStates(q.name, map[string]float64{"pending": q.pending}),
			asynqStates(q.name, map[string]float64{"pending": q.pending}, 0, 0),
		} {
			for k, v := range m {
				want[k] = v
			}
		}
		for _, name := range []string{"forgeq_queue_paused", "forgeq_queue_processed_total", "forgeq_queue_failed_total"} {
			want[fmt.Sprintf("%s{queue=%q}", name, q.name)] = 0
		}
	}
	if diff := cmp.Diff(want, samples(t, b.x.Registry(), names...)); diff != "" {
		t.Errorf("queue series (-want +got):\n%s", diff)
	}
	// The queues with no task wait for none and hold no memory.
	got := samples(t, b.x.Registry(), "forgeq_queue_latency_seconds", "asynq_queue_latency_seconds", "asynq_queue_memory_usage_approx_bytes")
	for _, q := range []string{"critical", "low"} {
		for _, name := range []string{"forgeq_queue_latency_seconds", "asynq_queue_latency_seconds", "asynq_queue_memory_usage_approx_bytes"} {
			k := fmt.Sprintf("%s{queue=%q}", name, q)
			if v, ok := got[k]; !ok || v != 0 {
				t.Errorf("%s = %v (present %v), want 0", k, v, ok)
			}
		}
	}
}

// slowReads is a go-redis hook that delays every command by delay, and
// records how many run at once and how many reads of the queue
// list (the first command of every queue read) were sent.
type slowReads struct {
	delay                time.Duration
	running, peak, reads atomic.Int32
}

func (h *slowReads) enter(cmd string) func() {
	if cmd == "smembers" {
		h.reads.Add(1)
	}
	n := h.running.Add(1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(h.delay)
	return func() { h.running.Add(-1) }
}

func (h *slowReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *slowReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "hello", "client", "auth", "select": // a new connection's handshake, inside a command
			return next(ctx, cmd)
		}
		defer h.enter(cmd.Name())()
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook passes pipelines on: the Inspector's reads send
// none.
func (h *slowReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// slowInspector returns an Inspector on b's Redis whose commands each take
// delay longer, and the hook that slows them.
func slowInspector(tb testing.TB, b *testBundle, delay time.Duration) (*asynq.Inspector, *slowReads) {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: b.mr.Addr()})
	hook := &slowReads{delay: delay}
	rdb.AddHook(hook)
	tb.Cleanup(func() { rdb.Close() })
	return asynq.NewInspectorFromRedisClient(rdb), hook
}

// TestQueueConcurrentScrapesKeepSeries scrapes from four clients at once
// while every queue read is slow: each scrape has the queue series (the
// last completed read), and no two reads run at once.
func TestQueueConcurrentScrapesKeepSeries(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	enqueue(t, b.rdb, "default", 1)
	insp, hook := slowInspector(t, b, 20*time.Millisecond)
	obs, logs := observer.New(zap.WarnLevel)
	// Reads back to back: a new one starts as soon as the last has
	// finished, so that most scrapes find one running.
	x, err := metrics.New(metrics.Options{Manager: b.m, Inspector: insp, Logger: zap.New(obs), QueueScrapeInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}

	const clients, scrapes = 4, 10
	var (
		wg      sync.WaitGroup
		missing atomic.Int32
	)
	for range clients {
		wg.Go(func() {
			for range scrapes {
				code, body := scrape(t, x.Handler())
				if code != 200 || !strings.Contains(body, `forgeq_queue_tasks{queue="default",state="pending"} 1`) {
					missing.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := missing.Load(); n != 0 {
		t.Errorf("%d of %d scrapes had no forgeq_queue_tasks series", n, clients*scrapes)
	}
	if p := hook.peak.Load(); p > 1 {
		t.Errorf("%d queue reads ran at once, want at most 1", p)
	}
	if n := hook.reads.Load(); n < 2 || n > clients*scrapes {
		t.Errorf("%d queue reads for %d scrapes, want several and at most one per scrape", n, clients*scrapes)
	}
	if n := logs.Len(); n != 0 {
		t.Errorf("%d warnings about reads that were slow but within the timeout: %v", n, logs.All())
	}
}

// fakeClock is a clock for metrics.WithClock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// clockBundle is a Metrics on b's Redis whose queue collector reads the
// time from a fake clock, through an Inspector whose reads are counted.
type clockBundle struct {
	*testBundle
	x     *metrics.Metrics
	clock *fakeClock
	hook  *slowReads
}

func setupClock(tb testing.TB, o metrics.Options) *clockBundle {
	tb.Helper()
	b := setup(tb, metrics.Options{})
	insp, hook := slowInspector(tb, b, 0)
	clock := newFakeClock()
	o.Manager, o.Inspector = b.m, insp
	x, err := metrics.New(o, metrics.WithClock(clock.now))
	if err != nil {
		tb.Fatal(err)
	}
	return &clockBundle{testBundle: b, x: x, clock: clock, hook: hook}
}

// TestQueueReadsSpaced checks that reads start at most once per
// QueueScrapeInterval, and that the scrapes in between serve the last read
// with its age.
func TestQueueReadsSpaced(t *testing.T) {
	t.Parallel()
	b := setupClock(t, metrics.Options{})
	enqueue(t, b.rdb, "default", 1)

	for _, tt := range []struct {
		giveAdvance time.Duration
		wantReads   int32
		wantAge     float64
		wantPending float64
	}{
		{giveAdvance: 0, wantReads: 1, wantAge: 0, wantPending: 1},
		{giveAdvance: time.Second, wantReads: 1, wantAge: 1, wantPending: 1},
		{giveAdvance: 3900 * time.Millisecond, wantReads: 1, wantAge: 4.9, wantPending: 1}, // 3 enqueued by now
		// A task is enqueued after each step: the reads see them all.
		{giveAdvance: 100 * time.Millisecond, wantReads: 2, wantAge: 0, wantPending: 4},
		{giveAdvance: 4 * time.Second, wantReads: 2, wantAge: 4, wantPending: 4},
		{giveAdvance: 10 * time.Second, wantReads: 3, wantAge: 0, wantPending: 6},
	} {
		b.clock.advance(tt.giveAdvance)
		got := samples(t, b.x.Registry(), "forgeq_queue_scrape_age_seconds", "forgeq_queue_tasks", "forgeq_queue_scrape_errors_total")
		if n := b.hook.reads.Load(); n != tt.wantReads {
			t.Errorf("after %v more: %d reads, want %d", tt.giveAdvance, n, tt.wantReads)
		}
		want := map[string]float64{
			"forgeq_queue_scrape_age_seconds":                         tt.wantAge,
			"forgeq_queue_scrape_errors_total":                        0,
			`forgeq_queue_tasks{queue="default",state="pending"}`:     tt.wantPending,
			`forgeq_queue_tasks{queue="default",state="active"}`:      0,
			`forgeq_queue_tasks{queue="default",state="scheduled"}`:   0,
			`forgeq_queue_tasks{queue="default",state="retry"}`:       0,
			`forgeq_queue_tasks{queue="default",state="archived"}`:    0,
			`forgeq_queue_tasks{queue="default",state="completed"}`:   0,
			`forgeq_queue_tasks{queue="default",state="aggregating"}`: 0,
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
			t.Errorf("after %v more (-want +got):\n%s", tt.giveAdvance, diff)
		}
		enqueue(t, b.rdb, "default", 1)
	}
}

// TestQueueServesLastGoodRead checks what a scrape serves while reads
// fail: the last good read, with its growing age, and every failed read
// counted; once a read is good again, it is served.
func TestQueueServesLastGoodRead(t *testing.T) {
	t.Parallel()
	b := setupClock(t, metrics.Options{Queues: []string{"default", "low"}})
	enqueue(t, b.rdb, "default", 2)
	names := []string{"forgeq_queue_tasks", "asynq_queue_size", "forgeq_queue_scrape_age_seconds", "forgeq_queue_scrape_errors_total"}
	good := samples(t, b.x.Registry(), names...)
	if good[`forgeq_queue_tasks{queue="default",state="pending"}`] != 2 || good["forgeq_queue_scrape_age_seconds"] != 0 {
		t.Fatalf("first scrape: %v", good)
	}

	b.mr.SetError("ERR injected")
	for i, adv := range []time.Duration{5 * time.Second, 10 * time.Minute} {
		b.clock.advance(adv)
		want := maps.Clone(good)
		want["forgeq_queue_scrape_errors_total"] = float64(i + 1)
		want["forgeq_queue_scrape_age_seconds"] = good["forgeq_queue_scrape_age_seconds"] + b.clock.now().Sub(newFakeClock().now()).Seconds()
		if diff := cmp.Diff(want, samples(t, b.x.Registry(), names...)); diff != "" {
			t.Errorf("failing read %d (-want +got):\n%s", i+1, diff)
		}
	}

	b.mr.SetError("")
	enqueue(t, b.rdb, "default", 1)
	b.clock.advance(5 * time.Second)
	got := samples(t, b.x.Registry(), names...)
	if got[`forgeq_queue_tasks{queue="default",state="pending"}`] != 3 || got["forgeq_queue_scrape_age_seconds"] != 0 ||
		got["forgeq_queue_scrape_errors_total"] != 2 {
		t.Errorf("after Redis answers again: %v", got)
	}
}

// TestQueueWarningsRateLimited scrapes while Redis fails, a read per
// scrape: every failed read counts in forgeq_queue_scrape_errors_total,
// but the cause is logged at most once per QueueWarnInterval, with the
// number of errors not logged since the last warning.
func TestQueueWarningsRateLimited(t *testing.T) {
	t.Parallel()
	obs, logs := observer.New(zap.WarnLevel)
	b := setupClock(t, metrics.Options{Logger: zap.New(obs)})
	b.mr.SetError("ERR injected")
	const n = 20
	for range n { // reads at 6s, 12s, ... 120s
		b.clock.advance(6 * time.Second)
		scrape(t, b.x.Handler())
	}
	if got := samples(t, b.x.Registry(), "forgeq_queue_scrape_errors_total")["forgeq_queue_scrape_errors_total"]; got != n {
		t.Errorf("forgeq_queue_scrape_errors_total = %v, want %d", got, n)
	}
	// Warnings at 6s and 66s; the reads at 12s to 60s (9) are summed up
	// in the second.
	var got []int64
	for _, e := range logs.All() {
		got = append(got, e.ContextMap()["errors_since_last_warning"].(int64))
	}
	if diff := cmp.Diff([]int64{0, 9}, got); diff != "" {
		t.Errorf("warnings' errors_since_last_warning over %d failing reads in 2 minutes (-want +got):\n%s", n, diff)
	}
}
