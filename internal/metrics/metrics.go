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

// Options configures New. The zero value of each optional field means "use
// the default".
type Options struct {
	// Manager is the process's cache manager (required). Its Stats are
	// read on every scrape.
	Manager *cachemgr.Manager
	// Inspector, when set, adds the queue metrics, read on every scrape.
	// The caller keeps owning it.
	Inspector *asynq.Inspector
	// Namespace prefixes every forgeq metric name (default "forgeq"). It
	// must match [a-zA-Z_][a-zA-Z0-9_]*.
	Namespace string
	// QueueScrapeTimeout bounds how long one scrape waits for the queue
	// reads (default 2s). A slower read is left out of the scrape and
	// counted as a scrape error.
	QueueScrapeTimeout time.Duration
	// Logger receives scrape errors (default: none).
	Logger *zap.Logger
	// TaskTypes are the task types the process serves. Their task series
	// exist with zero values from the first scrape, so that rate() works
	// before the first task and dashboards have no gaps:
	// forgeq_tasks_in_progress for each type and, for each type and each
	// queue of Queues, forgeq_tasks_processed_total,
	// forgeq_task_duration_seconds and forgeq_tasks_failed_total for every
	// outcome. Types met at run time get their series when their first
	// task finishes, as without TaskTypes.
	TaskTypes []string
	// Queues are the queues the process serves. They label the task series
	// that TaskTypes pre-creates and, with an Inspector, the queue metrics
	// (forgeq_queue_* and asynq_*) report each of them, with zero values,
	// before its first task creates it in Redis.
	Queues []string
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

// New builds a Metrics and registers every collector on a new registry,
// with the zero series of o.TaskTypes and o.Queues. It returns an error
// when o.Manager is nil, when o.Namespace is not a valid metric name prefix,
// o.QueueScrapeTimeout is negative or o.TaskTypes or o.Queues holds an
// empty name, and when a collector cannot be registered.
func New(o Options) (*Metrics, error) {
	if err := o.init(); err != nil {
		return nil, err
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
	if o.Inspector != nil {
		cs = append(cs, newQueueCollector(o.Namespace, o.Inspector, o.QueueScrapeTimeout, o.Queues, o.Logger))
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
	})
	return x, nil
}

// Registry returns the registry holding every forgeq metric, for tests and
// for callers that add their own collectors.
func (x *Metrics) Registry() *prometheus.Registry { return x.reg }

// Handler returns the /metrics handler: the registry in the Prometheus text
// (or negotiated) format. A collector that fails leaves its metrics out of
// the response, is logged and is counted in
// promhttp_metric_handler_errors_total; it never fails the whole scrape
// unless nothing at all could be gathered, and it never panics.
func (x *Metrics) Handler() http.Handler { return x.handler }

// zapPrintln adapts a zap.Logger to promhttp.Logger.
type zapPrintln struct{ log *zap.Logger }

// Println logs v as one warning.
func (z zapPrintln) Println(v ...any) {
	z.log.Warn("metrics scrape error", zap.String("error", fmt.Sprint(v...)))
}
