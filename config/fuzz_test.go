package config_test

import (
	"encoding/json"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/redisurl"
	"github.com/forgeq/forgeq/tasks"
)

// fuzzedEnv are the variables FuzzLoadEnv sets, in the order of its
// arguments.
var fuzzedEnv = []string{
	"REDIS_POOL_SIZE",
	"REDIS_SOCKET_TIMEOUT",
	"REDIS_DEFAULT_TTL",
	"WORKER_QUEUES",
	"HTTP_ADDR",
	"REDIS_CONNECTION_URL",
	"HTTP_RATE_LIMIT",
}

// FuzzLoadEnv loads fuzzed values of the variables in fuzzedEnv. Load
// does not panic. When it fails, each error it joins names one of the
// variables, it names exactly those whose value fails on its own, and
// those about REDIS_CONNECTION_URL never show a password of the URL. When
// it succeeds, the values meet their documented invariants, and writing
// them back into the variables loads the same values.
func FuzzLoadEnv(f *testing.F) {
	add := func(pool, timeout, ttl, queues, addr, rawURL, rate string) {
		f.Add(pool, timeout, ttl, queues, addr, rawURL, rate)
	}
	add("", "", "", "", "", "", "")
	add("0", "10s", "1h", "critical=6,default=3,low=1", "127.0.0.1:8080", "", "100/1s")
	add("20", "0.5", "none", "emails=2, jobs.low=1", "off", "redis://app:Secr3tPassw0rd@cache.internal:6380/2", "600/1m")
	add(" 7 ", "1m30s", "3600", "a=1", "[::1]:0", "rediss://:0nlyPassw0rd@h:6390", "off")
	add("-1", "0", "0", "", "localhost", "redis://u:Passw0rdInErr@h:1/notadb", "0/1s")
	add("abc", "-5s", "NONE", "a=0", "h:99999", "redis://u:Passw0rdBogus@h:1?bogus=1", "100")
	add("99999999999999999999", "1e3", "9999999999999999999", "a=1,a=2", ":http", "redis+sentinel://app:Passw0rdD4ta@s1:26379,s2:26380/m/x?sentinel_password=Sent1nelPw", "1/0")
	add("1.5", "10", "1h", "bad name=1", "h:-1", "redis+sentinel://h1:1/m?sentinel_pass%77ord=Enc0dedKey99", "x/1s")
	add("0x10", "10ns", "1ns", "=1", "h:", "redis+cluster://u:Clust3rPassw0rd@h1:1,,h2:2", "5/0.001")
	add("1", "1h", "1h", "a=1,", "host:port", "redis://u:Passw0rdPool@h:1?pool_size=3000000000", "1/h")
	add("1", "1h", "1h", "a", "h:1", "app:N0SchemePassw0rd@redis:6379", "2/S")
	add("1", "1h", "1h", "a=1", "h:1", "//app:N0SchemePassw0rd@redis:6379", "3/-1s")
	add("1", "1h", "1h", "a=1", "h:1", "redis://u:Passw0rd%zz@h:1", "4/1.5")
	add("1", "1h", "1h", "a=1", "h:1", "unix://u:S0cketPassw0rd@/run/redis.sock?db=x", "1/1ns")
	add("1", "1h", "1h", "a=1", "h:1", "http://u:Http0nlyPassw0rd@h:1", "1/99999999999h")
	f.Fuzz(func(t *testing.T, pool, timeout, ttl, queues, addr, rawURL, rate string) {
		values := []string{pool, timeout, ttl, queues, addr, rawURL, rate}
		vars := make(map[string]string, len(fuzzedEnv))
		for i, name := range fuzzedEnv {
			vars[name] = values[i]
		}
		c, err := config.Load(nil, mapEnv(vars))

		wantBad := make(map[string]bool) // the variables whose value fails alone
		for name, v := range vars {
			if v == "" {
				continue // unset
			}
			_, alone := config.Load(nil, mapEnv(map[string]string{name: v}))
			if alone == nil {
				continue
			}
			wantBad[name] = true
			for _, e := range leafErrors(alone) {
				if !strings.HasPrefix(e.Error(), name+": ") {
					t.Errorf("Load with only %s=%q: error %q does not name %s first", name, v, e, name)
				}
			}
		}
		if err == nil {
			if len(wantBad) > 0 {
				t.Fatalf("Load accepts %q, but alone these fail: %v", vars, wantBad)
			}
			checkConfig(t, c)
			checkEnvRoundTrip(t, c)
			return
		}
		if d := cmp.Diff(config.Config{}, c, cmp.AllowUnexported(config.Redis{}), cmpopts.EquateComparable(netip.Prefix{})); d != "" {
			t.Errorf("Load returned an error and a non-zero Config (-zero +got):\n%s", d)
		}
		gotBad := make(map[string]bool)
		for _, e := range leafErrors(err) {
			name, _, _ := strings.Cut(e.Error(), ": ")
			if _, ok := vars[name]; !ok {
				t.Errorf("Load(%q): error %q names none of the variables first", vars, e)
				continue
			}
			gotBad[name] = true
			if name != "REDIS_CONNECTION_URL" {
				continue
			}
			for _, pw := range passwordsIn(rawURL) {
				if strings.Contains(e.Error(), pw) {
					t.Errorf("Load: error %q shows the password %q of REDIS_CONNECTION_URL=%q", e, pw, rawURL)
				}
			}
		}
		if d := cmp.Diff(wantBad, gotBad); d != "" {
			t.Errorf("Load(%q): the variables its errors name differ from those that fail alone (-alone +together):\n%s\nerror: %v", vars, d, err)
		}
	})
}

