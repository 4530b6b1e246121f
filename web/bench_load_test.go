package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/web"
)

// Flags of BenchmarkCacheAsideLoad: the wrk settings and how many rounds.
var (
	loadRounds   = flag.Int("load.rounds", 3, "BenchmarkCacheAsideLoad: wrk runs per server, interleaved")
	loadDuration = flag.Duration("load.duration", 5*time.Second, "BenchmarkCacheAsideLoad: length of each wrk run")
	loadConns    = flag.Int("load.conns", 50, "BenchmarkCacheAsideLoad: wrk connections (-c)")
	loadThreads  = flag.Int("load.threads", 2, "BenchmarkCacheAsideLoad: wrk threads (-t)")
	loadServers  = flag.String("load.servers", "bare,web,web-prod", "BenchmarkCacheAsideLoad: the servers to load, in turn (for profiling one)")
)

// loadTarget is one server under load.
type loadTarget struct {
	name  string
	url   string
	rps   []float64   // Requests/sec of each round
	cpu   []float64   // this process's CPU time per request in each round, µs
	redis *roundTrips // on its Redis client
}

// BenchmarkCacheAsideLoad measures, with the wrk load generator over
// loopback, the requests/s of GET /api/cache/{key} on a hit against a bare
// net/http handler that calls go-redis GET on the same key and writes the
// same JSON, both on the test Redis, in the same run. The servers take
// turns, one wrk run each per round, so that drift in the machine's load
// hits them alike. It reports each server's median req/s over the rounds
// and, as pct-of-bare, the median over the rounds of its req/s as a
// percentage of bare's in the same round (the target is 90 or more), and
// cpu-us/req, the median of the benchmark process's CPU time per request
// while the server was under load: less sensitive than req/s to other load
// on the machine. The log has wrk's lines for every run and the Redis
// commands per round trip of each server's client (the manager pipelines
// concurrent GETs).
//
// The servers, each with a Redis client of its own with the same options:
//
//	bare      http.ServeMux → go-redis GET → encoding/json, on a plain
//	          http.Server
//	web       web.New's whole chain (request id, security headers, access
//	          log to a no-op logger, panic recovery, shutdown gate, body
//	          limit, cross-origin check, error shaping) and the manager's
//	          auto-pipelined GetAsync, served by Server.Run; RateLimit off,
//	          as bare has none
//	web-prod  web plus what a deployment adds: the access log as JSON at
//	          info level (to io.Discard, so no write cost) and the
//	          Prometheus HTTP middleware
//
// It needs wrk (Debian: apt-get install wrk) and skips without it. It is
// one measurement, whatever b.N: run it with -benchtime 1x. The -load.*
// flags set wrk's threads, connections and duration, the rounds, and
// which servers run (-load.servers web, with -cpuprofile, profiles one).
//
//	REDIS_TEST_URL=redis://127.0.0.1:16379 go test ./web -run '^$' -bench CacheAsideLoad -benchtime 1x -v
func BenchmarkCacheAsideLoad(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk not found (Debian: apt-get install wrk)")
	}
	redisURL := redistest.URL(b, tasksDB)
	const key = "load-hot"
	prefix := redistest.Prefix(b)

	// One client per server, with the same options: neither waits for
	// the other's pool.
	newClient := func() (redis.UniversalClient, *roundTrips) {
		opts, err := redis.ParseURL(redisURL)
		if err != nil {
			b.Fatal(err)
		}
		rdb := redis.NewClient(opts)
		b.Cleanup(func() { rdb.Close() })
		trips := new(roundTrips)
		rdb.AddHook(trips)
		return rdb, trips
	}

	bareRDB, bareTrips := newClient()
	bareMux := http.NewServeMux()
	bareMux.HandleFunc("GET /api/cache/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		v, err := bareRDB.Get(r.Context(), prefix+key).Result()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		body, err := json.Marshal(struct {
			Key    string `json:"key"`
			Data   string `json:"data"`
			Source string `json:"source"`
		}{key, v, "cache"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	targets := []*loadTarget{{name: "bare", url: serveLoad(b, bareMux) + "/api/cache/" + key, redis: bareTrips}}

	webServer := func(name string, prod bool) {
		rdb, trips := newClient()
		m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{KeyPrefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		o := web.Options{Manager: m} // RateLimit zero: off
		if prod {
			log, err := bootstrap.NewLogger(config.Log{Level: "info", Format: "json"}, io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			x, err := metrics.New(metrics.Options{Manager: m, Logger: zap.NewNop()})
			if err != nil {
				b.Fatal(err)
			}
			o.Logger, o.Metrics, o.Middleware = log, x.Handler(), x.HTTPMiddleware(nil)
		}
		o.Addr = "127.0.0.1:0"
		targets = append(targets, &loadTarget{name: name, url: runWeb(b, o) + "/api/cache/" + key, redis: trips})
	}
	webServer("web", false)
	webServer("web-prod", true)
	targets = slices.DeleteFunc(targets, func(t *loadTarget) bool {
		return !slices.Contains(strings.Split(*loadServers, ","), t.name)
	})
	if len(targets) == 0 {
		b.Fatalf("-load.servers %q names none of bare, web, web-prod", *loadServers)
	}

	// Warm the key, and check that every server answers it from the cache.
	if err := bareRDB.Set(context.Background(), prefix+key, strings.Repeat("v", 64), 0).Err(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bareRDB.Del(context.Background(), prefix+key) })
	for _, t := range targets {
		checkHit(b, t.url)
	}

	args := func(d time.Duration) []string {
		return []string{"-t" + strconv.Itoa(*loadThreads), "-c" + strconv.Itoa(*loadConns),
			"-d" + strconv.Itoa(max(int(d.Round(time.Second)/time.Second), 1)) + "s"}
	}
	b.Logf("wrk %s URL, %d rounds, servers in turn: %s", strings.Join(args(*loadDuration), " "), *loadRounds, names(targets))
	for _, t := range targets { // warm-up: connections, pools, caches
		runWrk(b, wrk, append(args(time.Second), t.url))
	}
	b.ResetTimer()
	for round := range *loadRounds {
		for _, t := range targets {
			c, n := t.redis.commands.Load(), t.redis.trips.Load()
			cpu := cpuTime(b)
			res := runWrk(b, wrk, append(args(*loadDuration), t.url))
			us := float64((cpuTime(b)-cpu)/time.Microsecond) / float64(res.requests)
			t.rps, t.cpu = append(t.rps, res.rps), append(t.cpu, us)
			b.Logf("round %d %-8s %s | %.1f µs CPU per request | %.2f Redis commands per round trip",
				round+1, t.name, res.summary, us, t.redis.perTrip(c, n))
		}
	}
	b.StopTimer()

	// The ratio to bare is taken per round, of runs next to each other,
	// so that drift of the machine's load between rounds cancels out.
	b.ReportMetric(0, "ns/op") // one measurement, not b.N operations
	var bare *loadTarget
	if targets[0].name == "bare" {
		bare = targets[0]
	}
	for _, t := range targets {
		rps := median(t.rps)
		b.ReportMetric(rps, t.name+"-req/s")
		b.ReportMetric(median(t.cpu), t.name+"-cpu-us/req")
		vs := ""
		if bare != nil && t != bare {
			pcts := make([]float64, len(t.rps))
			for i := range t.rps {
				pcts[i] = 100 * t.rps[i] / bare.rps[i]
			}
			pct := median(pcts)
			b.ReportMetric(pct, t.name+"-pct-of-bare")
			vs = fmt.Sprintf(", %.1f%% of bare (median of the rounds' ratios %s)", pct, formatFloats(pcts, "%.1f"))
		}
		b.Logf("%-8s median %.0f req/s%s, rounds %s; median %.1f µs CPU per request, rounds %s",
			t.name, rps, vs, formatFloats(t.rps, "%.0f"), median(t.cpu), formatFloats(t.cpu, "%.1f"))
	}
}

// serveLoad serves h on a free loopback port with a plain http.Server
// until the benchmark ends, and returns its base URL: the bare server.
func serveLoad(tb testing.TB, h http.Handler) string {
	tb.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// checkHit fails unless GET url answers 200 with "source":"cache".
func checkHit(tb testing.TB, url string) {
	tb.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Source string `json:"source"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK || got.Source != "cache" {
		tb.Fatalf("GET %s: status %d, source %q, decode error %v; want 200 from the cache", url, resp.StatusCode, got.Source, err)
	}
}

// wrkResult is what runWrk read from wrk's report.
type wrkResult struct {
	rps      float64
	requests int64  // completed in the run
	summary  string // the report's Latency, Requests/sec and Transfer/sec lines, joined
}

// runWrk runs wrk with args (the URL last) and returns its Requests/sec.
// It fails the benchmark when wrk fails or reports socket errors or
// responses other than 2xx and 3xx.
func runWrk(tb testing.TB, wrk string, args []string) wrkResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), *loadDuration+time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, wrk, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("wrk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var res wrkResult
	var keep []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "Latency"), strings.HasPrefix(line, "Transfer/sec:"):
			keep = append(keep, strings.Join(strings.Fields(line), " "))
		case strings.HasPrefix(line, "Requests/sec:"):
			keep = append(keep, strings.Join(strings.Fields(line), " "))
			res.rps, err = strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				tb.Fatalf("wrk: parse %q: %v", line, err)
			}
		case strings.Contains(line, " requests in "):
			res.requests, err = strconv.ParseInt(strings.Fields(line)[0], 10, 64)
			if err != nil {
				tb.Fatalf("wrk: parse %q: %v", line, err)
			}
		case strings.HasPrefix(line, "Socket errors:"), strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			tb.Fatalf("wrk %s: %s\n%s", strings.Join(args, " "), line, out)
		}
	}
	if res.rps == 0 || res.requests == 0 {
		tb.Fatalf("wrk %s: no requests or Requests/sec in its report:\n%s", strings.Join(args, " "), out)
	}
	res.summary = strings.Join(keep, " | ")
	return res
}

// cpuTime returns the user and system CPU time this process has used. Only
// one server is under load at a time, so its difference over a wrk run is
// that server's (the benchmark's own goroutines idle meanwhile).
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// roundTrips is a redis.Hook that counts a client's commands and the
// round trips that carried them: a pipeline is one round trip.
type roundTrips struct {
	commands, trips atomic.Int64
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.commands.Add(1)
		h.trips.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.commands.Add(int64(len(cmds)))
		h.trips.Add(1)
		return next(ctx, cmds)
	}
}

// perTrip returns the commands per round trip since the counts c and t.
func (h *roundTrips) perTrip(c, t int64) float64 {
	return float64(h.commands.Load()-c) / float64(max(h.trips.Load()-t, 1))
}

// median returns the median of xs (not empty).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// formatFloats formats xs with format, as [x1 x2 ...].
func formatFloats(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// names returns the names of ts, comma-separated.
func names(ts []*loadTarget) string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.name
	}
	return strings.Join(out, ", ")
}
