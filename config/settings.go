package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/internal/redisurl"
)

// Setting describes one setting in each of the places it can be given.
type Setting struct {
	// Key is the dotted key in a config file, such as "redis.pool_size".
	Key string
	// Env is the environment variable, such as "REDIS_POOL_SIZE".
	Env string
	// Flag is the command-line flag as typed, such as "--redis-pool-size".
	Flag string
	// Default is the built-in value as it would be written in the
	// environment; empty means unset.
	Default string
	// Help is a one-sentence description.
	Help string
	// Secret marks a setting, such as a password, whose value is never
	// shown: not in errors, not as a default in --help.
	Secret bool
}

// Names of the config-file selectors, which are not settings themselves.
const (
	configFlag = "config"
	configEnv  = "FORGEQ_CONFIG"
)

// spec is a Setting plus how to read it into a Config.
type spec struct {
	Setting
	// kind is the value type --help shows: string, int, bool, duration or
	// queues.
	kind string
	// apply parses v, a string from the environment or a flag, or any
	// value a config file holds, and stores it in c. Its error names the
	// value but not where it came from.
	apply func(c *Config, v any) error
}

// MaxConcurrency is the largest WORKER_CONCURRENCY. Every running task is
// a goroutine with its own Redis traffic on a pool of at most
// redisurl.MaxPoolSize connections: a larger value is a typo (an extra
// zero or three), not a plan, and would only exhaust the process.
const MaxConcurrency = 10000

