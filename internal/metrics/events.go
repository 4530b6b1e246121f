package metrics

import "github.com/prometheus/client_golang/prometheus"

// newEventsDropped returns forgeq_events_dropped_total, read from dropped
// on every scrape.
func newEventsDropped(ns string, dropped func() uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: "events", Name: "dropped_total",
		Help: "Task events (package events) this process published but did not write to Redis: its buffer was full, or Redis refused or failed the write. Watchers miss them; WaitResult still ends through its check of the task's state.",
	}, func() float64 { return float64(dropped()) })
}
