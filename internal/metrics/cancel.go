package metrics

import "github.com/prometheus/client_golang/prometheus"

// newCancelIgnored returns forgeq_tasks_cancel_ignored_total.
func newCancelIgnored(ns string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: "tasks", Name: "cancel_ignored_total",
		Help: "Cancelled tasks whose handler ignored its context: it had not returned a second after the cancellation reached this worker. The task is archived as cancelled all the same.",
	}, []string{"task_type", "queue"})
}

// CountCancelIgnored counts one task of taskType on queue in
// forgeq_tasks_cancel_ignored_total: a task cancelled while it ran in this
// worker (control.Cancel) whose handler did not return within a second of
// the cancellation. Cancelled tasks themselves count in
// forgeq_tasks_failed_total with outcome "cancelled". An empty queue
// counts as "unknown". It is safe for concurrent use.
func (x *Metrics) CountCancelIgnored(taskType, queue string) {
	if queue == "" {
		queue = unknownQueue
	}
	x.tasks.cancelIgnored.WithLabelValues(taskType, queue).Inc()
}
