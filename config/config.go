package config

import (
	"crypto/tls"
	"net/netip"
	"strconv"
	"time"

	"github.com/forgeq/forgeq/internal/redisurl"
)

// NoExpiry is the value of [Redis.DefaultTTL] when it is set to "none":
// cache writes that give no TTL never expire. It equals cachemgr.NoExpiry.
const NoExpiry time.Duration = -1

// Config is every setting of a forgeq process, checked by [Load]. A Config
// is a plain value and safe to read from many goroutines.
type Config struct {
	Redis  Redis
	Cache  Cache
	Worker Worker
	HTTP   HTTP
	Log    Log
}

// Redis configures the one Redis connection a process shares between the
// cache manager and asynq.
type Redis struct {
	// URL is the connection URL, in any form redisurl accepts. Empty means
	// the Redis at EmbeddedAddr ([Redis.LocalURL]): the worker uses the one
	// answering there, or starts an embedded one there.
	URL string
	// PoolSize is the connection pool size; 0 keeps go-redis's default of
	// 10 per CPU.
	PoolSize int
	// SocketTimeout bounds dialing, reading and writing.
	SocketTimeout time.Duration
	// DefaultTTL is the expiry of cache writes that give none, or
	// [NoExpiry].
	DefaultTTL time.Duration
	// KeyPrefix is the namespace of cache keys in Redis. It never overlaps
	// asynq's "asynq:".
	KeyPrefix string
	// Embedded is "auto", "true" or "false": whether the worker may start,
	// or must start, an embedded in-memory Redis.
	Embedded string
	// EmbeddedAddr is the host:port where the worker, when URL is empty,
	// looks for a local Redis and otherwise starts the embedded one, and
	// where the enqueue CLI then connects.
	EmbeddedAddr string
	// TLS holds the certificate files for a rediss:// URL.
	TLS TLS

	tlsConfig *tls.Config
}

// LocalURL returns the URL of the Redis at EmbeddedAddr
// ("redis://127.0.0.1:6379" by default): the Redis a process uses when URL
// is empty. The worker uses the Redis answering there or starts its
// embedded one there; the enqueue CLI connects there.
func (r Redis) LocalURL() string {
	return "redis://" + r.EmbeddedAddr
}

// Redacted returns URL with every password replaced by "xxxxx", for logs.
func (r Redis) Redacted() string {
	return redisurl.Redact(r.URL)
}

// TLSConfig returns the TLS configuration [Load] built from TLS, or nil when
// no TLS setting is given (a rediss:// URL then uses the system roots). The
// result is shared: clone it before changing it.
func (r Redis) TLSConfig() *tls.Config {
	return r.tlsConfig
}

// TLS names the files and options of a TLS connection to Redis. They apply
// only to a TLS URL (rediss://, rediss+sentinel://, rediss+cluster://).
type TLS struct {
	// CAFile is a PEM file of the CAs trusted to sign the server's
	// certificate. Set, it replaces the system roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and key for
	// mutual TLS. Give both or neither.
	CertFile string
	KeyFile  string
	// ServerName overrides the host name the server certificate is checked
	// against.
	ServerName string
	// InsecureSkipVerify turns off checking the server certificate. Use it
	// only for tests.
	InsecureSkipVerify bool
}

// Cache configures the cache manager beyond its Redis connection.
type Cache struct {
	// AsyncMaxInFlight bounds the asynchronous cache operations running at
	// once; callers beyond it wait.
	AsyncMaxInFlight int
	// LockTTL is the expiry of the lock that lets one process compute a
	// missing value while the others wait for it.
	LockTTL time.Duration
	// NearSize is how many entries the near cache holds, the in-process
	// tier for hot keys that Redis invalidates; 0 turns it off (the
	// default).
	NearSize int
	// NearMaxBytes bounds the near cache's memory; 0 means the cache
	// manager's default (64 MiB).
	NearMaxBytes int
	// NearTTL is the longest life of a near cache entry (default 1m); an
	// entry never outlives its key's Redis TTL either.
	NearTTL time.Duration
}

// The values of Worker.Pickup (WORKER_PICKUP).
const (
	// PickupEvents makes an idle worker wait in Redis for a task to be
	// pushed, and fetch over all its queues in one round trip.
	PickupEvents = "events"
	// PickupPoll leaves fetching to asynq: one round trip per queue tried,
	// and polling every TaskCheckInterval when idle.
	PickupPoll = "poll"
)

