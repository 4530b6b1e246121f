package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

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
# HELP forgeq_queue_scrape_errors_total Reads of asynq queue statistics that failed or took too long, leaving queues out of a scrape.
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
	b := setup(t, metrics.Options{})
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

	// The second scrape finds the first read still running and does not
	// start another.
	for i := 1; i <= 2; i++ {
		start := time.Now()
		got := samples(t, x.Registry(), "forgeq_queue_tasks", "forgeq_queue_scrape_errors_total")
		if took := time.Since(start); took > time.Second {
			t.Errorf("scrape %d took %v with a 50ms queue timeout", i, took)
		}
		if diff := cmp.Diff(map[string]float64{"forgeq_queue_scrape_errors_total": float64(i)}, got); diff != "" {
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
	x, err := metrics.New(metrics.Options{Manager: m, Inspector: insp, Logger: zaptest.NewLogger(t)})
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
// knows, and that a failing read still leaves every queue out.
func TestQueueSeriesFromStart(t *testing.T) {
	t.Parallel()
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
	names := []string{
		"forgeq_queue_tasks", "forgeq_queue_paused", "forgeq_queue_processed_total", "forgeq_queue_failed_total",
		"forgeq_queue_scrape_errors_total",
		"asynq_tasks_enqueued_total", "asynq_queue_size", "asynq_tasks_processed_total", "asynq_tasks_failed_total",
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

	// A read that fails reports no queue, configured or not: zeros would
	// hide the failure.
	b.mr.SetError("ERR injected")
	got = samples(t, b.x.Registry(), names...)
	b.mr.SetError("")
	if diff := cmp.Diff(map[string]float64{"forgeq_queue_scrape_errors_total": 1}, got); diff != "" {
		t.Errorf("queue series while Redis fails (-want +got):\n%s", diff)
	}
}
