package metrics

import "github.com/prometheus/client_golang/prometheus"

// newDeduplicated returns forgeq_tasks_deduplicated_total.
func newDeduplicated(ns string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: "tasks", Name: "deduplicated_total",
		Help: "Enqueues by this process that found their dedup key held by a waiting task (tasks.Dedup) and made no new task, by the mode applied: keep, replace or debounce.",
	}, []string{"task_type", "queue", "mode"})
}

// CountDeduplicated counts one enqueue of taskType on queue in
// forgeq_tasks_deduplicated_total: its dedup key was held by a waiting
// task, and mode (keep, replace or debounce) was applied to that task
// instead of making a new one. It is safe for concurrent use.
func (x *Metrics) CountDeduplicated(taskType, queue, mode string) {
	if queue == "" {
		queue = unknownQueue
	}
	x.tasks.deduplicated.WithLabelValues(taskType, queue, mode).Inc()
}
