package metrics_test

import (
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/internal/metrics"
)

// TestEventsDropped checks that forgeq_events_dropped_total reads the
// publisher's count on each scrape, and is absent without one.
func TestEventsDropped(t *testing.T) {
	t.Parallel()
	var dropped atomic.Uint64
	b := setup(t, metrics.Options{EventsDropped: dropped.Load})
	want := map[string]float64{"forgeq_events_dropped_total": 0}
	if diff := cmp.Diff(want, samples(t, b.x.Registry(), "forgeq_events_dropped_total")); diff != "" {
		t.Errorf("before a drop (-want +got):\n%s", diff)
	}
	dropped.Add(3)
	want["forgeq_events_dropped_total"] = 3
	if diff := cmp.Diff(want, samples(t, b.x.Registry(), "forgeq_events_dropped_total")); diff != "" {
		t.Errorf("after 3 drops (-want +got):\n%s", diff)
	}

	none := setup(t, metrics.Options{})
	if got := samples(t, none.x.Registry(), "forgeq_events_dropped_total"); len(got) != 0 {
		t.Errorf("without EventsDropped: %v, want no series", got)
	}
}
