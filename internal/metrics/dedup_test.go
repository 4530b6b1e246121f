package metrics_test

import (
	"strings"
	"testing"

	"github.com/forgeq/forgeq/internal/metrics"
)

func TestCountDeduplicated(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})
	b.x.CountDeduplicated("data:process", "default", "replace")
	b.x.CountDeduplicated("data:process", "default", "replace")
	b.x.CountDeduplicated("data:process", "", "keep")
	_, body := scrape(t, b.x.Handler())
	for _, want := range []string{
		`forgeq_tasks_deduplicated_total{mode="replace",queue="default",task_type="data:process"} 2`,
		`forgeq_tasks_deduplicated_total{mode="keep",queue="unknown",task_type="data:process"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}
