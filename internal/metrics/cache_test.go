package metrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/metrics"
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
