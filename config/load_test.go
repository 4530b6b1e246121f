package config_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/config"
)

// env returns a getenv backed by m, so tests never touch the process
// environment.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// flags returns a flag set with the config flags, parsed from args.
func flags(tb testing.TB, args ...string) *pflag.FlagSet {
	tb.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		tb.Fatal(err)
	}
	return fs
}

// writeFile writes content to name in a new temporary directory and
// returns its path.
func writeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// ignoreTLS skips the built *tls.Config, which cmp cannot compare, and
// compares netip.Prefix values with ==.
var ignoreTLS = cmp.Options{cmpopts.IgnoreUnexported(config.Redis{}), cmpopts.EquateComparable(netip.Prefix{})}

func defaults() config.Config {
	return config.Config{
		Redis: config.Redis{
			SocketTimeout: 10 * time.Second,
			DefaultTTL:    time.Hour,
			KeyPrefix:     "cache:",
			Embedded:      "auto",
			EmbeddedAddr:  "127.0.0.1:6379",
		},
		Cache: config.Cache{AsyncMaxInFlight: 10000, LockTTL: 10 * time.Second, NearTTL: time.Minute},
		Worker: config.Worker{
			Queues:            map[string]int{"critical": 6, "default": 3, "low": 1},
			ShutdownTimeout:   8 * time.Second,
			MaxRetry:          25,
			RetryDelayMin:     10 * time.Second,
			RetryDelayMax:     time.Hour,
			Pickup:            "events",
			TaskCheckInterval: 10 * time.Millisecond,
			Events:            true,
			EventsMaxLen:      10000,
		},
		HTTP: config.HTTP{
			Addr:            "127.0.0.1:8080",
			RateLimit:       config.RateLimit{Rate: 100, Period: time.Second},
			LoginRateLimit:  config.RateLimit{Rate: 5, Period: time.Minute},
			SessionTTL:      12 * time.Hour,
			CookieSecure:    true,
			TaskRetention:   24 * time.Hour,
			ShutdownTimeout: 5 * time.Second,
		},
		Log: config.Log{Level: "info", Format: "auto"},
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveFlag *pflag.FlagSet
		giveEnv  func(string) string
	}{
		{name: "nil flags and getenv"},
		{name: "no flags set", giveFlag: flags(t), giveEnv: env(nil)},
		{name: "empty variables are unset", giveFlag: flags(t), giveEnv: env(map[string]string{"REDIS_POOL_SIZE": "", "FORGEQ_CONFIG": ""})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(tt.giveFlag, tt.giveEnv)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(defaults(), got, ignoreTLS); d != "" {
				t.Errorf("Load (-want +got)\n%s", d)
			}
			if got.Redis.TLSConfig() != nil {
				t.Errorf("TLSConfig() = %v, want nil", got.Redis.TLSConfig())
			}
		})
	}
}

// The same settings as a YAML and a TOML file, exercising every key and
// the native types of each format.
const (
	fullYAML = `
redis:
  url: redis://cache.internal:6380/2
  pool_size: 20
  socket_timeout: 0.5
  default_ttl: none
  key_prefix: "app:"
  embedded: no
  embedded_addr: "127.0.0.1:7379"
  tls:
    server_name: ""
    insecure_skip_verify: false
cache:
  async_max_in_flight: 50
  lock_ttl: 2m
  near_size: 5000
  near_max_bytes: 1048576
  near_ttl: 30s
worker:
  concurrency: 4
  queues:
    emails: 2
    "jobs.low": 1
  strict_priority: yes
  shutdown_timeout: 20s
  max_retry: 3
  retry_delay_min: 2
  retry_delay_max: 5m
  task_check_interval: 50ms
  schedule:
    - name: purge-tmp
      spec: "@every 30s"
      type: cache:invalidate
      payload: {pattern: "tmp:*", n: 2, deep: {ok: true}}
      queue: low
    - name: report
      spec: "CRON_TZ=Europe/Paris 0 6 * * 1-5"
      type: data:process
http:
  addr: "off"
  auth_username: admin
  auth_password: "s3cret: pw"
  rate_limit: 600/1m
  login_rate_limit: 20/1h
  session_ttl: 3600
  cookie_secure: no
  dashboard_read_only: true
  dashboard_prometheus_url: http://prometheus:9090
  task_retention: 2h
  shutdown_timeout: 1.5
  trusted_proxies: [10.0.0.0/8, "::1"]
log:
  level: DEBUG
  format: json
`
	fullTOML = `
[redis]
url = "redis://cache.internal:6380/2"
pool_size = 20
socket_timeout = 0.5
default_ttl = "none"
key_prefix = "app:"
embedded = "no"
embedded_addr = "127.0.0.1:7379"

[redis.tls]
server_name = ""
insecure_skip_verify = false

[cache]
async_max_in_flight = 50
lock_ttl = "2m"
near_size = 5000
near_max_bytes = 1048576
near_ttl = "30s"

[worker]
concurrency = 4
strict_priority = true
shutdown_timeout = "20s"
max_retry = 3
retry_delay_min = 2
retry_delay_max = "5m"
task_check_interval = "50ms"

[worker.queues]
emails = 2
"jobs.low" = 1

[[worker.schedule]]
name = "purge-tmp"
spec = "@every 30s"
type = "cache:invalidate"
queue = "low"

[worker.schedule.payload]
pattern = "tmp:*"
n = 2
deep = {ok = true}

[[worker.schedule]]
name = "report"
spec = "CRON_TZ=Europe/Paris 0 6 * * 1-5"
type = "data:process"

[http]
addr = "off"
auth_username = "admin"
auth_password = "s3cret: pw"
rate_limit = "600/1m"
login_rate_limit = "20/1h"
session_ttl = 3600
cookie_secure = false
dashboard_read_only = true
dashboard_prometheus_url = "http://prometheus:9090"
task_retention = "2h"
shutdown_timeout = 1.5
trusted_proxies = "10.0.0.0/8, ::1"

[log]
level = "DEBUG"
format = "json"
`
)

