package metrics

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// queueCollector reads asynq's queue statistics through an Inspector at
// scrape time. At most one read runs at a time, and a scrape waits for it
// at most timeout; what is slower or fails is counted in scrapeErrors and
// left out of that scrape.
//
// Each read is exported twice: as forgeq_queue_* (under the namespace) and
// as the asynq_* families of asynq's own exporter (github.com/hibiken/asynq/x
// metrics), whose names and labels the asynqmon dashboard's charts query.
//
// A read that lists the queues also reports each of the configured queues
// that Redis does not know yet (asynq creates a queue with its first
// task), with zero values, so that their series exist from the start. A
// read that fails or is too slow reports none, as for the others.
type queueCollector struct {
	insp    *asynq.Inspector
	timeout time.Duration
	queues  []string // configured queues, reported even before they exist
	log     *zap.Logger

	tasks, latency, paused *prometheus.Desc
	processed, failed      *prometheus.Desc
	scrapeErrors           prometheus.Counter

	asynq asynqDescs

	reading atomic.Bool // a read is running (possibly abandoned by a timed-out scrape)
}

// asynqDescs are the asynq_* families that asynqmon's charts query. Their
// names are fixed by asynqmon and take no namespace.
type asynqDescs struct {
	enqueued, size, latency, memory *prometheus.Desc
	processed, failed               *prometheus.Desc
}

// asynqStates are the states of asynq_tasks_enqueued_total, as asynq's
// exporter reports them.
var asynqStates = []string{"active", "pending", "scheduled", "retry", "archived", "completed"}

func newAsynqDescs() asynqDescs {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("asynq_"+name, help, labels, nil)
	}
	return asynqDescs{
		// A gauge despite its _total suffix, as in asynq's exporter.
		enqueued:  desc("tasks_enqueued_total", "Tasks in an asynq queue, by state (asynq exporter name, for the asynqmon dashboard).", "queue", "state"),
		size:      desc("queue_size", "Tasks in an asynq queue in any state but completed (asynq exporter name).", "queue"),
		latency:   desc("queue_latency_seconds", "Age of the oldest pending task of an asynq queue (asynq exporter name).", "queue"),
		memory:    desc("queue_memory_usage_approx_bytes", "Redis memory used by an asynq queue, estimated by sampling (asynq exporter name).", "queue"),
		processed: desc("tasks_processed_total", "Tasks processed from an asynq queue by all workers, succeeded or failed (asynq exporter name).", "queue"),
		failed:    desc("tasks_failed_total", "Tasks of an asynq queue that failed in any worker (asynq exporter name).", "queue"),
	}
}

func (d asynqDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.enqueued, d.size, d.latency, d.memory, d.processed, d.failed}
}

// collect sends q's asynq_* metrics to ch.
func (d asynqDescs) collect(ch chan<- prometheus.Metric, q *asynq.QueueInfo) {
	byState := map[string]int{
		"active": q.Active, "pending": q.Pending, "scheduled": q.Scheduled,
		"retry": q.Retry, "archived": q.Archived, "completed": q.Completed,
	}
	for _, s := range asynqStates {
		ch <- prometheus.MustNewConstMetric(d.enqueued, prometheus.GaugeValue, float64(byState[s]), q.Queue, s)
	}
	ch <- prometheus.MustNewConstMetric(d.size, prometheus.GaugeValue, float64(q.Size), q.Queue)
	ch <- prometheus.MustNewConstMetric(d.latency, prometheus.GaugeValue, q.Latency.Seconds(), q.Queue)
	ch <- prometheus.MustNewConstMetric(d.memory, prometheus.GaugeValue, float64(q.MemoryUsage), q.Queue)
	ch <- prometheus.MustNewConstMetric(d.processed, prometheus.CounterValue, float64(q.ProcessedTotal), q.Queue)
	ch <- prometheus.MustNewConstMetric(d.failed, prometheus.CounterValue, float64(q.FailedTotal), q.Queue)
}

func newQueueCollector(ns string, insp *asynq.Inspector, timeout time.Duration, queues []string, log *zap.Logger) *queueCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "queue", name), help, labels, nil)
	}
	return &queueCollector{
		insp:      insp,
		timeout:   timeout,
		queues:    queues,
		log:       log,
		tasks:     desc("tasks", "Tasks in an asynq queue, by state.", "queue", "state"),
		latency:   desc("latency_seconds", "Age of the oldest pending task of an asynq queue.", "queue"),
		paused:    desc("paused", "Whether an asynq queue is paused (1) or not (0).", "queue"),
		processed: desc("processed_total", "Tasks processed from an asynq queue by all workers, succeeded or failed.", "queue"),
		failed:    desc("failed_total", "Tasks of an asynq queue that failed in any worker.", "queue"),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "queue", Name: "scrape_errors_total",
			Help: "Reads of asynq queue statistics that failed or took too long, leaving queues out of a scrape.",
		}),
		asynq: newAsynqDescs(),
	}
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append([]*prometheus.Desc{c.tasks, c.latency, c.paused, c.processed, c.failed}, c.asynq.all()...) {
		ch <- d
	}
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector. It never fails: errors only
// increase forgeq_queue_scrape_errors_total.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, errs := c.read()
	for _, err := range errs {
		c.scrapeErrors.Inc()
		c.log.Warn("queue metrics", zap.Error(err))
	}
	for _, q := range infos {
		for _, s := range []struct {
			state string
			n     int
		}{
			{"pending", q.Pending}, {"active", q.Active}, {"scheduled", q.Scheduled},
			{"retry", q.Retry}, {"archived", q.Archived}, {"completed", q.Completed},
			{"aggregating", q.Aggregating},
		} {
			ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(s.n), q.Queue, s.state)
		}
		ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, q.Latency.Seconds(), q.Queue)
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, q.Queue)
		ch <- prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(q.ProcessedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(q.FailedTotal), q.Queue)
		c.asynq.collect(ch, q)
	}
	c.scrapeErrors.Collect(ch)
}

// queueRead is the result of one read of every queue.
type queueRead struct {
	infos []*asynq.QueueInfo
	errs  []error
}

// read returns the statistics of every queue it could read, and one error
// per failed read. It returns within c.timeout; a read still running then
// is abandoned to finish on its own, and no new read starts until it has.
func (c *queueCollector) read() ([]*asynq.QueueInfo, []error) {
	if !c.reading.CompareAndSwap(false, true) {
		return nil, []error{errors.New("queues: previous read still running")}
	}
	done := make(chan queueRead, 1) // never blocks the reader
	go func() {
		r := c.readAll()
		// Done before the result is handed over, so that a scrape right
		// after this one does not find the read still running.
		c.reading.Store(false)
		done <- r
	}()
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.infos, r.errs
	case <-timer.C:
		return nil, []error{fmt.Errorf("queues: read took more than %v", c.timeout)}
	}
}

// readAll asks the Inspector for every queue's statistics. Configured
// queues missing from Redis get zero statistics.
func (c *queueCollector) readAll() queueRead {
	var r queueRead
	names, err := c.insp.Queues()
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("list queues: %w", err))
		return r
	}
	for _, q := range names {
		info, err := c.insp.GetQueueInfo(q)
		if err != nil {
			r.errs = append(r.errs, fmt.Errorf("queue %q: %w", q, err))
			continue
		}
		r.infos = append(r.infos, info)
	}
	for _, q := range c.queues {
		if !slices.Contains(names, q) {
			r.infos = append(r.infos, &asynq.QueueInfo{Queue: q})
		}
	}
	return r
}
