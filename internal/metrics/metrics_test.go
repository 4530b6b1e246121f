package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/metrics"
)

// testBundle is what most tests need: a cache manager and an Inspector on
// one miniredis, and a Metrics over both.
type testBundle struct {
	mr   *miniredis.Miniredis
	rdb  redis.UniversalClient
	m    *cachemgr.Manager
	insp *asynq.Inspector
	x    *metrics.Metrics
}

// setup returns a new bundle; o.Manager and o.Inspector are filled in.
func setup(tb testing.TB, o metrics.Options) *testBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)
	o.Manager, o.Inspector = m, insp
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(tb)
	}
	x, err := metrics.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return &testBundle{mr: mr, rdb: rdb, m: m, insp: insp, x: x}
}

// samples gathers g and returns the samples of the named metric families as
// `name{label="value",...}` → value. A histogram gives name_count and
// name_sum samples; a family with no labels gives plain `name`.
func samples(tb testing.TB, g prometheus.Gatherer, names ...string) map[string]float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if !want[mf.GetName()] {
			continue
		}
		for _, m := range mf.GetMetric() {
			var pairs []string
			for _, lp := range m.GetLabel() {
				pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			sort.Strings(pairs)
			labels := ""
			if len(pairs) > 0 {
				labels = "{" + strings.Join(pairs, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[mf.GetName()+labels] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[mf.GetName()+labels] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[mf.GetName()+"_count"+labels] = float64(m.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"+labels] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// scrape serves one GET /metrics from h and returns the status and body.
func scrape(tb testing.TB, h http.Handler) (int, string) {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestNewOptions(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})

	tests := []struct {
		name    string
		give    metrics.Options
		wantErr string
	}{
		{name: "defaults", give: metrics.Options{Manager: b.m}},
		{name: "no inspector is fine", give: metrics.Options{Manager: b.m, Inspector: nil}},
		{name: "custom namespace", give: metrics.Options{Manager: b.m, Namespace: "acme_jobs"}},
		{name: "nil manager", give: metrics.Options{}, wantErr: "Manager is nil"},
		{name: "namespace with dash", give: metrics.Options{Manager: b.m, Namespace: "forge-q"}, wantErr: "namespace"},
		{name: "namespace starting with digit", give: metrics.Options{Manager: b.m, Namespace: "1q"}, wantErr: "namespace"},
		{name: "negative timeout", give: metrics.Options{Manager: b.m, QueueScrapeTimeout: -time.Second}, wantErr: "QueueScrapeTimeout"},
		{name: "types and queues", give: metrics.Options{Manager: b.m, TaskTypes: []string{"a:x", "a:x"}, Queues: []string{"default"}}},
		{name: "empty task type", give: metrics.Options{Manager: b.m, TaskTypes: []string{"a:x", ""}}, wantErr: "TaskTypes[1] is empty"},
		{name: "empty queue", give: metrics.Options{Manager: b.m, Queues: []string{""}}, wantErr: "Queues[0] is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			x, err := metrics.New(tt.give)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			if x.Registry() == nil || x.Handler() == nil {
				t.Fatal("nil Registry or Handler")
			}
		})
	}
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{Namespace: "acme"})
	got := samples(t, b.x.Registry(), "acme_cache_calls_total", "forgeq_cache_calls_total")
	if _, ok := got[`acme_cache_calls_total{op="get"}`]; !ok || len(got) != len(cachemgr.Ops()) {
		t.Errorf("samples = %v, want acme_cache_calls_total for every op and nothing else", got)
	}
}

// exercise produces at least one sample of every forgeq metric.
func exercise(tb testing.TB, b *testBundle) {
	tb.Helper()
	ctx := tb.Context()
	if err := b.m.Set(ctx, "k", "v", 0); err != nil {
		tb.Fatal(err)
	}
	b.m.GetAsync(ctx, "k").Wait()
	c := asynq.NewClientFromRedisClient(b.rdb)
	if _, err := c.EnqueueContext(ctx, asynq.NewTask("t:x", nil), asynq.Queue("default")); err != nil {
		tb.Fatal(err)
	}
	mw := b.x.TaskMiddleware()
	mw(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return errors.New("x") })).
		ProcessTask(ctx, asynq.NewTask("t:x", nil))
	b.x.HTTPMiddleware(nil)(http.NotFoundHandler()).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
}

func TestLint(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	exercise(t, b)

	problems, err := testutil.GatherAndLint(b.x.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		// asynqmon queries asynq's exporter's names; that one is a gauge.
		if p.Metric == "asynq_tasks_enqueued_total" && strings.Contains(p.Text, `"_total" suffix`) {
			continue
		}
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// Every metric has a sample.
	_, body := scrape(t, b.x.Handler())
	for _, name := range []string{
		"forgeq_cache_calls_total", "forgeq_cache_hits_total", "forgeq_cache_misses_total",
		"forgeq_cache_errors_total", "forgeq_cache_operation_duration_seconds_bucket",
		"forgeq_cache_async_in_flight", "forgeq_cache_computations_total",
		"forgeq_cache_pipelines_total", "forgeq_cache_pipelined_calls_total",
		"forgeq_cache_tier_hits_total", "forgeq_cache_tier_misses_total",
		"forgeq_tasks_processed_total", "forgeq_tasks_failed_total",
		"forgeq_task_duration_seconds_bucket", "forgeq_tasks_in_progress",
		"forgeq_queue_tasks", "forgeq_queue_latency_seconds", "forgeq_queue_paused",
		"forgeq_queue_processed_total", "forgeq_queue_failed_total", "forgeq_queue_scrape_errors_total",
		"forgeq_http_requests_total", "forgeq_http_request_duration_seconds_bucket",
		"asynq_tasks_enqueued_total", "asynq_queue_size", "asynq_queue_latency_seconds",
		"asynq_queue_memory_usage_approx_bytes", "asynq_tasks_processed_total", "asynq_tasks_failed_total",
		"go_goroutines", "process_start_time_seconds",
	} {
		if !strings.Contains(body, "\n"+name+"{") && !strings.Contains(body, "\n"+name+" ") {
			t.Errorf("no %s sample in the scrape", name)
		}
	}
}

// failingCollector fails every collection.
type failingCollector struct{ desc *prometheus.Desc }

func (c failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(c.desc, errors.New("broken"))
}

func TestHandlerSurvivesCollectorError(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	broken := failingCollector{prometheus.NewDesc("broken_thing", "Always fails.", nil, nil)}
	b.x.Registry().MustRegister(broken)

	for i := range 2 {
		code, body := scrape(t, b.x.Handler())
		if code != http.StatusOK {
			t.Fatalf("scrape %d: status %d, want 200; body:\n%s", i, code, body)
		}
		if !strings.Contains(body, `forgeq_cache_calls_total{op="get"} 0`) {
			t.Errorf("scrape %d: cache metrics missing", i)
		}
		if strings.Contains(body, "broken_thing") {
			t.Errorf("scrape %d: failing collector's metric served", i)
		}
	}
	b.x.Registry().Unregister(broken)
	got := samples(t, b.x.Registry(), "promhttp_metric_handler_errors_total")
	if v := got[`promhttp_metric_handler_errors_total{cause="gathering"}`]; v != 2 {
		t.Errorf("handler errors (gathering) = %v, want 2; all: %v", v, got)
	}
}
