package metrics_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/internal/metrics"
)

// TestCountCancelIgnored checks that each report counts once, under its
// type and queue, and that an empty queue is "unknown".
func TestCountCancelIgnored(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{TaskTypes: []string{"a:x"}, Queues: []string{"default"}})
	b.x.CountCancelIgnored("a:x", "default")
	b.x.CountCancelIgnored("b:y", "")
	want := map[string]float64{
		`forgeq_tasks_cancel_ignored_total{queue="default",task_type="a:x"}`: 1,
		`forgeq_tasks_cancel_ignored_total{queue="unknown",task_type="b:y"}`: 1,
	}
	if diff := cmp.Diff(want, samples(t, b.x.Registry(), "forgeq_tasks_cancel_ignored_total")); diff != "" {
		t.Errorf("forgeq_tasks_cancel_ignored_total (-want +got):\n%s", diff)
	}
}