// specs is the table of every setting, in the order of Config's fields.
var specs = withFlags([]spec{
	{
		Setting: Setting{Key: "redis.url", Env: "REDIS_CONNECTION_URL",
			Help: "Redis URL (redis://, rediss://, unix://, redis+sentinel://, redis+cluster://); empty: the Redis at REDIS_EMBEDDED_ADDR if one answers, else an embedded one there (the worker)"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.URL }, checkURL),
	},
	{
		Setting: Setting{Key: "redis.pool_size", Env: "REDIS_POOL_SIZE", Default: "0",
			Help: "Redis connection pool size; 0 keeps go-redis's default of 10 per CPU"},
		kind: "int",
		apply: boundedIntValue(func(c *Config) *int { return &c.Redis.PoolSize }, 0, redisurl.MaxPoolSize,
			fmt.Sprintf("want 0 (the go-redis default) to %d", redisurl.MaxPoolSize)),
	},
	{
		Setting: Setting{Key: "redis.socket_timeout", Env: "REDIS_SOCKET_TIMEOUT", Default: "10s",
			Help: "Timeout for dialing, reading and writing Redis, and for each call to it, as a duration or seconds"},
		kind:  "duration",
		apply: durationValue(func(c *Config) *time.Duration { return &c.Redis.SocketTimeout }, false),
	},
	{
		Setting: Setting{Key: "redis.default_ttl", Env: "REDIS_DEFAULT_TTL", Default: "1h",
			Help: "Expiry of cache writes that give none, as a duration or seconds; none: never expire"},
		kind:  "duration",
		apply: durationValue(func(c *Config) *time.Duration { return &c.Redis.DefaultTTL }, true),
	},
	{
		Setting: Setting{Key: "redis.key_prefix", Env: "REDIS_KEY_PREFIX", Default: "cache:",
			Help: "Prefix of every cache key in Redis; must not overlap asynq's own keys (asynq:)"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.KeyPrefix }, checkKeyPrefix),
	},
	{
		Setting: Setting{Key: "redis.embedded", Env: "REDIS_EMBEDDED", Default: "auto",
			Help: "Embedded in-memory Redis (redis-server as a child process when it is on PATH, else miniredis): auto (only when no URL is set and nothing answers at the embedded address), true or false"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.Embedded }, checkEmbedded),
	},
	{
		Setting: Setting{Key: "redis.embedded_addr", Env: "REDIS_EMBEDDED_ADDR", Default: "127.0.0.1:6379",
			Help: "host:port where the worker, with no Redis URL set, looks for a local Redis and otherwise starts the embedded one; enqueue connects there too"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.EmbeddedAddr }, checkHostPort),
	},
	{
		Setting: Setting{Key: "redis.tls.ca_file", Env: "REDIS_TLS_CA_FILE",
			Help: "PEM file of the CAs that sign the Redis server's certificate, replacing the system roots (rediss:// only)"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.TLS.CAFile }, nil),
	},
	{
		Setting: Setting{Key: "redis.tls.cert_file", Env: "REDIS_TLS_CERT_FILE",
			Help: "PEM client certificate for mutual TLS, with the key file (rediss:// only)"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.TLS.CertFile }, nil),
	},
	{
		Setting: Setting{Key: "redis.tls.key_file", Env: "REDIS_TLS_KEY_FILE",
			Help: "PEM client key for mutual TLS, with the certificate file (rediss:// only)"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.TLS.KeyFile }, nil),
	},
	{
		Setting: Setting{Key: "redis.tls.server_name", Env: "REDIS_TLS_SERVER_NAME",
			Help: "Host name to check the Redis server's certificate against, if not the URL's (rediss:// only)"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Redis.TLS.ServerName }, nil),
	},
	{
		Setting: Setting{Key: "redis.tls.insecure_skip_verify", Env: "REDIS_TLS_INSECURE_SKIP_VERIFY", Default: "false",
			Help: "Skip checking the Redis server's certificate; for tests only (rediss:// only)"},
		kind:  "bool",
		apply: boolValue(func(c *Config) *bool { return &c.Redis.TLS.InsecureSkipVerify }),
	},
	{
		Setting: Setting{Key: "cache.async_max_in_flight", Env: "CACHE_ASYNC_MAX_IN_FLIGHT", Default: "10000",
			Help: "Most asynchronous cache operations running at once; callers beyond it wait"},
		kind:  "int",
		apply: intValue(func(c *Config) *int { return &c.Cache.AsyncMaxInFlight }, 1, "want 1 or more"),
	},
	{
		Setting: Setting{Key: "cache.lock_ttl", Env: "CACHE_LOCK_TTL", Default: "10s",
			Help: "Expiry of the lock that lets one process compute a missing cache value while others wait"},
		kind:  "duration",
		apply: durationValue(func(c *Config) *time.Duration { return &c.Cache.LockTTL }, false),
	},
	{
		Setting: Setting{Key: "cache.near_size", Env: "CACHE_NEAR_SIZE", Default: "0",
			Help: "Entries of the near cache, an in-process tier for hot keys that Redis invalidates (client tracking); 0: off"},
		kind:  "int",
		apply: intValue(func(c *Config) *int { return &c.Cache.NearSize }, 0, "want 0 (off) or more"),
	},
	{
		Setting: Setting{Key: "cache.near_max_bytes", Env: "CACHE_NEAR_MAX_BYTES", Default: "0",
			Help: "Memory bound of the near cache in bytes (key + value + 64 per entry); 0: 64 MiB"},
		kind:  "int",
		apply: intValue(func(c *Config) *int { return &c.Cache.NearMaxBytes }, 0, "want 0 (64 MiB) or more"),
	},
	{
		Setting: Setting{Key: "cache.near_ttl", Env: "CACHE_NEAR_TTL", Default: "1m",
			Help: "Longest life of a near cache entry; never past the key's Redis TTL"},
		kind:  "duration",
		apply: durationValue(func(c *Config) *time.Duration { return &c.Cache.NearTTL }, false),
	},
	{
		Setting: Setting{Key: "worker.concurrency", Env: "WORKER_CONCURRENCY", Default: "0",
			Help: "Tasks the worker runs at once, up to 10000; 0: one per CPU"},
		kind: "int",
		apply: boundedIntValue(func(c *Config) *int { return &c.Worker.Concurrency }, 0, MaxConcurrency,
			fmt.Sprintf("want 0 (one per CPU) to %d", MaxConcurrency)),
	},
	{
		Setting: Setting{Key: "worker.queues", Env: "WORKER_QUEUES", Default: "critical=6,default=3,low=1",
			Help: "Queues the worker serves with their priority weights, as name=weight,name=weight"},
		kind:  "queues",
		apply: queuesValue(func(c *Config) *map[string]int { return &c.Worker.Queues }),
	},
	{
		Setting: Setting{Key: "worker.strict_priority", Env: "WORKER_STRICT_PRIORITY", Default: "false",
			Help: "Empty higher-weight queues completely before serving lower ones"},
		kind:  "bool",
		apply: boolValue(func(c *Config) *bool { return &c.Worker.StrictPriority }),
	},
	{
		Setting: Setting{Key: "worker.shutdown_timeout", Env: "WORKER_SHUTDOWN_TIMEOUT", Default: "8s",
			Help: "How long running tasks may finish after SIGTERM before they go back to their queue; keep it below the container's stop grace period"},
		kind:  "duration",
		apply: durationValue(func(c *Config) *time.Duration { return &c.Worker.ShutdownTimeout }, false),
	},
	{
		Setting: Setting{Key: "worker.max_retry", Env: "WORKER_MAX_RETRY", Default: "25",
			Help: "Retries of a failing scheduled task (WORKER_SCHEDULE) whose type sets none; a type's own default and an enqueue's max retry win"},
		kind:  "int",
		apply: intValue(func(c *Config) *int { return &c.Worker.MaxRetry }, 0, "want 0 or more"),
	},
	{
		Setting: Setting{Key: keyRetryDelayMin, Env: "WORKER_RETRY_DELAY_MIN", Default: "10s",
			Help: "Delay before a failed task's first retry, doubling for each further retry, plus up to 50% random jitter; at least 1s (asynq's resolution)"},
		kind:  "duration",
		apply: durationAtLeast(func(c *Config) *time.Duration { return &c.Worker.RetryDelayMin }, time.Second),
	},
	{
		Setting: Setting{Key: keyRetryDelayMax, Env: "WORKER_RETRY_DELAY_MAX", Default: "1h",
			Help: "Longest delay before a retry, jitter included; at least WORKER_RETRY_DELAY_MIN"},
		kind:  "duration",
		apply: durationAtLeast(func(c *Config) *time.Duration { return &c.Worker.RetryDelayMax }, time.Second),
	},
	{
		Setting: Setting{Key: "worker.pickup", Env: "WORKER_PICKUP", Default: "events",
			Help: "How an idle worker learns of new tasks: events (waits in Redis for a push, one dequeue round trip for all queues; Redis 6.2 or later) or poll (asynq's own polling every WORKER_TASK_CHECK_INTERVAL)"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Worker.Pickup }, oneOf(PickupEvents, PickupPoll)),
	},
	{
		Setting: Setting{Key: "worker.task_check_interval", Env: "WORKER_TASK_CHECK_INTERVAL", Default: "10ms",
			Help: "With WORKER_PICKUP=poll, how long an idle worker waits before polling its empty queues again (its pickup latency, against Redis load when idle); with events, the pause before it looks again after a wait ends with no task"},
		kind:  "duration",
		apply: durationValue(func(c *Config) *time.Duration { return &c.Worker.TaskCheckInterval }, false),
	},
	{
		Setting: Setting{Key: "worker.events", Env: "WORKER_EVENTS", Default: "true",
			Help: "Publish each task's lifecycle events (enqueued, started, progress, retried, succeeded, failed, archived, cancelled) to a capped Redis Stream per queue, for WaitResult, the web's event stream and enqueue --wait; false: none"},
		kind:  "bool",
		apply: boolValue(func(c *Config) *bool { return &c.Worker.Events }),
	},
	{
		Setting: Setting{Key: "worker.events_max_len", Env: "WORKER_EVENTS_MAX_LEN", Default: "10000",
			Help: "Entries each queue's event stream keeps (approximately: trimmed with XADD MAXLEN ~); its memory is about this times an entry's size; at least 100"},
		kind:  "int",
		apply: intValue(func(c *Config) *int { return &c.Worker.EventsMaxLen }, 100, "want 100 or more"),
	},
	{
		Setting: Setting{Key: keySchedule, Env: "WORKER_SCHEDULE",
			Help: `Periodic tasks, as a JSON list of {"name", "spec" ("@every 30s" or cron "*/5 * * * *", UTC unless CRON_TZ=), "type", "payload", "queue"}; in a file, a list of maps`},
		kind:  "json",
		apply: scheduleValue(func(c *Config) *[]ScheduleEntry { return &c.Worker.Schedule }),
	},
	{
		Setting: Setting{Key: "http.addr", Env: "HTTP_ADDR", Default: "127.0.0.1:8080",
			Help: "Address of the web process (health, metrics, API, dashboard) as host:port; empty or off: no web process"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.HTTP.Addr }, checkAddr),
	},
	{
		Setting: Setting{Key: keyAuthUsername, Env: "HTTP_AUTH_USERNAME",
			Help: "Username of the web process's login and basic auth, with the password; required when HTTP_ADDR is not a loopback address"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.HTTP.AuthUsername }, checkUsername),
	},
	{
		Setting: Setting{Key: keyAuthPassword, Env: "HTTP_AUTH_PASSWORD", Secret: true,
			Help: "Password of the web process's login and basic auth, with the username; never shown (prefer the environment or the config file: flags show in ps)"},
		kind:  "string",
		apply: secretValue(func(c *Config) *string { return &c.HTTP.AuthPassword }),
	},
	{
		Setting: Setting{Key: "http.rate_limit", Env: "HTTP_RATE_LIMIT", Default: "100/1s",
			Help: `API requests allowed per client (user, else IP address) as requests/period ("100/1s", "600/1m", bursts up to requests); off or 0: no limit`},
		kind:  "rate",
		apply: rateValue(func(c *Config) *RateLimit { return &c.HTTP.RateLimit }, true),
	},
	{
		Setting: Setting{Key: "http.login_rate_limit", Env: "HTTP_LOGIN_RATE_LIMIT", Default: "5/1m",
			Help: `Password attempts (login and basic auth) allowed per client IP address as requests/period ("5/1m", "20/1h", bursts up to requests); cannot be off`},
		kind:  "rate",
		apply: rateValue(func(c *Config) *RateLimit { return &c.HTTP.LoginRateLimit }, false),
	},
	{
		Setting: Setting{Key: "http.session_ttl", Env: "HTTP_SESSION_TTL", Default: "12h",
			Help: "How long a login session lives after its last use, as a duration or seconds; at least 1s"},
		kind:  "duration",
		apply: durationAtLeast(func(c *Config) *time.Duration { return &c.HTTP.SessionTTL }, time.Second),
	},
	{
		Setting: Setting{Key: "http.cookie_secure", Env: "HTTP_COOKIE_SECURE", Default: "true",
			Help: "Secure flag of the session cookie: browsers then send it only over HTTPS or to localhost; false only for plain HTTP beyond loopback"},
		kind:  "bool",
		apply: boolValue(func(c *Config) *bool { return &c.HTTP.CookieSecure }),
	},
	{
		Setting: Setting{Key: "http.dashboard_read_only", Env: "HTTP_DASHBOARD_READ_ONLY", Default: "false",
			Help: "Make the dashboard under /monitoring/ view-only: no pausing queues, deleting or retrying tasks"},
		kind:  "bool",
		apply: boolValue(func(c *Config) *bool { return &c.HTTP.DashboardReadOnly }),
	},
	{
		Setting: Setting{Key: keyMetricsAuth, Env: "HTTP_METRICS_AUTH", Default: "false",
			Help: "Make /metrics need the credentials too (a session or basic auth; configure Prometheus's basic_auth); needs HTTP_AUTH_USERNAME and HTTP_AUTH_PASSWORD"},
		kind:  "bool",
		apply: boolValue(func(c *Config) *bool { return &c.HTTP.MetricsAuth }),
	},
	{
		Setting: Setting{Key: "http.dashboard_prometheus_url", Env: "HTTP_DASHBOARD_PROMETHEUS_URL",
			Help: "Base URL of a Prometheus server that scrapes the worker's /metrics, for the dashboard's charts (the worker queries it; the page shows it to browsers); empty: no charts"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.HTTP.DashboardPrometheusURL }, checkPrometheusURL),
	},
	{
		Setting: Setting{Key: "http.task_retention", Env: "HTTP_TASK_RETENTION", Default: "24h",
			Help: "How long a task enqueued over HTTP stays readable after it completes, unless its type or the request sets another; at least 1s"},
		kind:  "duration",
		apply: durationAtLeast(func(c *Config) *time.Duration { return &c.HTTP.TaskRetention }, time.Second),
	},
	{
		Setting: Setting{Key: "http.shutdown_timeout", Env: "HTTP_SHUTDOWN_TIMEOUT", Default: "5s",
			Help: "How long in-flight HTTP requests may finish at shutdown once the web process stops listening; at least 1ms"},
		kind:  "duration",
		apply: durationAtLeast(func(c *Config) *time.Duration { return &c.HTTP.ShutdownTimeout }, time.Millisecond),
	},
	{
		Setting: Setting{Key: "http.trusted_proxies", Env: "HTTP_TRUSTED_PROXIES",
			Help: "Reverse proxies (IP addresses or CIDR prefixes, comma-separated) whose X-Forwarded-For names the client for rate limits and logs; empty: the connection's peer is the client"},
		kind:  "string",
		apply: prefixesValue(func(c *Config) *[]netip.Prefix { return &c.HTTP.TrustedProxies }),
	},
	{
		Setting: Setting{Key: "log.level", Env: "LOG_LEVEL", Default: "info",
			Help: "Lowest log level written: debug, info, warn or error"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Log.Level }, oneOf("debug", "info", "warn", "error")),
	},
	{
		Setting: Setting{Key: "log.format", Env: "LOG_FORMAT", Default: "auto",
			Help: "Log format: auto (console on a terminal, else JSON), console or json"},
		kind:  "string",
		apply: stringValue(func(c *Config) *string { return &c.Log.Format }, oneOf("auto", "console", "json")),
	},
})

