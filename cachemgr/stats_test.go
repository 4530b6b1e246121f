package cachemgr_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/forgeq/forgeq/cachemgr"
)

// ignoreLatency leaves the timing-dependent histogram out of comparisons of
// counters.
var ignoreLatency = cmpopts.IgnoreFields(cachemgr.OpStats{}, "Latency")

func TestStatsLatency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	for range 3 {
		b.m.Set(ctx, "k", "v", 0)
	}
	b.m.GetAsync(ctx, "k").Wait()
	b.m.GetAsync(ctx, "k").Wait()
	b.m.GetOrCompute(ctx, "slow", 0, func(context.Context) (string, error) {
		time.Sleep(30 * time.Millisecond)
		return "v", nil
	})
	s := b.m.Stats().Ops
	last := len(cachemgr.LatencyBuckets) - 1
	for op, want := range map[cachemgr.Op]uint64{cachemgr.OpSet: 3, cachemgr.OpGet: 2, cachemgr.OpGetOrCompute: 1} {
		l := s[op].Latency
		if l.Count != want || l.Buckets[last] != want || l.Sum <= 0 {
			t.Errorf("%v latency: count %d, last bucket %d, sum %v; want %d calls", op, l.Count, l.Buckets[last], l.Sum, want)
		}
		for i := 1; i <= last; i++ {
			if l.Buckets[i] < l.Buckets[i-1] {
				t.Errorf("%v buckets not cumulative: %v", op, l.Buckets)
			}
		}
	}
	// The 30ms computation is above the 25ms bucket.
	l := s[cachemgr.OpGetOrCompute].Latency
	for i, le := range cachemgr.LatencyBuckets {
		if le == 25*time.Millisecond && l.Buckets[i] != 0 {
			t.Errorf("a 30ms call counted in the 25ms bucket: %v", l.Buckets)
		}
	}
}
