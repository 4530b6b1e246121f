package web

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
	"github.com/forgeq/forgeq/workflow"
)

// The defaults New applies to zero Options fields.
const (
	DefaultAddr            = "127.0.0.1:8080"
	DefaultSessionTTL      = 12 * time.Hour
	DefaultMaxBodyBytes    = tasks.MaxPayloadSize + 16<<10 // the largest payload plus room for the envelope
	DefaultComputeWork     = 10_000                        // about 1ms of SHA-256
	DefaultShutdownTimeout = 5 * time.Second
	DefaultTaskRetention   = 24 * time.Hour
)

// DefaultLoginLimit is the default Options.LoginLimit: five attempts a
// minute per client address.
var DefaultLoginLimit = cachemgr.PerMinute(5)

// Limits of the request values the handlers accept.
const (
	// MaxKeyBytes is the longest cache key the cache-aside route accepts.
	MaxKeyBytes = 256
	// MaxComputeWork is the largest ?work= of the cache-aside route: about
	// 0.1s of one core per cold key.
	MaxComputeWork = 1_000_000
)

// Options configure a Server. The zero value of every field means "use the
// default"; Manager is the only required field.
type Options struct {
	// Addr is the host:port to listen on (HTTP_ADDR). Default
	// "127.0.0.1:8080". A host that is not loopback (":8080", "0.0.0.0",
	// a LAN address, any host name but "localhost") requires credentials.
	Addr string

	// Manager is the process's cache manager: cache-aside, rate limits,
	// sessions, Redis health, and (through Manager.Client) the dashboard.
	// Required.
	Manager *cachemgr.Manager
	// Registry lists the task types that may be enqueued. Default:
	// tasks.Default().
	Registry *tasks.Registry
	// Catalog is the task catalogue that running workers publish their
	// types to: POST /api/tasks/{type} validates and enqueues a type not
	// in Registry with its published schema and defaults, and GET
	// /api/task-types lists the published types too. Default:
	// tasks.NewCatalog(Manager.Client()).
	Catalog *tasks.Catalog
	// Client enqueues tasks (through a tasks.Client, which adds the
	// enqueue span, the trace context and the enqueued event). Default:
	// an asynq client on Manager.Client().
	Client *asynq.Client
	// Events, when set, receives the "enqueued" event of every task and
	// workflow step the web process enqueues (package events); the
	// worker passes its publisher. nil: no enqueued events.
	Events *events.Publisher
	// Workflows submits, reads and cancels workflows (the
	// /api/workflows routes and the /workflows page). Default: a
	// workflow.Client on Manager.Client() checking against Registry and
	// the task catalogue.
	Workflows *workflow.Client
	// Inspector reads task states. Default: an asynq inspector on
	// Manager.Client().
	Inspector *asynq.Inspector
	// Logger receives the access log and failures. Default: no logging.
	Logger *zap.Logger
	// Ready reports whether the worker is running (nil error when it is);
	// /health/ready fails while it returns an error. nil: not checked.
	Ready func() error

	// Routes are the program's own routes, served behind every layer the
	// built-in /api/ routes have: the access log, panic recovery,
	// Middleware (metrics), the body limit, cross-origin protection, the
	// API rate limit and, with credentials, authentication. A pattern that
	// conflicts with a built-in route or another one is an error of New.
	Routes []Route

	// Metrics, when not nil, is served at GET /metrics.
	Metrics http.Handler
	// OnDeduplicated, when not nil, is called for every POST
	// /api/tasks/{type} whose dedup key was held by a waiting task, with
	// the mode applied (the worker counts it in
	// forgeq_tasks_deduplicated_total).
	OnDeduplicated func(taskType, queue, mode string)
	// MetricsAuth makes GET /metrics need the credentials too (a session or
	// basic auth, as Prometheus's basic_auth sends). It needs
	// AuthUsername and AuthPassword. false: /metrics is open.
	MetricsAuth bool
	// Middleware, when not nil, wraps every request just inside the
	// outermost layer (request id, access log, panic recovery), so it sees
	// the final status of every response, panics included. The request it
	// passes on has its Pattern set by the router once its handler
	// returns ("" for unknown routes).
	Middleware func(http.Handler) http.Handler
	// Telemetry, when tracing is on, traces every request but the health
	// checks and /metrics in a server span, outermost, that continues an
	// incoming traceparent and is named after the route's pattern; the
	// access log then carries trace_id and span_id. nil (or off): no spans.
	Telemetry *telemetry.Provider

	// RateLimit limits the requests to /api/ per client: the session or
	// basic-auth user when there is one, else the remote IP address.
	// Zero: no limit.
	RateLimit cachemgr.Limit
	// LoginLimit limits password attempts (login and basic auth) per remote
	// IP address (HTTP_LOGIN_RATE_LIMIT). Default DefaultLoginLimit.
	LoginLimit cachemgr.Limit

	// AuthUsername and AuthPassword are the credentials of POST /login and
	// of HTTP basic auth (HTTP_AUTH_USERNAME, HTTP_AUTH_PASSWORD). Give
	// both or neither; with neither, nothing requires authentication, which
	// New allows only on a loopback Addr. Sessions are bound to them:
	// changing either ends every session made with the old ones.
	AuthUsername, AuthPassword string
	// SessionTTL is how long a session lives after its last use (sliding
	// expiry). Default 12h.
	SessionTTL time.Duration
	// CookieSecure sets the Secure flag on the session cookie: set it
	// whenever clients reach the server over HTTPS.
	CookieSecure bool

	// ReadOnlyDashboard makes the dashboard view-only: its API refuses
	// every method but GET and HEAD.
	ReadOnlyDashboard bool
	// DashboardPrometheusURL is the address of a Prometheus server that
	// scrapes this process, for the dashboard's charts. Empty: no charts.
	DashboardPrometheusURL string

	// MaxBodyBytes bounds request bodies; larger ones get 413. Default
	// DefaultMaxBodyBytes (tasks.MaxPayloadSize plus 16 KiB).
	MaxBodyBytes int64
	// ComputeWork is the work (SHA-256 rounds, see tasks.Digest) of a
	// cache-aside computation when the request gives no ?work=. Default
	// DefaultComputeWork.
	ComputeWork int
	// CacheTTL is how long cache-aside values stay cached. Default: the
	// manager's default TTL.
	CacheTTL time.Duration
	// TaskRetention is how long a task enqueued over HTTP stays readable
	// after it completes, unless its type or the request sets a retention.
	// Default 24h.
	TaskRetention time.Duration

	// DrainDelay is how long, once Run's ctx ends, the server keeps
	// listening while /health/ready fails and new requests get 503, so that
	// load balancers stop sending traffic before the listener closes.
	// Default 0.
	DrainDelay time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight requests
	// after the listener closes. Default 5s.
	ShutdownTimeout time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client of a request they pass on (rate limits, failed-login
	// limits, the access log). Empty: the client is the connection's peer
	// and X-Forwarded-For is ignored, as anyone can send it.
	TrustedProxies []netip.Prefix
}

// Route is one route of Options.Routes.
type Route struct {
	// Pattern is an http.ServeMux pattern, such as "GET /reports/{id}".
	Pattern string
	// Handler serves it.
	Handler http.Handler
}

// init fills in defaults and validates o. Errors wrap ErrInvalidOptions or
// ErrNoCredentials.
func (o *Options) init() error {
	if o.Manager == nil {
		return fmt.Errorf("%w: Manager is required", ErrInvalidOptions)
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	for i, p := range o.TrustedProxies {
		if !p.IsValid() {
			return fmt.Errorf("%w: TrustedProxies[%d] is not a valid prefix", ErrInvalidOptions, i)
		}
	}
	loopback, err := isLoopback(o.Addr)
	if err != nil {
		return fmt.Errorf("%w: HTTP_ADDR %q: %v", ErrInvalidOptions, o.Addr, err)
	}
	switch {
	case (o.AuthUsername == "") != (o.AuthPassword == ""):
		return fmt.Errorf("%w: set both HTTP_AUTH_USERNAME and HTTP_AUTH_PASSWORD, or neither", ErrInvalidOptions)
	case strings.Contains(o.AuthUsername, ":"):
		return fmt.Errorf("%w: HTTP_AUTH_USERNAME contains a colon, which basic auth cannot carry", ErrInvalidOptions)
	case o.MetricsAuth && o.AuthUsername == "":
		return fmt.Errorf("%w: HTTP_METRICS_AUTH needs HTTP_AUTH_USERNAME and HTTP_AUTH_PASSWORD", ErrInvalidOptions)
	case o.AuthUsername == "" && !loopback:
		return fmt.Errorf("%w: HTTP_ADDR %q is not a loopback address: set HTTP_AUTH_USERNAME and HTTP_AUTH_PASSWORD, "+
			"or listen on 127.0.0.1", ErrNoCredentials, o.Addr)
	}
	for i, r := range o.Routes {
		if r.Pattern == "" || r.Handler == nil {
			return fmt.Errorf("%w: Routes[%d] (%q) needs a pattern and a handler", ErrInvalidOptions, i, r.Pattern)
		}
	}
	if o.Registry == nil {
		o.Registry = tasks.Default()
	}
	if o.Catalog == nil {
		o.Catalog = tasks.NewCatalog(o.Manager.Client())
	}
	if o.Client == nil {
		o.Client = asynq.NewClientFromRedisClient(o.Manager.Client())
	}
	if o.Workflows == nil {
		o.Workflows = workflow.NewClient(o.Manager.Client(), workflow.Options{
			Types: workflow.CatalogTypes(o.Registry, o.Catalog), Cache: o.Manager, Logger: o.Logger,
			Events: o.Events,
		})
	}
	if o.Inspector == nil {
		o.Inspector = asynq.NewInspectorFromRedisClient(o.Manager.Client())
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.RateLimit != (cachemgr.Limit{}) {
		if err := checkLimit("RateLimit", o.RateLimit); err != nil {
			return err
		}
	}
	if o.LoginLimit == (cachemgr.Limit{}) {
		o.LoginLimit = DefaultLoginLimit
	} else if err := checkLimit("LoginLimit", o.LoginLimit); err != nil {
		return err
	}
	if err := defaultDuration("SessionTTL", &o.SessionTTL, DefaultSessionTTL, time.Second); err != nil {
		return err
	}
	if err := defaultDuration("TaskRetention", &o.TaskRetention, DefaultTaskRetention, time.Second); err != nil {
		return err
	}
	if err := defaultDuration("ShutdownTimeout", &o.ShutdownTimeout, DefaultShutdownTimeout, time.Millisecond); err != nil {
		return err
	}
	if o.DrainDelay < 0 {
		return fmt.Errorf("%w: DrainDelay %v is negative", ErrInvalidOptions, o.DrainDelay)
	}
	if o.CacheTTL < 0 && o.CacheTTL != cachemgr.NoExpiry {
		return fmt.Errorf("%w: CacheTTL %v is negative (cachemgr.NoExpiry for none)", ErrInvalidOptions, o.CacheTTL)
	}
	switch {
	case o.MaxBodyBytes == 0:
		o.MaxBodyBytes = DefaultMaxBodyBytes
	case o.MaxBodyBytes < 0:
		return fmt.Errorf("%w: MaxBodyBytes %d is negative", ErrInvalidOptions, o.MaxBodyBytes)
	}
	switch {
	case o.ComputeWork == 0:
		o.ComputeWork = DefaultComputeWork
	case o.ComputeWork < 0 || o.ComputeWork > MaxComputeWork:
		return fmt.Errorf("%w: ComputeWork %d is outside [1, %d]", ErrInvalidOptions, o.ComputeWork, MaxComputeWork)
	}
	return nil
}

// defaultDuration sets *d to def when it is zero and checks it is at least
// least.
func defaultDuration(name string, d *time.Duration, def, least time.Duration) error {
	switch {
	case *d == 0:
		*d = def
	case *d < least:
		return fmt.Errorf("%w: %s %v is below %v", ErrInvalidOptions, name, *d, least)
	}
	return nil
}

func checkLimit(name string, l cachemgr.Limit) error {
	if l.Rate <= 0 || l.Period <= 0 || l.Burst < 0 {
		return fmt.Errorf("%w: %s %+v: Rate and Period must be positive, Burst not negative", ErrInvalidOptions, name, l)
	}
	return nil
}

// isLoopback reports whether the host of addr (host:port) only ever
// reaches this machine: "localhost" or a loopback IP address. An empty
// host means every interface.
func isLoopback(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false, fmt.Errorf("port %q is not a number in [0, 65535]", port)
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false, nil // a host name: it may resolve anywhere
	}
	return ip.Unmap().IsLoopback(), nil
}