// FuzzLoadFile loads fuzzed YAML and TOML config files. Load does not
// panic; when it fails, each error it joins names the file; when it
// succeeds, the values meet their documented invariants.
func FuzzLoadFile(f *testing.F) {
	for _, ext := range []uint8{0, 1, 2} {
		f.Add(ext, "")
		f.Add(ext, "\n")
	}
	f.Add(uint8(0), fullYAML)
	f.Add(uint8(2), fullTOML)
	yamlSeeds := []string{
		"redis: [\n",
		"redis: 5\n",
		"redis:\n  pool_sise: 5\n",
		"redis:\n  pool_size: abc\n",
		"redis:\n  pool_size: -2\n  colour: blue\n",
		"redis:\n  url: redis://app:Secr3tPassw0rd@h:1/notadb\n",
		"redis:\n  url: redis+sentinel://h:1/m?sentinel_password=Sent1nelPw&db=x\n",
		"redis:\n  default_ttl: none\n  socket_timeout: 1e-9\n",
		"redis.pool_size: 3\n",
		"redis: {tls: {server_name: h, insecure_skip_verify: yes}}\n",
		"log:\n  level: {a: 1}\n",
		"log: [debug]\n",
		"worker:\n  queues: {mail: 0}\n",
		"worker:\n  queues: {}\n",
		"worker:\n  queues: {mail: 1.5, low: true}\n",
		"worker:\n  queues: mail=1,low=2\n",
		"worker:\n  schedule:\n    - {name: a, spec: \"@every 1s\", type: t, payload: [1]}\n",
		"worker:\n  schedule:\n    - {name: a, spec: \"*/5 * * * *\", type: t}\n    - {name: a, spec: \"@hourly\", type: t}\n",
		"worker:\n  schedule: {name: a}\n",
		"worker:\n  schedule:\n    - name: b\n      spec: \"CRON_TZ=Nowhere/Land 0 6 * * 1-5\"\n      type: t\n",
		"http:\n  auth_username: admin\n",
		"http:\n  auth_password: \"s3cret: pw\"\n",
		"http:\n  rate_limit: 0\n  addr: off\n  session_ttl: 0.5\n",
		"a: &x {pool_size: 1}\nredis: *x\n",
		"redis:\n  pool_size: !!str 3\n  socket_timeout: !!float 2\n  url: !!null\n",
		"redis:\n  <<: {pool_size: 4}\n",
		"~: 1\n",
		"? [a]\n: 1\n",
		"--- \n...\n",
		"%YAML 1.2\n---\nredis: {}\n",
	}
	for _, s := range yamlSeeds {
		f.Add(uint8(0), s)
		f.Add(uint8(1), s)
	}
	tomlSeeds := []string{
		"[redis\n",
		"[celery]\nbroker = \"x\"\n",
		"[worker]\nmax_retry = 2.5\n",
		"[redis]\npool_size = 9223372036854775807\n",
		"[redis]\nsocket_timeout = 1979-05-27T07:32:00Z\n",
		"[redis]\nurl = \"redis://u:Passw0rdInToml@h:1?pool_size=-5\"\n",
		"redis.pool_size = 2\n",
		"[worker.queues]\n\"a b\" = 1\n",
		"[[worker.schedule]]\nname = \"x\"\nspec = \"@every 0s\"\ntype = \"t\"\n",
		"[redis]\n[redis]\n",
		"[http]\nrate_limit = [1, 2]\n",
	}
	for _, s := range tomlSeeds {
		f.Add(uint8(2), s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, ext uint8, content string) {
		// Load reads the files the TLS settings name; a fuzzed name such
		// as /dev/zero would never end. Skip every file that could name
		// those settings: literally, through escapes, or through a YAML
		// !!binary tag (which %-escapes may spell).
		lower := strings.ToLower(content)
		if strings.Contains(lower, "_file") || strings.Contains(lower, `\`) ||
			strings.Contains(lower, "!") && (strings.Contains(lower, "binary") || strings.Contains(lower, "%")) {
			t.Skip("the content could set a TLS file")
		}
		path := filepath.Join(dir, "forgeq"+[]string{".yaml", ".yml", ".toml"}[int(ext)%3])
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(nil, mapEnv(map[string]string{"FORGEQ_CONFIG": path}))
		if err == nil {
			checkConfig(t, c)
			return
		}
		for _, e := range leafErrors(err) {
			if !strings.Contains(e.Error(), path) {
				t.Errorf("Load of %q: error %q does not name the file %s", content, e, path)
			}
		}
	})
}

// checkConfig checks the invariants [config.Config] documents for a
// Config that Load accepted.
func checkConfig(t testing.TB, c config.Config) {
	t.Helper()
	r := c.Redis
	if r.PoolSize < 0 {
		t.Errorf("Redis.PoolSize = %d, want 0 or more", r.PoolSize)
	}
	if r.SocketTimeout <= 0 {
		t.Errorf("Redis.SocketTimeout = %v, want positive", r.SocketTimeout)
	}
	if r.DefaultTTL <= 0 && r.DefaultTTL != config.NoExpiry {
		t.Errorf("Redis.DefaultTTL = %v, want positive or NoExpiry", r.DefaultTTL)
	}
	if r.KeyPrefix == "" || strings.HasPrefix(r.KeyPrefix, "asynq:") || strings.HasPrefix("asynq:", r.KeyPrefix) {
		t.Errorf("Redis.KeyPrefix = %q: empty or overlapping asynq's keys", r.KeyPrefix)
	}
	if !slices.Contains([]string{"auto", "true", "false"}, r.Embedded) {
		t.Errorf("Redis.Embedded = %q", r.Embedded)
	}
	checkHostPort(t, "Redis.EmbeddedAddr", r.EmbeddedAddr)
	if r.URL != "" {
		p, err := redisurl.Parse(r.URL)
		if err != nil {
			t.Errorf("Redis.URL does not parse: %v", err)
		} else if r.TLSConfig() != nil && !p.TLS() {
			t.Errorf("Redis.TLSConfig() is set for the plain URL %q", r.Redacted())
		}
	}
	if c.Cache.AsyncMaxInFlight < 1 || c.Cache.LockTTL <= 0 {
		t.Errorf("Cache = %+v: want AsyncMaxInFlight 1 or more, LockTTL positive", c.Cache)
	}

	w := c.Worker
	if len(w.Queues) == 0 {
		t.Errorf("Worker.Queues is empty")
	}
	for name, weight := range w.Queues {
		if tasks.CheckQueueName(name) != nil || weight < 1 {
			t.Errorf("Worker.Queues[%q] = %d: want a name an enqueue may use (tasks.CheckQueueName) and a weight of 1 or more", name, weight)
		}
	}
	if w.Concurrency < 0 || w.MaxRetry < 0 || w.ShutdownTimeout <= 0 || w.TaskCheckInterval <= 0 {
		t.Errorf("Worker = %+v: want Concurrency and MaxRetry 0 or more, timeouts positive", w)
	}
	names := make(map[string]bool)
	for _, e := range w.Schedule {
		if e.Name == "" || names[e.Name] || e.Spec == "" || e.Type == "" || e.Source == "" {
			t.Errorf("Worker.Schedule entry %+v: want a unique name, a spec, a type and a source", e)
		}
		names[e.Name] = true
		var payload map[string]any
		if err := json.Unmarshal([]byte(e.Payload), &payload); err != nil || payload == nil {
			t.Errorf("Worker.Schedule entry %q: payload %q is not a JSON object", e.Name, e.Payload)
		}
	}

	h := c.HTTP
	if h.Addr != "" {
		checkHostPort(t, "HTTP.Addr", h.Addr)
	}
	if (h.AuthUsername == "") != (h.AuthPassword == "") || strings.Contains(h.AuthUsername, ":") {
		t.Errorf("HTTP auth: username %q, password set %v: want both or neither, no colon", h.AuthUsername, h.AuthPassword != "")
	}
	if h.RateLimit != (config.RateLimit{}) && (h.RateLimit.Rate < 1 || h.RateLimit.Period <= 0) {
		t.Errorf("HTTP.RateLimit = %+v: want off, or a rate of 1 or more per positive period", h.RateLimit)
	}
	if h.SessionTTL < time.Second || h.TaskRetention < time.Second || h.ShutdownTimeout < time.Millisecond {
		t.Errorf("HTTP: session TTL %v, task retention %v, shutdown timeout %v below their minimums", h.SessionTTL, h.TaskRetention, h.ShutdownTimeout)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) ||
		!slices.Contains([]string{"auto", "console", "json"}, c.Log.Format) {
		t.Errorf("Log = %+v", c.Log)
	}
}

// checkHostPort checks that addr is host:port with a port of 0 to 65535.
func checkHostPort(t testing.TB, field, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		t.Errorf("%s = %q is not host:port: %v", field, addr, err)
	}
}

// checkEnvRoundTrip writes the fuzzed settings of c back into their
// variables, in the forms the README documents, and checks that Load
// reads the same values from them.
func checkEnvRoundTrip(t testing.TB, c config.Config) {
	t.Helper()
	ttl := c.Redis.DefaultTTL.String()
	if c.Redis.DefaultTTL == config.NoExpiry {
		ttl = "none"
	}
	var queues []string
	for name, weight := range c.Worker.Queues {
		queues = append(queues, name+"="+strconv.Itoa(weight))
	}
	slices.Sort(queues)
	addr := c.HTTP.Addr
	if addr == "" {
		addr = "off"
	}
	vars := map[string]string{
		"REDIS_POOL_SIZE":      strconv.Itoa(c.Redis.PoolSize),
		"REDIS_SOCKET_TIMEOUT": c.Redis.SocketTimeout.String(),
		"REDIS_DEFAULT_TTL":    ttl,
		"WORKER_QUEUES":        strings.Join(queues, ","),
		"HTTP_ADDR":            addr,
		"REDIS_CONNECTION_URL": c.Redis.URL,
		"HTTP_RATE_LIMIT":      c.HTTP.RateLimit.String(),
	}
	got, err := config.Load(nil, mapEnv(vars))
	if err != nil {
		t.Fatalf("Load of the values written back, %q: %v", vars, err)
	}
	type fuzzed struct {
		PoolSize                  int
		SocketTimeout, DefaultTTL time.Duration
		Queues                    map[string]int
		Addr, URL                 string
		RateLimit                 config.RateLimit
	}
	pick := func(c config.Config) fuzzed {
		return fuzzed{c.Redis.PoolSize, c.Redis.SocketTimeout, c.Redis.DefaultTTL, c.Worker.Queues, c.HTTP.Addr, c.Redis.URL, c.HTTP.RateLimit}
	}
	if d := cmp.Diff(pick(c), pick(got)); d != "" {
		t.Errorf("Load of the values written back, %q (-first +again):\n%s", vars, d)
	}
}

// mapEnv returns a getenv backed by m.
func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// leafErrors returns the errors joined in err, recursively.
func leafErrors(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, leafErrors(e)...)
	}
	return out
}

// passwordsIn returns the passwords net/url finds in the Redis URL raw
// (the userinfo password, the values of query options named like
// "password"), also when raw lacks its scheme, that FuzzLoadEnv can look
// for in errors without matching their fixed text by chance: at least 8
// characters, letters and digits among them, and none that %q escapes or
// that Redact's "xxxxx" mask could form.
func passwordsIn(raw string) []string {
	forms := []string{raw}
	if !strings.Contains(raw, "://") {
		forms = append(forms, "redis://"+strings.TrimPrefix(raw, "//"))
	}
	var candidates, out []string
	for _, form := range forms {
		u, err := url.Parse(form)
		if err != nil {
			continue
		}
		if pw, ok := u.User.Password(); ok {
			candidates = append(candidates, pw)
		}
		for k, vs := range u.Query() {
			if strings.Contains(strings.ToLower(k), "password") {
				candidates = append(candidates, vs...)
			}
		}
	}
	for _, pw := range candidates {
		if len(pw) >= 8 && strings.ContainsAny(pw, "0123456789") && strings.ContainsFunc(pw, isLetter) &&
			!strings.Contains(pw, "x") && strconv.Quote(pw) == `"`+pw+`"` {
			out = append(out, pw)
		}
	}
	return out
}

func isLetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }
