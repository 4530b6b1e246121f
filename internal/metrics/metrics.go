package metrics

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
)

// DefaultNamespace is the prefix of every forgeq metric name when
// Options.Namespace is empty.
const DefaultNamespace = "forgeq"

// DefaultQueueScrapeTimeout bounds the queue collector's reads when
// Options.QueueScrapeTimeout is zero.
const DefaultQueueScrapeTimeout = 2 * time.Second

// DefaultQueueScrapeInterval is the least time between the starts of two
// queue reads when Options.QueueScrapeInterval is zero: scrapes in between
// serve the last read.
const DefaultQueueScrapeInterval = 5 * time.Second

// QueueWarnInterval is the least time between two warnings of the queue
// collector about failing or slow reads; the reads in between are counted
// in forgeq_queue_scrape_errors_total and summed up in the next warning.
const QueueWarnInterval = time.Minute

// Options configures New. The zero value of each optional field means "use
// the default".
type Options struct {
	// Manager is the process's cache manager (required). Its Stats are
	// read on every scrape.
	Manager *cachemgr.Manager
	// Inspector, when set, adds the queue metrics, read by scrapes at
	// most once per QueueScrapeInterval, one read at a time (see the
	// package doc). The caller keeps owning it.
	Inspector *asynq.Inspector
	// Namespace prefixes every forgeq metric name (default "forgeq"). It
	// must match [a-zA-Z_][a-zA-Z0-9_]*.
	Namespace string
	// QueueScrapeTimeout bounds how long a scrape waits for the queue read
	// it started (default 2s). A slower read is counted as a scrape error
	// once and goes on: the scrape serves the last completed read, and
	// the slow read's result is served once it completes.
	QueueScrapeTimeout time.Duration
	// QueueScrapeInterval is the least time between the starts of two
	// queue reads (default 5s, DefaultQueueScrapeInterval). Scrapes in
	// between serve the last completed read, stamped with its age in
	// forgeq_queue_scrape_age_seconds, so that the cost of the reads in
	// Redis does not grow with the number of scrapers.
	QueueScrapeInterval time.Duration
	// Logger receives scrape errors (default: none).
	Logger *zap.Logger
	// TaskTypes are the task types the process serves. Their task series
	// exist with zero values from the first scrape, so that rate() works
	// before the first task and dashboards have no gaps:
	// forgeq_tasks_in_progress for each type and, for each type and each
	// queue of Queues, forgeq_tasks_processed_total,
	// forgeq_task_duration_seconds, forgeq_tasks_failed_total for every
	// outcome and forgeq_tasks_postponed_total for every reason of
	// tasks.LimitReasons. Types met at run time get their series when their first
	// task finishes, as without TaskTypes.
	TaskTypes []string
	// Queues are the queues the process serves. They label the task series
	// that TaskTypes pre-creates and, with an Inspector, the queue metrics
	// (forgeq_queue_* and asynq_*) report each of them, with zero values,
	// before its first task creates it in Redis.
	Queues []string
	// EventsDropped, when set, is read on every scrape as
	// forgeq_events_dropped_total: the task events the process's
	// publisher dropped (events.Publisher.Dropped).
	EventsDropped func() uint64
}

var namespaceRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// init checks o and fills in the defaults.
func (o *Options) init() error {
	if o.Manager == nil {
		return fmt.Errorf("metrics: Options.Manager is nil")
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if !namespaceRE.MatchString(o.Namespace) {
		return fmt.Errorf("metrics: namespace %q is not a valid metric name prefix", o.Namespace)
	}
	if o.QueueScrapeTimeout < 0 {
		return fmt.Errorf("metrics: negative QueueScrapeTimeout %v", o.QueueScrapeTimeout)
	}
	if o.QueueScrapeTimeout == 0 {
		o.QueueScrapeTimeout = DefaultQueueScrapeTimeout
	}
	if o.QueueScrapeInterval < 0 {
		return fmt.Errorf("metrics: negative QueueScrapeInterval %v", o.QueueScrapeInterval)
	}
	if o.QueueScrapeInterval == 0 {
		o.QueueScrapeInterval = DefaultQueueScrapeInterval
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	var err error
	if o.TaskTypes, err = labelValues("TaskTypes", o.TaskTypes); err != nil {
		return err
	}
	if o.Queues, err = labelValues("Queues", o.Queues); err != nil {
		return err
	}
	return nil
}

// labelValues returns a sorted copy of vs without repeats, for the options
// named field; an empty value is an error.
func labelValues(field string, vs []string) ([]string, error) {
	out := slices.Clone(vs)
	for i, v := range out {
		if v == "" {
			return nil, fmt.Errorf("metrics: Options.%s[%d] is empty", field, i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Metrics owns a prometheus.Registry with everything forgeq exports: the
// cache and queue collectors, the task and HTTP instruments, and the Go and
// process collectors. Build one per process with New. A Metrics is safe for
// concurrent use.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	tasks   *taskMetrics
	http    *httpMetrics
}

// Option sets a rarely changed collaborator of New.
type Option interface {
	apply(*options)
}

// options are what Option sets.
type options struct {
	now func() time.Time
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock makes the queue collector read the time from now instead of
// time.Now: for the spacing of its reads (Options.QueueScrapeInterval),
// the age and duration of a read and the spacing of its warnings
// (QueueWarnInterval). How long a scrape waits for a read
// (Options.QueueScrapeTimeout) is always real time. It is meant for
// tests; now must be safe for concurrent use.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}

// New builds a Metrics and registers every collector on a new registry,
// with the zero series of o.TaskTypes and o.Queues. It returns an error
// when o.Manager is nil, when o.Namespace is not a valid metric name prefix,
// o.QueueScrapeTimeout or o.QueueScrapeInterval is negative or o.TaskTypes
// or o.Queues holds an empty name, and when a collector cannot be
// registered.
func New(o Options, opts ...Option) (*Metrics, error) {
	if err := o.init(); err != nil {
		return nil, err
	}
	oo := options{now: time.Now}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("metrics: nil Option")
		}
		opt.apply(&oo)
	}
	if oo.now == nil {
		return nil, fmt.Errorf("metrics: WithClock(nil)")
	}
	x := &Metrics{
		reg:   prometheus.NewRegistry(),
		tasks: newTaskMetrics(o.Namespace),
		http:  newHTTPMetrics(o.Namespace),
	}
	x.tasks.precreate(o.TaskTypes, o.Queues)
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newCacheCollector(o.Namespace, o.Manager),
		x.tasks,
		x.http,
	}
	if o.EventsDropped != nil {
		cs = append(cs, newEventsDropped(o.Namespace, o.EventsDropped))
	}
	if o.Inspector != nil {
		cs = append(cs, newQueueCollector(o.Namespace, o.Inspector, queueReads{
			timeout: o.QueueScrapeTimeout, interval: o.QueueScrapeInterval, now: oo.now,
		}, o.Queues, o.Logger))
	}
	for _, c := range cs {
		if err := x.reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	x.handler = promhttp.HandlerFor(x.reg, promhttp.HandlerOpts{
		ErrorLog:      zapPrintln{o.Logger},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      x.reg, // adds promhttp_metric_handler_errors_total
		// A scraper that asks for OpenMetrics (Prometheus does) gets the
		// histograms' exemplars: the trace ids of sampled tasks and
		// requests (exemplar.go).
		EnableOpenMetrics: true,
	})
	return x, nil
}

// Registry returns the registry holding every forgeq metric, for tests and
// for callers that add their own collectors.
func (x *Metrics) Registry() *prometheus.Registry { return x.reg }

// Handler returns the /metrics handler: the registry in the Prometheus text
// format, or in OpenMetrics (with exemplars) when the scraper asks for it.
// A collector that fails leaves its metrics out of the response, is logged
// and is counted in promhttp_metric_handler_errors_total; it never fails
// the whole scrape unless nothing at all could be gathered, and it never
// panics.
func (x *Metrics) Handler() http.Handler { return x.handler }

// zapPrintln adapts a zap.Logger to promhttp.Logger.
type zapPrintln struct{ log *zap.Logger }

// Println logs v as one warning.
func (z zapPrintln) Println(v ...any) {
	z.log.Warn("metrics scrape error", zap.String("error", fmt.Sprint(v...)))
}