func TestLoadFile(t *testing.T) {
	t.Parallel()

	want := config.Config{
		Redis: config.Redis{
			URL:           "redis://cache.internal:6380/2",
			PoolSize:      20,
			SocketTimeout: 500 * time.Millisecond,
			DefaultTTL:    config.NoExpiry,
			KeyPrefix:     "app:",
			Embedded:      "false",
			EmbeddedAddr:  "127.0.0.1:7379",
		},
		Cache: config.Cache{AsyncMaxInFlight: 50, LockTTL: 2 * time.Minute,
			NearSize: 5000, NearMaxBytes: 1 << 20, NearTTL: 30 * time.Second},
		Worker: config.Worker{
			Concurrency:       4,
			Queues:            map[string]int{"emails": 2, "jobs.low": 1},
			StrictPriority:    true,
			ShutdownTimeout:   20 * time.Second,
			MaxRetry:          3,
			RetryDelayMin:     2 * time.Second,
			RetryDelayMax:     5 * time.Minute,
			Pickup:            "events",
			TaskCheckInterval: 50 * time.Millisecond,
			Events:            true,
			EventsMaxLen:      10000,
			Schedule: []config.ScheduleEntry{
				{Name: "purge-tmp", Spec: "@every 30s", Type: "cache:invalidate", Queue: "low",
					Payload: `{"deep":{"ok":true},"n":2,"pattern":"tmp:*"}`},
				{Name: "report", Spec: "CRON_TZ=Europe/Paris 0 6 * * 1-5", Type: "data:process", Payload: "{}"},
			},
		},
		HTTP: config.HTTP{
			Addr:                   "",
			AuthUsername:           "admin",
			AuthPassword:           "s3cret: pw",
			RateLimit:              config.RateLimit{Rate: 600, Period: time.Minute},
			LoginRateLimit:         config.RateLimit{Rate: 20, Period: time.Hour},
			SessionTTL:             time.Hour,
			CookieSecure:           false,
			DashboardReadOnly:      true,
			DashboardPrometheusURL: "http://prometheus:9090",
			TaskRetention:          2 * time.Hour,
			ShutdownTimeout:        1500 * time.Millisecond,
			TrustedProxies:         []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		},
		Log: config.Log{Level: "debug", Format: "json"},
	}
	tests := []struct {
		giveName, giveContent string
	}{
		{"forgeq.yaml", fullYAML},
		{"forgeq.yml", fullYAML},
		{"forgeq.toml", fullTOML},
		{"FORGEQ.TOML", fullTOML},
	}
	for _, tt := range tests {
		t.Run(tt.giveName, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, tt.giveName, tt.giveContent)
			got, err := config.Load(nil, env(map[string]string{"FORGEQ_CONFIG": path}))
			if err != nil {
				t.Fatal(err)
			}
			want := want
			want.Worker.Schedule = slices.Clone(want.Worker.Schedule)
			for i := range want.Worker.Schedule {
				e := &want.Worker.Schedule[i]
				e.Source = fmt.Sprintf("%s: key worker.schedule: entry %d (%q)", path, i+1, e.Name)
			}
			if d := cmp.Diff(want, got, ignoreTLS); d != "" {
				t.Errorf("Load (-want +got)\n%s", d)
			}
		})
	}
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()

	// Each layer sets pool size and TTL; the file also sets the log level,
	// which nothing above it overrides.
	files := []struct {
		name, content string
	}{
		{"forgeq.yaml", "redis:\n  pool_size: 2\n  default_ttl: 120\nlog:\n  level: warn\n"},
		{"forgeq.toml", "[redis]\npool_size = 2\ndefault_ttl = 120\n[log]\nlevel = \"warn\"\n"},
	}
	tests := []struct {
		name                        string
		giveFile, giveEnv, giveFlag bool
		wantPool                    int
		wantTTL                     time.Duration
		wantLevel                   string
	}{
		{name: "defaults", wantPool: 0, wantTTL: time.Hour, wantLevel: "info"},
		{name: "file over default", giveFile: true, wantPool: 2, wantTTL: 2 * time.Minute, wantLevel: "warn"},
		{name: "env over default", giveEnv: true, wantPool: 3, wantTTL: 3 * time.Minute, wantLevel: "info"},
		{name: "flag over default", giveFlag: true, wantPool: 4, wantTTL: 4 * time.Minute, wantLevel: "info"},
		{name: "env over file", giveFile: true, giveEnv: true, wantPool: 3, wantTTL: 3 * time.Minute, wantLevel: "warn"},
		{name: "flag over file", giveFile: true, giveFlag: true, wantPool: 4, wantTTL: 4 * time.Minute, wantLevel: "warn"},
		{name: "flag over env", giveEnv: true, giveFlag: true, wantPool: 4, wantTTL: 4 * time.Minute, wantLevel: "info"},
		{name: "flag over env over file", giveFile: true, giveEnv: true, giveFlag: true, wantPool: 4, wantTTL: 4 * time.Minute, wantLevel: "warn"},
	}
	for _, f := range files {
		for _, tt := range tests {
			t.Run(f.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				e := map[string]string{}
				if tt.giveFile {
					e["FORGEQ_CONFIG"] = writeFile(t, f.name, f.content)
				}
				if tt.giveEnv {
					e["REDIS_POOL_SIZE"], e["REDIS_DEFAULT_TTL"] = "3", "3m"
				}
				var args []string
				if tt.giveFlag {
					args = []string{"--redis-pool-size", "4", "--redis-default-ttl=240"}
				}
				got, err := config.Load(flags(t, args...), env(e))
				if err != nil {
					t.Fatal(err)
				}
				want := []any{tt.wantPool, tt.wantTTL, tt.wantLevel}
				if d := cmp.Diff(want, []any{got.Redis.PoolSize, got.Redis.DefaultTTL, got.Log.Level}); d != "" {
					t.Errorf("pool size, TTL, level (-want +got)\n%s", d)
				}
			})
		}
	}
}

func TestLoadConfigSelection(t *testing.T) {
	t.Parallel()

	fromFlag := writeFile(t, "flag.yaml", "redis:\n  pool_size: 7\n")
	fromEnv := writeFile(t, "env.toml", "[redis]\npool_size = 8\n")
	tests := []struct {
		name     string
		giveArgs []string
		giveEnv  map[string]string
		wantPool int
	}{
		{name: "--config", giveArgs: []string{"--config", fromFlag}, wantPool: 7},
		{name: "FORGEQ_CONFIG", giveEnv: map[string]string{"FORGEQ_CONFIG": fromEnv}, wantPool: 8},
		{name: "--config over FORGEQ_CONFIG", giveArgs: []string{"--config=" + fromFlag}, giveEnv: map[string]string{"FORGEQ_CONFIG": fromEnv}, wantPool: 7},
		{name: "empty --config turns FORGEQ_CONFIG off", giveArgs: []string{"--config="}, giveEnv: map[string]string{"FORGEQ_CONFIG": fromEnv}, wantPool: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(flags(t, tt.giveArgs...), env(tt.giveEnv))
			if err != nil {
				t.Fatal(err)
			}
			if got.Redis.PoolSize != tt.wantPool {
				t.Errorf("PoolSize = %d, want %d", got.Redis.PoolSize, tt.wantPool)
			}
		})
	}
}

