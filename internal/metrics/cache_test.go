package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/internal/redistest"
)

func TestCacheCounters(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t, metrics.Options{})

	if err := b.m.Set(ctx, "k", "v", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Get(ctx, "k"); err != nil { // hit
		t.Fatal(err)
	}
	for range 2 {
		if _, err := b.m.Get(ctx, "absent"); !errors.Is(err, cachemgr.ErrMiss) { // miss
			t.Fatalf("Get(absent) = %v, want ErrMiss", err)
		}
	}
	b.mr.SetError("ERR injected")
	if _, err := b.m.Get(ctx, "k"); err == nil {
		t.Fatal("Get with a failing server: no error")
	}
	if err := b.m.Set(ctx, "k", "v", 0); err == nil {
		t.Fatal("Set with a failing server: no error")
	}
	b.mr.SetError("")
	if _, _, err := b.m.GetOrCompute(ctx, "c", 0, func(context.Context) (string, error) { return "x", nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.GetAsync(ctx, "k").Wait(); err != nil {
		t.Fatal(err)
	}

	got := samples(t, b.x.Registry(),
		"forgeq_cache_calls_total", "forgeq_cache_hits_total", "forgeq_cache_misses_total", "forgeq_cache_errors_total")
	want := map[string]float64{}
	for _, op := range cachemgr.Ops() {
		for _, n := range []string{"calls", "hits", "misses", "errors"} {
			want[`forgeq_cache_`+n+`_total{op="`+op.String()+`"}`] = 0
		}
	}
	for k, v := range map[string]float64{
		`forgeq_cache_calls_total{op="get"}`:             5, // 1 hit, 2 misses, 1 error, 1 async hit
		`forgeq_cache_hits_total{op="get"}`:              2,
		`forgeq_cache_misses_total{op="get"}`:            2,
		`forgeq_cache_errors_total{op="get"}`:            1,
		`forgeq_cache_calls_total{op="set"}`:             2,
		`forgeq_cache_errors_total{op="set"}`:            1,
		`forgeq_cache_calls_total{op="get_or_compute"}`:  1,
		`forgeq_cache_misses_total{op="get_or_compute"}`: 1,
	} {
		want[k] = v
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cache counters (-want +got):\n%s", diff)
	}

	got = samples(t, b.x.Registry(), "forgeq_cache_async_in_flight", "forgeq_cache_computations_total",
		"forgeq_cache_pipelines_total", "forgeq_cache_pipelined_calls_total")
	if diff := cmp.Diff(map[string]float64{
		"forgeq_cache_async_in_flight":       0,
		"forgeq_cache_computations_total":    1,
		"forgeq_cache_pipelines_total":       1,
		"forgeq_cache_pipelined_calls_total": 1,
	}, got); diff != "" {
		t.Errorf("cache gauges and totals (-want +got):\n%s", diff)
	}
}

// holdPipelines is a go-redis hook that keeps every pipeline from reaching
// Redis until release is closed; entered is closed when the first one
// arrives.
type holdPipelines struct {
	entered, release chan struct{}
	once             sync.Once
}

func (h *holdPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *holdPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *holdPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.once.Do(func() { close(h.entered) })
		<-h.release
		return next(ctx, cmds)
	}
}

// TestCacheAsyncInFlight holds the manager's async calls on their way to
// Redis and checks that the gauge reports them, then that it drops to 0
// once they finish.
func TestCacheAsyncInFlight(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	hold := &holdPipelines{entered: make(chan struct{}), release: make(chan struct{})}
	rdb.AddHook(hold)
	t.Cleanup(func() { rdb.Close() })
	// One pipeline at a time, so the read leaves after the writes.
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{AsyncPipelines: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	x, err := metrics.New(metrics.Options{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			close(hold.release)
		}
	})

	ctx := t.Context()
	const n = 7
	sets := make([]*cachemgr.Future[struct{}], 0, n-2)
	for i := range n - 2 {
		sets = append(sets, m.SetAsync(ctx, fmt.Sprint("k", i), "v", 0))
	}
	<-hold.entered // the first pipeline is held; the other calls queue behind it
	get := m.GetAsync(ctx, "k0")
	del := m.DeleteAsync(ctx, "k1")

	want := map[string]float64{"forgeq_cache_async_in_flight": n}
	if diff := cmp.Diff(want, samples(t, x.Registry(), "forgeq_cache_async_in_flight")); diff != "" {
		t.Errorf("while %d calls are held (-want +got):\n%s", n, diff)
	}
	if got := m.Stats().AsyncInFlight; got != n {
		t.Errorf("Stats().AsyncInFlight = %d, want %d", got, n)
	}

	close(hold.release)
	released = true
	for _, f := range sets {
		if _, err := f.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := get.Wait(); err != nil || v != "v" {
		t.Errorf("GetAsync(k0) = %q, %v", v, err)
	}
	if _, err := del.Wait(); err != nil {
		t.Fatal(err)
	}
	want["forgeq_cache_async_in_flight"] = 0
	if diff := cmp.Diff(want, samples(t, x.Registry(), "forgeq_cache_async_in_flight")); diff != "" {
		t.Errorf("after every call finished (-want +got):\n%s", diff)
	}
}

func TestCacheLatencyHistogram(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t, metrics.Options{})
	for range 3 {
		b.m.Get(ctx, "absent")
	}
	b.m.GetOrCompute(ctx, "slow", 0, func(context.Context) (string, error) {
		time.Sleep(30 * time.Millisecond)
		return "v", nil
	})

	mfs, err := b.x.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	stats := b.m.Stats().Ops
	found := 0
	for _, mf := range mfs {
		if mf.GetName() != "forgeq_cache_operation_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			op := m.GetLabel()[0].GetValue()
			var st cachemgr.OpStats
			for o, s := range stats {
				if o.String() == op {
					st = s
				}
			}
			h := m.GetHistogram()
			if h.GetSampleCount() != st.Latency.Count || h.GetSampleSum() != st.Latency.Sum.Seconds() {
				t.Errorf("%s: count %d sum %v, want %d and %v", op, h.GetSampleCount(), h.GetSampleSum(), st.Latency.Count, st.Latency.Sum.Seconds())
			}
			if len(h.GetBucket()) != len(cachemgr.LatencyBuckets) {
				t.Fatalf("%s: %d buckets, want %d", op, len(h.GetBucket()), len(cachemgr.LatencyBuckets))
			}
			for i, bk := range h.GetBucket() {
				if bk.GetUpperBound() != cachemgr.LatencyBuckets[i].Seconds() || bk.GetCumulativeCount() != st.Latency.Buckets[i] {
					t.Errorf("%s bucket %d: le=%v count %d, want le=%v count %d", op, i,
						bk.GetUpperBound(), bk.GetCumulativeCount(), cachemgr.LatencyBuckets[i].Seconds(), st.Latency.Buckets[i])
				}
			}
			found++
		}
	}
	if found != len(cachemgr.Ops()) {
		t.Fatalf("%d histograms, want one per op (%d)", found, len(cachemgr.Ops()))
	}
	got := samples(t, b.x.Registry(), "forgeq_cache_operation_duration_seconds")
	if got[`forgeq_cache_operation_duration_seconds_count{op="get"}`] != 3 ||
		got[`forgeq_cache_operation_duration_seconds_count{op="get_or_compute"}`] != 1 ||
		got[`forgeq_cache_operation_duration_seconds_sum{op="get_or_compute"}`] < 0.03 {
		t.Errorf("histogram samples: %v", got)
	}
}