// withFlags fills in each spec's flag: "--" and the key with dots and
// underscores turned into dashes.
func withFlags(ss []spec) []spec {
	for i := range ss {
		ss[i].Flag = "--" + strings.NewReplacer(".", "-", "_", "-").Replace(ss[i].Key)
	}
	return ss
}

// Settings returns every setting, in a fixed order, for documentation such
// as the README's table and --help. The slice is a fresh copy.
func Settings() []Setting {
	out := make([]Setting, len(specs))
	for i, s := range specs {
		out[i] = s.Setting
	}
	return out
}

// RegisterFlags adds a flag for every setting to fs, plus --config, which
// names the config file. A flag overrides the environment only when it is
// given on the command line. The flags only record their text; [Load]
// checks it. RegisterFlags panics, as pflag does, if fs already has a flag
// of the same name.
func RegisterFlags(fs *pflag.FlagSet) {
	fs.String(configFlag, "", "YAML (.yaml, .yml) or TOML (.toml) config `file`; overrides "+configEnv)
	for _, s := range specs {
		def := s.Default
		if s.Secret {
			def = ""
		}
		f := fs.VarPF(&flagValue{text: def, kind: s.kind}, strings.TrimPrefix(s.Flag, "--"), "", s.Help+" (env "+s.Env+")")
		if s.kind == "bool" {
			f.NoOptDefVal = "true"
		}
	}
}

// flagValue is a flag's text, kept as typed so that [Load] can check it
// and name the flag in its errors.
type flagValue struct {
	text string
	kind string
}

func (v *flagValue) String() string     { return v.text }
func (v *flagValue) Set(s string) error { v.text = s; return nil }
func (v *flagValue) Type() string       { return v.kind }

// lookup returns the setting of key. Keys are constants of this package, so
// a miss is a bug; it returns a Setting that names key everywhere.
func lookup(key string) Setting {
	for _, s := range specs {
		if s.Key == key {
			return s.Setting
		}
	}
	return Setting{Key: key, Env: key, Flag: key}
}