// wantErrors checks that err contains every string of want and none of
// notWant.
func wantErrors(tb testing.TB, err error, want, notWant []string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			tb.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
	for _, w := range notWant {
		if strings.Contains(err.Error(), w) {
			tb.Errorf("error contains %q:\n%v", w, err)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	tests := []struct {
		name        string
		giveName    string // file to write; empty: use giveArgs/giveEnv only
		giveContent string
		giveArgs    []string
		giveEnv     map[string]string
		wantErr     []string // each %s is replaced by the file's path
	}{
		{
			name:    "missing file from FORGEQ_CONFIG",
			giveEnv: map[string]string{"FORGEQ_CONFIG": missing},
			wantErr: []string{`FORGEQ_CONFIG: config file "` + missing + `": no such file or directory`},
		},
		{
			name:     "missing file from --config",
			giveArgs: []string{"--config", missing},
			wantErr:  []string{`--config: config file "` + missing + `": no such file or directory`},
		},
		{
			name:        "unknown extension",
			giveName:    "forgeq.json",
			giveContent: "{}",
			wantErr:     []string{`FORGEQ_CONFIG: config file "%s": unknown extension ".json"`},
		},
		{
			name:        "bad YAML",
			giveName:    "forgeq.yaml",
			giveContent: "redis: [\n",
			wantErr:     []string{`FORGEQ_CONFIG: config file "%s": yaml:`},
		},
		{
			name:        "bad TOML",
			giveName:    "forgeq.toml",
			giveContent: "[redis\n",
			wantErr:     []string{`FORGEQ_CONFIG: config file "%s": toml:`},
		},
		{
			name:        "unknown key",
			giveName:    "forgeq.yaml",
			giveContent: "redis:\n  pool_sise: 5\n",
			wantErr:     []string{`%s: unknown key redis.pool_sise (did you mean redis.pool_size?)`},
		},
		{
			name:        "unknown section",
			giveName:    "forgeq.toml",
			giveContent: "[celery]\nbroker = \"x\"\n",
			wantErr:     []string{`%s: unknown key celery`},
		},
		{
			name:        "section given a value",
			giveName:    "forgeq.yaml",
			giveContent: "redis: 5\n",
			wantErr:     []string{`%s: key redis: want a map of settings, got 5`},
		},
		{
			name:        "bad value names file and key",
			giveName:    "forgeq.yaml",
			giveContent: "redis:\n  pool_size: abc\n",
			wantErr:     []string{`%s: key redis.pool_size: "abc" is not a whole number`},
		},
		{
			name:        "fraction for a whole number",
			giveName:    "forgeq.toml",
			giveContent: "[worker]\nmax_retry = 2.5\n",
			wantErr:     []string{`%s: key worker.max_retry: "2.5" is not a whole number`},
		},
		{
			name:        "map for a single value",
			giveName:    "forgeq.yaml",
			giveContent: "log:\n  level: {a: 1}\n",
			wantErr:     []string{`%s: key log.level: want a single value, got a map`},
		},
		{
			name:        "queue map with a bad weight",
			giveName:    "forgeq.yaml",
			giveContent: "worker:\n  queues: {mail: 0}\n",
			wantErr:     []string{`%s: key worker.queues: weight 0 of queue "mail" is too small`},
		},
		{
			name:        "empty queue map",
			giveName:    "forgeq.yaml",
			giveContent: "worker:\n  queues: {}\n",
			wantErr:     []string{`%s: key worker.queues: no queues`},
		},
		{
			name:        "unknown key and bad value both reported",
			giveName:    "forgeq.yaml",
			giveContent: "redis:\n  pool_size: -2\n  colour: blue\n",
			wantErr: []string{
				`%s: unknown key redis.colour`,
				`%s: key redis.pool_size: "-2" is too small`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := map[string]string{}
			for k, v := range tt.giveEnv {
				e[k] = v
			}
			path := ""
			if tt.giveName != "" {
				path = writeFile(t, tt.giveName, tt.giveContent)
				e["FORGEQ_CONFIG"] = path
			}
			_, err := config.Load(flags(t, tt.giveArgs...), env(e))
			var want []string
			for _, w := range tt.wantErr {
				want = append(want, strings.ReplaceAll(w, "%s", path))
			}
			wantErrors(t, err, want, nil)
		})
	}
}

func TestLoadDurations(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give string
		want time.Duration
	}{
		{"10", 10 * time.Second},
		{"0.5", 500 * time.Millisecond},
		{".25", 250 * time.Millisecond},
		{"3600", time.Hour},
		{" 7 ", 7 * time.Second},
		{"10s", 10 * time.Second},
		{"1m30s", 90 * time.Second},
		{"250ms", 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(nil, env(map[string]string{
				"REDIS_SOCKET_TIMEOUT":    tt.give,
				"REDIS_DEFAULT_TTL":       tt.give,
				"CACHE_LOCK_TTL":          tt.give,
				"WORKER_SHUTDOWN_TIMEOUT": tt.give,
				"HTTP_SHUTDOWN_TIMEOUT":   tt.give,
			}))
			if err != nil {
				t.Fatal(err)
			}
			want := []time.Duration{tt.want, tt.want, tt.want, tt.want, tt.want}
			gotD := []time.Duration{
				got.Redis.SocketTimeout, got.Redis.DefaultTTL, got.Cache.LockTTL, got.Worker.ShutdownTimeout,
				got.HTTP.ShutdownTimeout,
			}
			if d := cmp.Diff(want, gotD); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

func TestLoadNoExpiry(t *testing.T) {
	t.Parallel()

	for _, give := range []string{"none", "None", "NONE"} {
		t.Run(give, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(flags(t, "--redis-default-ttl", give), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Redis.DefaultTTL != config.NoExpiry {
				t.Errorf("DefaultTTL = %v, want NoExpiry", got.Redis.DefaultTTL)
			}
		})
	}
	t.Run("only for the default TTL", func(t *testing.T) {
		t.Parallel()
		_, err := config.Load(nil, env(map[string]string{"CACHE_LOCK_TTL": "none"}))
		wantErrors(t, err, []string{`CACHE_LOCK_TTL: "none" is not a duration`}, nil)
	})
}

func TestLoadNormalises(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveEnv  map[string]string
		giveArgs []string
		want     func(*config.Config)
	}{
		{
			name:    "embedded yes",
			giveEnv: map[string]string{"REDIS_EMBEDDED": "YES"},
			want:    func(c *config.Config) { c.Redis.Embedded = "true" },
		},
		{
			name:    "embedded 0",
			giveEnv: map[string]string{"REDIS_EMBEDDED": "0"},
			want:    func(c *config.Config) { c.Redis.Embedded = "false" },
		},
		{
			name:    "embedded Auto",
			giveEnv: map[string]string{"REDIS_EMBEDDED": "Auto"},
			want:    func(c *config.Config) { c.Redis.Embedded = "auto" },
		},
		{
			name:    "http off",
			giveEnv: map[string]string{"HTTP_ADDR": "OFF"},
			want:    func(c *config.Config) { c.HTTP.Addr = "" },
		},
		{
			name:     "http empty flag",
			giveArgs: []string{"--http-addr="},
			want:     func(c *config.Config) { c.HTTP.Addr = "" },
		},
		{
			name:    "http any interface",
			giveEnv: map[string]string{"HTTP_ADDR": ":9000"},
			want:    func(c *config.Config) { c.HTTP.Addr = ":9000" },
		},
		{
			name:    "http IPv6",
			giveEnv: map[string]string{"HTTP_ADDR": "[::1]:0"},
			want:    func(c *config.Config) { c.HTTP.Addr = "[::1]:0" },
		},
		{
			name:    "queues with spaces",
			giveEnv: map[string]string{"WORKER_QUEUES": " mail = 2 , a.b:c-d_e=1"},
			want:    func(c *config.Config) { c.Worker.Queues = map[string]int{"mail": 2, "a.b:c-d_e": 1} },
		},
		{
			name:     "bare bool flag",
			giveArgs: []string{"--worker-strict-priority"},
			want:     func(c *config.Config) { c.Worker.StrictPriority = true },
		},
		{
			name:    "events off with a max len",
			giveEnv: map[string]string{"WORKER_EVENTS": "false", "WORKER_EVENTS_MAX_LEN": "100"},
			want:    func(c *config.Config) { c.Worker.Events, c.Worker.EventsMaxLen = false, 100 },
		},
		{
			name:     "bool flag false over env",
			giveEnv:  map[string]string{"WORKER_STRICT_PRIORITY": "1"},
			giveArgs: []string{"--worker-strict-priority=no"},
			want:     func(c *config.Config) {},
		},
		{
			name:    "log level in capitals",
			giveEnv: map[string]string{"LOG_LEVEL": "WARN", "LOG_FORMAT": "Console"},
			want:    func(c *config.Config) { c.Log.Level, c.Log.Format = "warn", "console" },
		},
		{
			name:    "rate limit per minute",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "600/1m"},
			want:    func(c *config.Config) { c.HTTP.RateLimit = config.RateLimit{Rate: 600, Period: time.Minute} },
		},
		{
			name:     "rate limit with a bare unit and spaces",
			giveArgs: []string{"--http-rate-limit", " 20 / H "},
			want:     func(c *config.Config) { c.HTTP.RateLimit = config.RateLimit{Rate: 20, Period: time.Hour} },
		},
		{
			name:    "rate limit in seconds",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "5/0.5"},
			want:    func(c *config.Config) { c.HTTP.RateLimit = config.RateLimit{Rate: 5, Period: 500 * time.Millisecond} },
		},
		{
			name:    "rate limit off",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "OFF"},
			want:    func(c *config.Config) { c.HTTP.RateLimit = config.RateLimit{} },
		},
		{
			name:     "rate limit 0",
			giveArgs: []string{"--http-rate-limit=0"},
			want:     func(c *config.Config) { c.HTTP.RateLimit = config.RateLimit{} },
		},
		{
			name:    "login rate limit",
			giveEnv: map[string]string{"HTTP_LOGIN_RATE_LIMIT": "10/1h"},
			want:    func(c *config.Config) { c.HTTP.LoginRateLimit = config.RateLimit{Rate: 10, Period: time.Hour} },
		},
		{
			name:     "login rate limit flag over env",
			giveEnv:  map[string]string{"HTTP_LOGIN_RATE_LIMIT": "10/1h"},
			giveArgs: []string{"--http-login-rate-limit", "3/m"},
			want:     func(c *config.Config) { c.HTTP.LoginRateLimit = config.RateLimit{Rate: 3, Period: time.Minute} },
		},
		{
			name:    "credentials",
			giveEnv: map[string]string{"HTTP_AUTH_USERNAME": "admin", "HTTP_AUTH_PASSWORD": " pass word "},
			want:    func(c *config.Config) { c.HTTP.AuthUsername, c.HTTP.AuthPassword = "admin", " pass word " },
		},
		{
			name:     "cookie not secure, read-only dashboard",
			giveEnv:  map[string]string{"HTTP_COOKIE_SECURE": "false"},
			giveArgs: []string{"--http-dashboard-read-only"},
			want:     func(c *config.Config) { c.HTTP.CookieSecure, c.HTTP.DashboardReadOnly = false, true },
		},
		{
			name:    "prometheus URL",
			giveEnv: map[string]string{"HTTP_DASHBOARD_PROMETHEUS_URL": "https://prom.internal:9090/prometheus"},
			want:    func(c *config.Config) { c.HTTP.DashboardPrometheusURL = "https://prom.internal:9090/prometheus" },
		},
		{
			name:    "trusted proxies",
			giveEnv: map[string]string{"HTTP_TRUSTED_PROXIES": " 10.1.2.3/8 ,192.168.0.7,, fd00::/8,::ffff:172.16.0.1"},
			want: func(c *config.Config) {
				c.HTTP.TrustedProxies = []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"), // masked
					netip.MustParsePrefix("192.168.0.7/32"),
					netip.MustParsePrefix("fd00::/8"),
					netip.MustParsePrefix("172.16.0.1/32"), // unmapped
				}
			},
		},
		{
			name:    "zero retries",
			giveEnv: map[string]string{"WORKER_MAX_RETRY": "0", "WORKER_CONCURRENCY": "16"},
			want:    func(c *config.Config) { c.Worker.MaxRetry, c.Worker.Concurrency = 0, 16 },
		},
		{
			name:     "retry delays as seconds and a Go duration",
			giveEnv:  map[string]string{"WORKER_RETRY_DELAY_MIN": "1.5"},
			giveArgs: []string{"--worker-retry-delay-max", "2m30s"},
			want: func(c *config.Config) {
				c.Worker.RetryDelayMin, c.Worker.RetryDelayMax = 1500*time.Millisecond, 150*time.Second
			},
		},
		{
			name:    "equal retry delays",
			giveEnv: map[string]string{"WORKER_RETRY_DELAY_MIN": "1s", "WORKER_RETRY_DELAY_MAX": "1"},
			want:    func(c *config.Config) { c.Worker.RetryDelayMin, c.Worker.RetryDelayMax = time.Second, time.Second },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(flags(t, tt.giveArgs...), env(tt.giveEnv))
			if err != nil {
				t.Fatal(err)
			}
			want := defaults()
			tt.want(&want)
			if d := cmp.Diff(want, got, ignoreTLS); d != "" {
				t.Errorf("Load (-want +got)\n%s", d)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()

	pki := newPKI(t)
	notPEM := writeFile(t, "ca.pem", "not a certificate\n")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name        string
		giveEnv     map[string]string
		giveArgs    []string
		wantErr     []string
		wantNotErr  []string
		wantErrsLen int // how many joined errors; 0: 1
	}{
		{
			name:    "pool size not a number",
			giveEnv: map[string]string{"REDIS_POOL_SIZE": "abc"},
			wantErr: []string{`REDIS_POOL_SIZE: "abc" is not a whole number`},
		},
		{
			name:     "pool size not a number from a flag",
			giveArgs: []string{"--redis-pool-size=abc"},
			wantErr:  []string{`--redis-pool-size: "abc" is not a whole number`},
		},
		{
			name:     "negative pool size",
			giveArgs: []string{"--redis-pool-size", "-1"},
			wantErr:  []string{`--redis-pool-size: "-1" is too small; want 0 (the go-redis default) to 65536`},
		},
		{
			name:    "negative TTL",
			giveEnv: map[string]string{"REDIS_DEFAULT_TTL": "-5"},
			wantErr: []string{`REDIS_DEFAULT_TTL: "-5" is not positive`, `"none"`},
		},
		{
			name:    "zero TTL",
			giveEnv: map[string]string{"REDIS_DEFAULT_TTL": "0"},
			wantErr: []string{`REDIS_DEFAULT_TTL: "0" is not positive`},
		},
		{
			name:    "socket timeout not a duration",
			giveEnv: map[string]string{"REDIS_SOCKET_TIMEOUT": "soon"},
			wantErr: []string{`REDIS_SOCKET_TIMEOUT: "soon" is not a duration; want a duration ("10s", "1m30s") or seconds ("10", "0.5")`},
		},
		{
			name:    "negative Go duration",
			giveEnv: map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "-1s"},
			wantErr: []string{`WORKER_SHUTDOWN_TIMEOUT: "-1s" is not positive`},
		},
		{
			name:    "overlong seconds",
			giveEnv: map[string]string{"CACHE_LOCK_TTL": "99999999999999"},
			wantErr: []string{`CACHE_LOCK_TTL: "99999999999999" is too long`},
		},
		{
			name:    "URL without scheme",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "localhost:6379"},
			wantErr: []string{`REDIS_CONNECTION_URL: redis URL "localhost:6379": no scheme`},
		},
		{
			name:    "URL with a bad database",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "redis://h:1/x"},
			wantErr: []string{`REDIS_CONNECTION_URL: redis URL "redis://h:1/x": invalid database number`},
		},
		{
			name:     "URL with an unknown scheme",
			giveArgs: []string{"--redis-url", "http://h:6379"},
			wantErr:  []string{`--redis-url: redis URL "http://h:6379": unknown scheme "http"`},
		},
		{
			name:       "URL with a password",
			giveEnv:    map[string]string{"REDIS_CONNECTION_URL": "redis://app:hunter2pw@h:1/x"},
			wantErr:    []string{`REDIS_CONNECTION_URL: redis URL "redis://app:xxxxx@h:1/x": invalid database number`},
			wantNotErr: []string{"hunter2pw"},
		},
		{
			name:    "queues without weight",
			giveEnv: map[string]string{"WORKER_QUEUES": "default"},
			wantErr: []string{`WORKER_QUEUES: "default": entry "default" is not name=weight`},
		},
		{
			name:    "queue weight zero",
			giveEnv: map[string]string{"WORKER_QUEUES": "default=0"},
			wantErr: []string{`WORKER_QUEUES: "default=0": weight 0 of queue "default" is too small; want 1 or more`},
		},
		{
			name:    "queue weight not a number",
			giveEnv: map[string]string{"WORKER_QUEUES": "default=x"},
			wantErr: []string{`WORKER_QUEUES: "default=x": weight "x" of queue "default" is not a whole number`},
		},
		{
			name:    "queue without name",
			giveEnv: map[string]string{"WORKER_QUEUES": "=3"},
			wantErr: []string{`WORKER_QUEUES: "=3": entry "=3" has no queue name`},
		},
		{
			name:    "queue twice",
			giveEnv: map[string]string{"WORKER_QUEUES": "a=1,b=2,a=3"},
			wantErr: []string{`WORKER_QUEUES: "a=1,b=2,a=3": queue "a" is listed twice`},
		},
		{
			name:     "queue name with a space",
			giveArgs: []string{"--worker-queues", "my queue=1"},
			wantErr:  []string{`--worker-queues: "my queue=1": queue name "my queue": has a character outside`},
		},
		{
			name:     "no queues",
			giveArgs: []string{"--worker-queues="},
			wantErr:  []string{`--worker-queues: "" has no queues`},
		},
		{
			name:    "HTTP address without port",
			giveEnv: map[string]string{"HTTP_ADDR": "localhost"},
			wantErr: []string{`HTTP_ADDR: "localhost" is not host:port (or off)`},
		},
		{
			name:    "HTTP port out of range",
			giveEnv: map[string]string{"HTTP_ADDR": "localhost:70000"},
			wantErr: []string{`HTTP_ADDR: "localhost:70000": port "70000" is not a number from 0 to 65535`},
		},
		{
			name:    "HTTP port by name",
			giveEnv: map[string]string{"HTTP_ADDR": "localhost:http"},
			wantErr: []string{`HTTP_ADDR: "localhost:http": port "http" is not a number`},
		},
		{
			name:    "metrics auth without credentials",
			giveEnv: map[string]string{"HTTP_METRICS_AUTH": "true"},
			wantErr: []string{`HTTP_METRICS_AUTH: true needs credentials to check; set HTTP_AUTH_USERNAME or --http-auth-username and HTTP_AUTH_PASSWORD or --http-auth-password`},
		},
		{
			name:    "username without password",
			giveEnv: map[string]string{"HTTP_AUTH_USERNAME": "admin"},
			wantErr: []string{`HTTP_AUTH_USERNAME: "admin" is set without a password (HTTP_AUTH_PASSWORD or --http-auth-password); give both or neither`},
		},
		{
			name:       "password without username",
			giveArgs:   []string{"--http-auth-password", "hunter2pw"},
			wantErr:    []string{`--http-auth-password: a password is set without a username (HTTP_AUTH_USERNAME or --http-auth-username); give both or neither`},
			wantNotErr: []string{"hunter2pw"},
		},
		{
			name:       "username with a colon",
			giveEnv:    map[string]string{"HTTP_AUTH_USERNAME": "ad:min", "HTTP_AUTH_PASSWORD": "hunter2pw"},
			wantErr:    []string{`HTTP_AUTH_USERNAME: "ad:min" contains a colon, which HTTP basic auth cannot carry in a username`},
			wantNotErr: []string{"hunter2pw", "without"},
		},
		{
			name:    "username with a control character",
			giveEnv: map[string]string{"HTTP_AUTH_USERNAME": "ad\nmin", "HTTP_AUTH_PASSWORD": "hunter2pw"},
			wantErr: []string{`HTTP_AUTH_USERNAME: "ad\nmin" contains a control character`},
		},
		{
			name:    "trusted proxy that is not an address",
			giveEnv: map[string]string{"HTTP_TRUSTED_PROXIES": "10.0.0.1,proxy.internal"},
			wantErr: []string{`HTTP_TRUSTED_PROXIES: "proxy.internal" is not an IP address or a CIDR prefix such as 10.0.0.0/8`},
		},
		{
			name:     "trusted proxy prefix too long",
			giveArgs: []string{"--http-trusted-proxies=10.0.0.0/33"},
			wantErr:  []string{`--http-trusted-proxies: "10.0.0.0/33" is not a CIDR prefix such as 10.0.0.0/8`},
		},
		{
			name:    "rate limit without a period",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "100"},
			wantErr: []string{`HTTP_RATE_LIMIT: "100" is not a rate limit; want requests/period ("100/1s", "600/1m") or off`},
		},
		{
			name:     "rate limit with a bad count",
			giveArgs: []string{"--http-rate-limit=many/1s"},
			wantErr:  []string{`--http-rate-limit: "many/1s": requests "many" is not a whole number`},
		},
		{
			name:    "rate limit of zero requests",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "0/1m"},
			wantErr: []string{`HTTP_RATE_LIMIT: "0/1m": requests 0 is too small; want 1 or more, or off for no limit`},
		},
		{
			name:    "login rate limit off",
			giveEnv: map[string]string{"HTTP_LOGIN_RATE_LIMIT": "off"},
			wantErr: []string{`HTTP_LOGIN_RATE_LIMIT: "off": this limit cannot be off; want requests/period ("5/1m", "20/1h")`},
		},
		{
			name:     "login rate limit 0",
			giveArgs: []string{"--http-login-rate-limit=0"},
			wantErr:  []string{`--http-login-rate-limit: "0": this limit cannot be off`},
		},
		{
			name:    "login rate limit of zero requests",
			giveEnv: map[string]string{"HTTP_LOGIN_RATE_LIMIT": "0/1m"},
			wantErr: []string{`HTTP_LOGIN_RATE_LIMIT: "0/1m": requests 0 is too small; want 1 or more`},
		},
		{
			name:    "login rate limit without a period",
			giveEnv: map[string]string{"HTTP_LOGIN_RATE_LIMIT": "5"},
			wantErr: []string{`HTTP_LOGIN_RATE_LIMIT: "5" is not a rate limit; want requests/period ("5/1m", "20/1h")`},
		},
		{
			name:    "rate limit with a bad period",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "100/fortnight"},
			wantErr: []string{`HTTP_RATE_LIMIT: "100/fortnight": period "fortnight" is not a duration`},
		},
		{
			name:    "rate limit with a negative period",
			giveEnv: map[string]string{"HTTP_RATE_LIMIT": "100/-1s"},
			wantErr: []string{`HTTP_RATE_LIMIT: "100/-1s": period "-1s" is not positive`},
		},
		{
			name:    "session TTL below a second",
			giveEnv: map[string]string{"HTTP_SESSION_TTL": "500ms"},
			wantErr: []string{`HTTP_SESSION_TTL: "500ms" is below the minimum of 1s`},
		},
		{
			name:     "task retention not positive",
			giveArgs: []string{"--http-task-retention", "0"},
			wantErr:  []string{`--http-task-retention: "0" is not positive`},
		},
		{
			name:    "shutdown timeout not a duration",
			giveEnv: map[string]string{"HTTP_SHUTDOWN_TIMEOUT": "soon"},
			wantErr: []string{`HTTP_SHUTDOWN_TIMEOUT: "soon" is not a duration`},
		},
		{
			name:    "cookie secure auto",
			giveEnv: map[string]string{"HTTP_COOKIE_SECURE": "auto"},
			wantErr: []string{`HTTP_COOKIE_SECURE: "auto" is not a boolean`},
		},
		{
			name:    "prometheus URL without scheme",
			giveEnv: map[string]string{"HTTP_DASHBOARD_PROMETHEUS_URL": "prometheus:9090"},
			wantErr: []string{`HTTP_DASHBOARD_PROMETHEUS_URL: "prometheus:9090" is not an http:// or https:// URL with a host`},
		},
		{
			name:       "prometheus URL with credentials",
			giveEnv:    map[string]string{"HTTP_DASHBOARD_PROMETHEUS_URL": "http://scraper:hunter2pw@prometheus:9090"},
			wantErr:    []string{`HTTP_DASHBOARD_PROMETHEUS_URL: "http://scraper:xxxxx@prometheus:9090" contains credentials`},
			wantNotErr: []string{"hunter2pw"},
		},
		{
			name:       "prometheus URL that does not parse",
			giveEnv:    map[string]string{"HTTP_DASHBOARD_PROMETHEUS_URL": "http://scraper:hunter2pw@prom etheus:9090"},
			wantErr:    []string{`HTTP_DASHBOARD_PROMETHEUS_URL: "http://scraper:xxxxx@prom etheus:9090" is not a URL`},
			wantNotErr: []string{"hunter2pw"},
		},
		{
			name:    "log level",
			giveEnv: map[string]string{"LOG_LEVEL": "loud"},
			wantErr: []string{`LOG_LEVEL: "loud" is not one of debug, info, warn, error`},
		},
		{
			name:     "log format",
			giveArgs: []string{"--log-format=xml"},
			wantErr:  []string{`--log-format: "xml" is not one of auto, console, json`},
		},
		{
			name:    "key prefix asynq:",
			giveEnv: map[string]string{"REDIS_KEY_PREFIX": "asynq:"},
			wantErr: []string{`REDIS_KEY_PREFIX: "asynq:" overlaps asynq's key namespace "asynq:"`},
		},
		{
			name:    "key prefix inside asynq:",
			giveEnv: map[string]string{"REDIS_KEY_PREFIX": "asynq:cache:"},
			wantErr: []string{`REDIS_KEY_PREFIX: "asynq:cache:" overlaps asynq's key namespace`},
		},
		{
			name:    "key prefix reaching asynq:",
			giveEnv: map[string]string{"REDIS_KEY_PREFIX": "asy"},
			wantErr: []string{`REDIS_KEY_PREFIX: "asy" overlaps asynq's key namespace`},
		},
		{
			name:     "empty key prefix",
			giveArgs: []string{"--redis-key-prefix="},
			wantErr:  []string{`--redis-key-prefix: "" is empty`},
		},
		{
			name:    "key prefix with a space",
			giveEnv: map[string]string{"REDIS_KEY_PREFIX": "my cache:"},
			wantErr: []string{`REDIS_KEY_PREFIX: "my cache:" contains a space or control character`},
		},
		{
			name:    "bad bool",
			giveEnv: map[string]string{"WORKER_STRICT_PRIORITY": "maybe"},
			wantErr: []string{`WORKER_STRICT_PRIORITY: "maybe" is not a boolean; want true/false, 1/0 or yes/no`},
		},
		{
			name:     "bad bool flag",
			giveArgs: []string{"--redis-tls-insecure-skip-verify=sure"},
			wantErr:  []string{`--redis-tls-insecure-skip-verify: "sure" is not a boolean`},
		},
		{
			name:    "bad embedded",
			giveEnv: map[string]string{"REDIS_EMBEDDED": "sometimes"},
			wantErr: []string{`REDIS_EMBEDDED: "sometimes" is not auto, true or false`},
		},
		{
			name:    "async limit zero",
			giveEnv: map[string]string{"CACHE_ASYNC_MAX_IN_FLIGHT": "0"},
			wantErr: []string{`CACHE_ASYNC_MAX_IN_FLIGHT: "0" is too small; want 1 or more`},
		},
		{
			name:    "events max len too small",
			giveEnv: map[string]string{"WORKER_EVENTS_MAX_LEN": "99"},
			wantErr: []string{`WORKER_EVENTS_MAX_LEN: "99" is too small; want 100 or more`},
		},
		{
			name:    "bad events switch",
			giveEnv: map[string]string{"WORKER_EVENTS": "sometimes"},
			wantErr: []string{`WORKER_EVENTS: "sometimes" is not a boolean`},
		},
		{
			name:    "negative max retry",
			giveEnv: map[string]string{"WORKER_MAX_RETRY": "-1"},
			wantErr: []string{`WORKER_MAX_RETRY: "-1" is too small`},
		},
		{
			name:    "negative retry delay",
			giveEnv: map[string]string{"WORKER_RETRY_DELAY_MIN": "-1s"},
			wantErr: []string{`WORKER_RETRY_DELAY_MIN: "-1s" is not positive`},
		},
		{
			name:     "retry delay not a duration",
			giveArgs: []string{"--worker-retry-delay-max=later"},
			wantErr:  []string{`--worker-retry-delay-max: "later" is not a duration; want a duration ("10s", "1m30s") or seconds ("10", "0.5")`},
		},
		{
			name:    "retry delay under asynq's resolution",
			giveEnv: map[string]string{"WORKER_RETRY_DELAY_MIN": "500ms"},
			wantErr: []string{`WORKER_RETRY_DELAY_MIN: "500ms" is below the minimum of 1s`},
		},
		{
			name:    "retry delay min above max",
			giveEnv: map[string]string{"WORKER_RETRY_DELAY_MIN": "2m", "WORKER_RETRY_DELAY_MAX": "60"},
			wantErr: []string{`WORKER_RETRY_DELAY_MIN: "2m0s" is above "1m0s", the longest retry delay (from WORKER_RETRY_DELAY_MAX); want at most that`},
		},
		{
			name:     "retry delay min above the default max",
			giveArgs: []string{"--worker-retry-delay-min", "2h"},
			wantErr:  []string{`--worker-retry-delay-min: "2h0m0s" is above "1h0m0s", the longest retry delay (from default of worker.retry_delay_max)`},
		},
		{
			name:       "bad retry delay max: no comparison",
			giveEnv:    map[string]string{"WORKER_RETRY_DELAY_MIN": "2m", "WORKER_RETRY_DELAY_MAX": "0"},
			wantErr:    []string{`WORKER_RETRY_DELAY_MAX: "0" is not positive`},
			wantNotErr: []string{"is above"},
		},
		{
			name:    "TLS CA missing",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "rediss://h:6380", "REDIS_TLS_CA_FILE": missing},
			wantErr: []string{`REDIS_TLS_CA_FILE: "` + missing + `": no such file or directory`},
		},
		{
			name:     "TLS CA not PEM",
			giveEnv:  map[string]string{"REDIS_CONNECTION_URL": "rediss://h:6380"},
			giveArgs: []string{"--redis-tls-ca-file", notPEM},
			wantErr:  []string{`--redis-tls-ca-file: "` + notPEM + `": no certificates found`},
		},
		{
			name:    "TLS cert without key",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "rediss://h:6380", "REDIS_TLS_CERT_FILE": pki.clientCert},
			wantErr: []string{`REDIS_TLS_CERT_FILE: "` + pki.clientCert + `" is set without the client key (REDIS_TLS_KEY_FILE or --redis-tls-key-file)`},
		},
		{
			name:    "TLS key without cert",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "rediss://h:6380", "REDIS_TLS_KEY_FILE": pki.clientKey},
			wantErr: []string{`REDIS_TLS_KEY_FILE: "` + pki.clientKey + `" is set without the client certificate`},
		},
		{
			name: "TLS key of another certificate",
			giveEnv: map[string]string{
				"REDIS_CONNECTION_URL": "rediss://h:6380",
				"REDIS_TLS_CERT_FILE":  pki.clientCert,
				"REDIS_TLS_KEY_FILE":   pki.caKey,
			},
			wantErr: []string{`REDIS_TLS_CERT_FILE "` + pki.clientCert + `", REDIS_TLS_KEY_FILE "` + pki.caKey + `": tls: private key does not match public key`},
		},
		{
			name:       "TLS files with a plain URL",
			giveEnv:    map[string]string{"REDIS_CONNECTION_URL": "redis://app:hunter2pw@h:6379", "REDIS_TLS_CA_FILE": pki.caCert},
			wantErr:    []string{`REDIS_TLS_CA_FILE: "` + pki.caCert + `": TLS settings need a URL that uses TLS (rediss://, rediss+sentinel:// or rediss+cluster://); the URL from REDIS_CONNECTION_URL is "redis://app:xxxxx@h:6379"`},
			wantNotErr: []string{"hunter2pw"},
		},
		{
			name:     "TLS files without a URL",
			giveArgs: []string{"--redis-tls-cert-file", pki.clientCert, "--redis-tls-key-file", pki.clientKey},
			wantErr: []string{
				`--redis-tls-cert-file: "` + pki.clientCert + `": TLS settings need a URL that uses TLS`,
				`--redis-tls-key-file: "` + pki.clientKey + `": TLS settings need a URL that uses TLS`,
				"no Redis URL is set",
			},
			wantErrsLen: 2,
		},
		{
			name:    "insecure with a plain URL",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "redis://h:6379", "REDIS_TLS_INSECURE_SKIP_VERIFY": "yes"},
			wantErr: []string{`REDIS_TLS_INSECURE_SKIP_VERIFY: "true": TLS settings need a URL that uses TLS`},
		},
		{
			name: "every problem at once",
			giveEnv: map[string]string{
				"REDIS_POOL_SIZE":      "abc",
				"REDIS_DEFAULT_TTL":    "-5",
				"REDIS_CONNECTION_URL": "redis://:hunter2pw@h:1/x",
				"WORKER_QUEUES":        "default",
				"LOG_LEVEL":            "loud",
			},
			giveArgs: []string{"--http-addr", "nowhere", "--redis-key-prefix", "asynq:"},
			wantErr: []string{
				`REDIS_CONNECTION_URL: redis URL "redis://:xxxxx@h:1/x"`,
				`REDIS_POOL_SIZE: "abc"`,
				`REDIS_DEFAULT_TTL: "-5"`,
				`--redis-key-prefix: "asynq:"`,
				`WORKER_QUEUES: "default"`,
				`--http-addr: "nowhere"`,
				`LOG_LEVEL: "loud"`,
			},
			wantNotErr:  []string{"hunter2pw"},
			wantErrsLen: 7,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := config.Load(flags(t, tt.giveArgs...), env(tt.giveEnv))
			wantErrors(t, err, tt.wantErr, tt.wantNotErr)
			if d := cmp.Diff(config.Config{}, got, ignoreTLS); d != "" {
				t.Errorf("Config on error is not zero (-want +got)\n%s", d)
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) {
				t.Fatalf("error %T is not joined", err)
			}
			wantLen := max(tt.wantErrsLen, 1)
			if n := len(joined.Unwrap()); n != wantLen {
				t.Errorf("got %d errors, want %d:\n%v", n, wantLen, err)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()

	cfg, err := config.Load(nil, env(map[string]string{"REDIS_CONNECTION_URL": "redis://app:hunter2pw@h:6379/1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Redis.Redacted(), "redis://app:xxxxx@h:6379/1"; got != want {
		t.Errorf("Redacted() = %q, want %q", got, want)
	}
}

// TestLoadNeverShowsThePassword gives the password from every source
// alongside other bad values and checks that no error shows it.
func TestLoadNeverShowsThePassword(t *testing.T) {
	t.Parallel()

	const pw = "hunter2pw"
	tests := []struct {
		name     string
		giveFile string // YAML
		giveEnv  map[string]string
		giveArgs []string
		wantErr  []string
	}{
		{
			name:     "flag, with a bad username",
			giveArgs: []string{"--http-auth-password=" + pw, "--http-auth-username=a:b"},
			wantErr:  []string{`--http-auth-username: "a:b" contains a colon`},
		},
		{
			name:    "environment, alone",
			giveEnv: map[string]string{"HTTP_AUTH_PASSWORD": pw},
			wantErr: []string{`HTTP_AUTH_PASSWORD: a password is set without a username`},
		},
		{
			name:     "file, alone",
			giveFile: "http:\n  auth_password: " + pw + "\n  auth_pasword: x\n",
			wantErr:  []string{`key http.auth_password: a password is set without a username`, `unknown key http.auth_pasword (did you mean http.auth_password?)`},
		},
		{
			name:     "file, as a map",
			giveFile: "http:\n  auth_username: admin\n  auth_password: {" + pw + ": 1}\n",
			wantErr:  []string{`key http.auth_password: want a single value, got a map`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := map[string]string{}
			for k, v := range tt.giveEnv {
				e[k] = v
			}
			if tt.giveFile != "" {
				e["FORGEQ_CONFIG"] = writeFile(t, "forgeq.yaml", tt.giveFile)
			}
			fs := flags(t, tt.giveArgs...)
			_, err := config.Load(fs, env(e))
			wantErrors(t, err, tt.wantErr, []string{pw})
			if usage := fs.FlagUsages(); strings.Contains(usage, pw) {
				t.Errorf("--help shows the password:\n%s", usage)
			}
		})
	}
}

func TestPoolSizeUpperBound(t *testing.T) {
	t.Parallel()
	_, err := config.Load(nil, func(k string) string {
		if k == "REDIS_POOL_SIZE" {
			return "3000000000"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), `REDIS_POOL_SIZE: "3000000000" is too large`) {
		t.Errorf("err = %v, want REDIS_POOL_SIZE too large", err)
	}
}

func TestConcurrencyUpperBound(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give    string
		wantErr string // "" for none
	}{
		{give: "0"},
		{give: "10000"},
		{give: "10001", wantErr: `WORKER_CONCURRENCY: "10001" is too large; want 0 (one per CPU) to 10000`},
		{give: "1000000000", wantErr: `WORKER_CONCURRENCY: "1000000000" is too large; want 0 (one per CPU) to 10000`},
		{give: "-1", wantErr: `WORKER_CONCURRENCY: "-1" is too small; want 0 (one per CPU) to 10000`},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(nil, func(k string) string {
				if k == "WORKER_CONCURRENCY" {
					return tt.give
				}
				return ""
			})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadNearCache(t *testing.T) {
	t.Parallel()

	c, err := config.Load(nil, env(map[string]string{
		"CACHE_NEAR_SIZE": "10000", "CACHE_NEAR_MAX_BYTES": "33554432", "CACHE_NEAR_TTL": "15s"}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Cache{AsyncMaxInFlight: 10000, LockTTL: 10 * time.Second,
		NearSize: 10000, NearMaxBytes: 32 << 20, NearTTL: 15 * time.Second}
	if diff := cmp.Diff(want, c.Cache); diff != "" {
		t.Errorf("Cache (-want +got):\n%s", diff)
	}

	_, err = config.Load(nil, env(map[string]string{
		"CACHE_NEAR_SIZE": "-1", "CACHE_NEAR_MAX_BYTES": "-5", "CACHE_NEAR_TTL": "0"}))
	wantErrors(t, err, []string{
		`CACHE_NEAR_SIZE: "-1" is too small; want 0 (off) or more`,
		`CACHE_NEAR_MAX_BYTES: "-5" is too small; want 0 (64 MiB) or more`,
		`CACHE_NEAR_TTL: "0" is not positive`,
	}, nil)
}
