package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/forgeq/forgeq/tasks"
)

// newPostponed returns forgeq_tasks_postponed_total.
func newPostponed(ns string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: "tasks", Name: "postponed_total",
		Help: "Tasks this worker postponed without running them to the end or counting a retry (tasks.Postpone), by reason: rate, concurrency or concurrency_key for a type's declared limits, or a handler's own.",
	}, []string{"task_type", "queue", "reason"})
}

// precreatePostponed creates the series of typ on queue for every reason
// of the declared limits.
func precreatePostponed(c *prometheus.CounterVec, typ, queue string) {
	for _, reason := range tasks.LimitReasons {
		c.WithLabelValues(typ, queue, reason)
	}
}
