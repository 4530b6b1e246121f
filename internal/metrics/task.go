package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/forgeq/forgeq/tasks"
)

// outcomePanic is the outcome in forgeq_tasks_failed_total of a handler
// that panicked; the others are tasks.Outcome's.
const outcomePanic = "panic"

// failureOutcomes are the outcomes of forgeq_tasks_failed_total: every
// tasks.Outcome but done, and "panic".
var failureOutcomes = []string{
	tasks.OutcomeRetry, tasks.OutcomeArchived, tasks.OutcomeSkipRetry, tasks.OutcomeCanceled, tasks.OutcomeCancelled, outcomePanic,
}

// unknownQueue labels tasks whose ctx carries no queue name (a handler
// called directly, outside an asynq server).
const unknownQueue = "unknown"

// taskDurationBuckets suit background tasks: milliseconds to minutes.
var taskDurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// taskMetrics holds the instruments TaskMiddleware updates.
type taskMetrics struct {
	processed  *prometheus.CounterVec
	failed     *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inProgress *prometheus.GaugeVec
	recovered  *prometheus.CounterVec
	// cancelIgnored counts cancelled tasks whose handler did not stop
	// in time (CountCancelIgnored, in cancel.go).
	cancelIgnored *prometheus.CounterVec
	// postponed counts postponed calls by reason (postpone.go).
	postponed *prometheus.CounterVec
	// deduplicated counts enqueues deduplicated by mode (dedup.go).
	deduplicated *prometheus.CounterVec
}

func newTaskMetrics(ns string) *taskMetrics {
	return &taskMetrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "tasks", Name: "processed_total",
			Help: "Tasks processed by this worker, whether they succeeded or failed.",
		}, []string{"task_type", "queue"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "tasks", Name: "failed_total",
			Help: "Tasks that failed in this worker, by outcome: retry, archived, skip_retry, canceled, cancelled or panic.",
		}, []string{"task_type", "queue", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "task", Name: "duration_seconds",
			Help:    "Time a task's handler took in this worker.",
			Buckets: taskDurationBuckets,
		}, []string{"task_type", "queue"}),
		inProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "tasks", Name: "in_progress",
			Help: "Tasks being processed by this worker.",
		}, []string{"task_type"}),
		recovered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "tasks", Name: "recovered_total",
			Help: "Tasks this worker ran again after asynq's recoverer took them back from a worker that died (their lease expired).",
		}, []string{"task_type", "queue"}),
		cancelIgnored: newCancelIgnored(ns),
		postponed:     newPostponed(ns),
		deduplicated:  newDeduplicated(ns),
	}
}

// precreate creates the series of every type in types with zero values:
// in progress, and for every queue in queues processed, recovered, duration
// and failed with every outcome.
func (m *taskMetrics) precreate(types, queues []string) {
	for _, typ := range types {
		m.inProgress.WithLabelValues(typ)
		for _, q := range queues {
			m.processed.WithLabelValues(typ, q)
			m.recovered.WithLabelValues(typ, q)
			m.cancelIgnored.WithLabelValues(typ, q)
			precreatePostponed(m.postponed, typ, q)
			m.duration.WithLabelValues(typ, q)
			for _, outcome := range failureOutcomes {
				m.failed.WithLabelValues(typ, q, outcome)
			}
		}
	}
}

// Describe implements prometheus.Collector.
func (m *taskMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.processed.Describe(ch)
	m.failed.Describe(ch)
	m.duration.Describe(ch)
	m.inProgress.Describe(ch)
	m.recovered.Describe(ch)
	m.cancelIgnored.Describe(ch)
	m.postponed.Describe(ch)
	m.deduplicated.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *taskMetrics) Collect(ch chan<- prometheus.Metric) {
	m.processed.Collect(ch)
	m.failed.Collect(ch)
	m.duration.Collect(ch)
	m.inProgress.Collect(ch)
	m.recovered.Collect(ch)
	m.cancelIgnored.Collect(ch)
	m.postponed.Collect(ch)
	m.deduplicated.Collect(ch)
}

// CountRecovered counts one task of taskType on queue in
// forgeq_tasks_recovered_total: a task that asynq's recoverer took back
// from a worker that died, run again in this one. An empty queue counts as
// "unknown". It is safe for concurrent use.
func (x *Metrics) CountRecovered(taskType, queue string) {
	if queue == "" {
		queue = unknownQueue
	}
	x.tasks.recovered.WithLabelValues(taskType, queue).Inc()
}

// TaskMiddleware returns asynq middleware that counts every task the
// handler finishes in forgeq_tasks_processed_total, failures in
// forgeq_tasks_failed_total by outcome, the handler's time in
// forgeq_task_duration_seconds and running tasks in
// forgeq_tasks_in_progress.
//
// The outcome of a failure is "panic" when the handler panicked,
// "canceled" when the call was interrupted by shutdown or a lost lease
// (asynq requeues the task), "cancelled" when a cancellation stopped it
// (tasks.CancelledError: archived, not retried), "skip_retry" when the error wraps
// asynq.SkipRetry, "archived" when the task had no retry left
// (tasks.LastAttempt) and "retry" otherwise: tasks.Outcome, as in
// tasks.NewMux's log lines. A call that returns nil after its context
// ended (its timeout, or shutdown) is a failure too: asynq has given up on
// it. A call that returned a *tasks.PostponeError (outcome "postponed")
// counts only in forgeq_tasks_postponed_total, by its reason: the task was
// neither processed nor failed, and runs again later.
// Like tasks.NewMux's logging middleware, it turns a panic into the task's
// error ("<type>: handler panic: <value>"), which asynq retries. Add it
// with mux.Use after tasks.NewMux, so that it runs inside the logging
// middleware and sees panics before they become errors there.
//
// The queue label is asynq.GetQueueName(ctx), or "unknown" outside a server.
// When the task runs in a sampled span (package telemetry), its duration
// observation carries the trace id as an exemplar.
// The returned middleware is safe for concurrent use.
func (x *Metrics) TaskMiddleware() asynq.MiddlewareFunc {
	m := x.tasks
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			typ := t.Type()
			queue, ok := asynq.GetQueueName(ctx)
			if !ok || queue == "" {
				queue = unknownQueue
			}
			running := m.inProgress.WithLabelValues(typ)
			running.Inc()
			start := time.Now()
			defer func() {
				outcome := ""
				if p := recover(); p != nil {
					err = fmt.Errorf("%s: handler panic: %v", typ, p)
					outcome = outcomePanic
				}
				running.Dec()
				if pe, ok := tasks.AsPostpone(err); ok && outcome == "" {
					// Not processed, nor failed: it runs again later.
					m.postponed.WithLabelValues(typ, queue, pe.Reason).Inc()
					return
				}
				observe(ctx, m.duration.WithLabelValues(typ, queue), time.Since(start).Seconds())
				m.processed.WithLabelValues(typ, queue).Inc()
				if outcome == "" {
					outcome = tasks.Outcome(ctx, err)
				}
				if outcome != tasks.OutcomeDone {
					m.failed.WithLabelValues(typ, queue, outcome).Inc()
				}
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}
