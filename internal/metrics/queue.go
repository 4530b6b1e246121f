package metrics

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// queueCollector reads asynq's queue statistics through an Inspector and
// serves the last completed read, so that a scrape never waits long and
// never drops the queue series because another scrape is reading:
//
//   - at most one read runs at a time, and a read starts at most once per
//     reads.interval, started by the scrape that finds none running and the
//     last one started long enough ago;
//   - that scrape waits for its read at most reads.timeout; every other
//     scrape serves the last good read at once (or, before the first good
//     read, waits for the running one, up to the same timeout);
//   - a read is good when it lists every queue and reads each without an
//     error. A read with an error, or slower than the timeout, counts in
//     scrapeErrors; what is served then stays the last good read, whose
//     age forgeq_queue_scrape_age_seconds keeps growing, so that alerts can
//     key on it. Before the first good read no queue is served and the age
//     is +Inf;
//   - the cause (the error, or the slowness) is logged at most once per
//     QueueWarnInterval.
//
// Each read is exported twice: as forgeq_queue_* (under the namespace) and
// as the asynq_* families of asynq's own exporter (github.com/hibiken/asynq/x
// metrics), whose names and labels the asynqmon dashboard's charts query.
//
// A read that lists the queues also reports each of the configured queues
// that Redis does not know yet (asynq creates a queue with its first
// task), with zero values, so that their series exist from the start.
type queueCollector struct {
	insp   *asynq.Inspector
	reads  queueReads
	queues []string // configured queues, reported even before they exist
	log    *zap.Logger

	tasks, latency, paused *prometheus.Desc
	processed, failed      *prometheus.Desc
	age, duration          *prometheus.Desc
	scrapeErrors           prometheus.Counter

	asynq asynqDescs

	mu         sync.Mutex
	good       *queueSnapshot // the last good read; nil before the first
	running    *queueRun      // the read in flight; nil when none
	lastStart  time.Time      // when the last read started; zero before the first
	failing    bool           // the last read that finished was not good
	warnedAt   time.Time      // the last warning; zero before the first
	suppressed int            // problems not logged since warnedAt
}

// queueReads are the queue collector's timing settings.
type queueReads struct {
	timeout  time.Duration    // how long the starting scrape waits
	interval time.Duration    // least time between the starts of two reads
	now      func() time.Time // the clock of interval, ages and warnings
}

// queueSnapshot is a good read.
type queueSnapshot struct {
	infos []*asynq.QueueInfo
	at    time.Time     // when the read finished
	took  time.Duration // how long it took
}

// queueRun is a read in flight.
type queueRun struct {
	done chan struct{} // closed when the read has finished and been recorded
	slow bool          // a scrape gave up waiting for it (guarded by mu)
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

func newQueueCollector(ns string, insp *asynq.Inspector, reads queueReads, queues []string, log *zap.Logger) *queueCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "queue", name), help, labels, nil)
	}
	return &queueCollector{
		insp:      insp,
		reads:     reads,
		queues:    queues,
		log:       log,
		tasks:     desc("tasks", "Tasks in an asynq queue, by state.", "queue", "state"),
		latency:   desc("latency_seconds", "Age of the oldest pending task of an asynq queue.", "queue"),
		paused:    desc("paused", "Whether an asynq queue is paused (1) or not (0).", "queue"),
		processed: desc("processed_total", "Tasks processed from an asynq queue by all workers, succeeded or failed.", "queue"),
		failed:    desc("failed_total", "Tasks of an asynq queue that failed in any worker.", "queue"),
		age: desc("scrape_age_seconds",
			"Time since the queue read served in this scrape finished; +Inf before the first good read. It grows while reads fail."),
		duration: desc("scrape_duration_seconds", "How long the queue read served in this scrape took."),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "queue", Name: "scrape_errors_total",
			Help: "Errors of asynq queue reads, and reads slower than the scrape timeout; the last good read is served meanwhile.",
		}),
		asynq: newAsynqDescs(),
	}
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append([]*prometheus.Desc{c.tasks, c.latency, c.paused, c.processed, c.failed, c.age, c.duration}, c.asynq.all()...) {
		ch <- d
	}
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector. It never fails: errors only
// increase forgeq_queue_scrape_errors_total.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.snapshot()
	age := math.Inf(1)
	var infos []*asynq.QueueInfo
	if snap != nil {
		age = max(0, c.reads.now().Sub(snap.at).Seconds())
		infos = snap.infos
		ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, snap.took.Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age)
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

// snapshot returns the read to serve: the last good one, after starting a
// new read when none runs and the last one started at least
// reads.interval ago, and waiting up to reads.timeout for the read this
// call started, or for the running read when there is no good one yet. It
// returns nil before the first good read.
func (c *queueCollector) snapshot() *queueSnapshot {
	c.mu.Lock()
	run, started := c.running, false
	if now := c.reads.now(); run == nil && (c.lastStart.IsZero() || now.Sub(c.lastStart) >= c.reads.interval) {
		run, started = c.start(now), true
	}
	wait := run != nil && (started || c.good == nil)
	c.mu.Unlock()

	if wait {
		timer := time.NewTimer(c.reads.timeout)
		defer timer.Stop()
		select {
		case <-run.done:
		case <-timer.C:
			c.mu.Lock()
			if !run.slow { // one error per slow read, however many scrapes wait
				run.slow = true
				c.scrapeErrors.Inc()
				c.problem(c.reads.now(), fmt.Errorf("queues: read took more than %v", c.reads.timeout), 1)
			}
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.good
}

// start starts a read at now and records it as running. c.mu is held.
func (c *queueCollector) start(now time.Time) *queueRun {
	run := &queueRun{done: make(chan struct{})}
	c.running, c.lastStart = run, now
	go func() {
		r := c.readAll()
		end := c.reads.now()
		c.mu.Lock()
		c.running = nil
		for range r.errs {
			c.scrapeErrors.Inc()
		}
		if len(r.errs) == 0 {
			c.good = &queueSnapshot{infos: r.infos, at: end, took: end.Sub(now)}
			if c.failing {
				c.failing = false
				c.log.Info("queue metrics: reads work again", zap.Duration("took", end.Sub(now)))
			}
		} else {
			c.failing = true
			c.problem(end, r.errs[0], len(r.errs))
		}
		c.mu.Unlock()
		close(run.done)
	}()
	return run
}

// problem logs err, the first of n errors of a read, unless the last
// warning was less than QueueWarnInterval ago; then it only counts them
// for the next warning. c.mu is held.
func (c *queueCollector) problem(now time.Time, err error, n int) {
	if !c.warnedAt.IsZero() && now.Sub(c.warnedAt) < QueueWarnInterval {
		c.suppressed += n
		return
	}
	served := "none: no read has been good yet"
	if c.good != nil {
		served = fmt.Sprintf("the last good read, %v old", now.Sub(c.good.at).Round(time.Millisecond))
	}
	c.log.Warn("queue metrics: read failing or slow",
		zap.Error(err),
		zap.Int("errors", n),
		zap.Int("errors_since_last_warning", c.suppressed),
		zap.String("serving", served),
		zap.Duration("warn_interval", QueueWarnInterval))
	c.warnedAt, c.suppressed = now, 0
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