// TestCacheTiers: the tier series exist with the near cache off (the near
// tier at zero) and its near_* series do not.
func TestCacheTiers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := setup(t, metrics.Options{})
	if err := b.m.Set(ctx, "k", "v", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Get(ctx, "absent"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Fatal(err)
	}
	got := samples(t, b.x.Registry(), "forgeq_cache_tier_hits_total", "forgeq_cache_tier_misses_total",
		"forgeq_cache_near_entries", "forgeq_cache_near_live")
	want := map[string]float64{
		`forgeq_cache_tier_hits_total{tier="redis"}`:   1,
		`forgeq_cache_tier_hits_total{tier="near"}`:    0,
		`forgeq_cache_tier_misses_total{tier="redis"}`: 1,
		`forgeq_cache_tier_misses_total{tier="near"}`:  0,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tier series (-want +got):\n%s", diff)
	}
}

// TestCacheNearTiers counts reads per tier with the near cache on, against
// a real Redis (REDIS_TEST_URL, DB 12: client tracking needs a real one).
func TestCacheNearTiers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m, err := cachemgr.New(cachemgr.Options{URL: redistest.URL(t, 56), KeyPrefix: redistest.Prefix(t),
		NearCache: cachemgr.NearCacheOptions{MaxEntries: 100}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeletePattern(context.Background(), "*")
		m.Close()
	})
	x, err := metrics.New(metrics.Options{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Set(ctx, "k", "v", 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for m.Stats().Near.Hits == 0 { // until tracking is live and k is held
		if time.Now().After(deadline) {
			t.Fatal("no near cache hit within 15s")
		}
		if _, err := m.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s := m.Stats()
	got := samples(t, x.Registry(), "forgeq_cache_tier_hits_total", "forgeq_cache_tier_misses_total",
		"forgeq_cache_near_entries", "forgeq_cache_near_live", "forgeq_cache_hits_total")
	want := map[string]float64{
		`forgeq_cache_tier_hits_total{tier="near"}`:    float64(s.Near.Hits),
		`forgeq_cache_tier_misses_total{tier="near"}`:  float64(s.Near.Misses),
		`forgeq_cache_tier_hits_total{tier="redis"}`:   float64(s.Near.Misses),
		`forgeq_cache_tier_misses_total{tier="redis"}`: 0,
		`forgeq_cache_near_entries`:                    1,
		`forgeq_cache_near_live`:                       1,
	}
	for k := range got {
		if _, ok := want[k]; !ok && k != `forgeq_cache_hits_total{op="get"}` {
			delete(got, k)
		}
	}
	want[`forgeq_cache_hits_total{op="get"}`] = float64(s.Ops[cachemgr.OpGet].Hits) // both tiers, as before
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("near series (-want +got):\n%s", diff)
	}
}