// Worker configures the asynq server.
type Worker struct {
	// Concurrency is how many tasks run at once; 0 means one per CPU.
	Concurrency int
	// Queues maps each queue to its priority weight.
	Queues map[string]int
	// StrictPriority drains higher-weight queues completely before lower
	// ones.
	StrictPriority bool
	// ShutdownTimeout is how long running tasks may finish after SIGTERM
	// before they are put back on their queue.
	ShutdownTimeout time.Duration
	// MaxRetry is the number of retries of a failing scheduled task whose
	// type sets none. asynq stores the number in each task when it is
	// enqueued, so it applies only to the tasks the worker's scheduler
	// enqueues; a type's own default and an enqueue's option win.
	MaxRetry int
	// RetryDelayMin is the delay before a failed task's first retry; each
	// further retry waits twice as long as the one before, plus jitter, up
	// to RetryDelayMax. [Load] keeps it at least a second and at most
	// RetryDelayMax.
	RetryDelayMin time.Duration
	// RetryDelayMax is the longest delay before a retry.
	RetryDelayMax time.Duration
	// Pickup is how an idle worker learns of new tasks: PickupEvents or
	// PickupPoll.
	Pickup string
	// TaskCheckInterval is, with PickupPoll, how long the worker waits
	// before looking at its queues again when they were all empty: the
	// worst-case pickup latency of an idle worker, traded against polling
	// Redis when idle. With PickupEvents it is only the pause after a wait
	// that ended without a task.
	TaskCheckInterval time.Duration
	// Events turns on the task events (package events): the worker
	// publishes each task's started, progress, failed, retried,
	// succeeded, archived and cancelled events, and the enqueued event of
	// what it enqueues, to a capped Redis Stream per queue.
	Events bool
	// EventsMaxLen is the length each queue's event stream is trimmed to
	// (approximately); at least 100.
	EventsMaxLen int
	// Schedule lists the periodic tasks the worker enqueues. Every replica
	// may run the same schedule; each tick is enqueued once.
	Schedule []ScheduleEntry
}

// HTTP configures the embedded web process.
type HTTP struct {
	// Addr is the host:port to listen on; empty turns the web process off.
	Addr string
	// AuthUsername and AuthPassword are the credentials of the login page
	// and of HTTP basic auth. [Load] makes sure both or neither are set,
	// and never shows the password in an error.
	AuthUsername string
	AuthPassword string
	// RateLimit limits the API requests of each client; its zero value
	// means no limit.
	RateLimit RateLimit
	// LoginRateLimit limits the password attempts (login and basic auth) of
	// each client IP address; it is never the zero RateLimit.
	LoginRateLimit RateLimit
	// SessionTTL is how long a login session lives after its last use.
	SessionTTL time.Duration
	// CookieSecure sets the Secure flag on the session cookie, so browsers
	// send it only over HTTPS or to a loopback host (http://localhost,
	// http://127.0.0.1), which they treat as secure.
	CookieSecure bool
	// DashboardReadOnly makes the dashboard view-only.
	DashboardReadOnly bool
	// MetricsAuth makes /metrics need the credentials too; [Load] allows
	// it only with AuthUsername and AuthPassword.
	MetricsAuth bool
	// DashboardPrometheusURL is the base URL of a Prometheus server that
	// scrapes the worker, for the dashboard's charts; empty: no charts.
	DashboardPrometheusURL string
	// TaskRetention is how long a task enqueued over HTTP stays readable
	// after it completes, unless its type or the request sets another.
	TaskRetention time.Duration
	// ShutdownTimeout bounds how long in-flight requests may finish once
	// the web process stops listening.
	ShutdownTimeout time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For the web
	// process believes when it names a client (rate limits, logs); empty:
	// the client is the connection's peer.
	TrustedProxies []netip.Prefix
}

// RateLimit is a rate limit of Rate requests per Period, with bursts of up
// to Rate requests. The zero RateLimit means no limit.
type RateLimit struct {
	Rate   int
	Period time.Duration
}

// String returns the limit as it is written in the environment: "100/1s",
// or "off" for the zero RateLimit.
func (l RateLimit) String() string {
	if l == (RateLimit{}) {
		return "off"
	}
	return strconv.Itoa(l.Rate) + "/" + l.Period.String()
}

// Log configures the logger main builds.
type Log struct {
	// Level is "debug", "info", "warn" or "error".
	Level string
	// Format is "auto" (console on a terminal, JSON otherwise), "console" or
	// "json".
	Format string
}
