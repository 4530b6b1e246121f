package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
)

const (
	// idleEnv turns BenchmarkIdleCost on; it takes minutes.
	idleEnv = "FORGEQ_BENCH_IDLE"
	// idleSecsEnv sets the measuring window in seconds (default
	// idleWindow).
	idleSecsEnv = "FORGEQ_IDLE_SECS"
	// idleWindow is the default window over which CPU time is measured.
	idleWindow = 20 * time.Second
	// idleSettle is how long the processes run once all have registered,
	// before the window opens: their start-up work (connecting, publishing
	// the task catalogue, the first GC) is not idle cost.
	idleSettle = 3 * time.Second
	// rawAsynqEnv, set to a Redis address, makes the test binary run a raw
	// asynq server instead of the tests (see TestMain and runRawAsynq).
	rawAsynqEnv = "FORGEQ_E2E_RAW_ASYNQ_ADDR"
	// clockTicks is USER_HZ, the unit of utime and stime in
	// /proc/<pid>/stat: 100 on every Linux architecture Go supports.
	clockTicks = 100
)

// idleVariant is one kind of idle process BenchmarkIdleCost measures.
type idleVariant struct {
	name string
	// start starts one process serving the Redis at addr.
	start func(tb testing.TB, addr string) *proctest.Proc
}

// idleResult is one sub-benchmark's figures, in percent of one core.
type idleResult struct {
	name         string
	procs        int
	workerTotal  float64 // all worker processes together
	redis        float64 // redis-server, gross
	redisNetProc float64 // (redis - redis alone) / procs
}

// BenchmarkIdleCost measures what idle workers cost in CPU, their own and
// their Redis's: the targets of issue 11 are at most 0.5% of a core per
// idle worker process, at most 0.5% of Redis's core per idle worker, and at
// most 10% of Redis's core for 20 idle worker processes on one Redis. It
// takes minutes, so it skips unless FORGEQ_BENCH_IDLE=1; run it with
//
//	FORGEQ_BENCH_IDLE=1 go test -run '^$' -bench IdleCost -benchtime 1x -timeout 30m ./internal/e2e
//
// FORGEQ_IDLE_SECS=10 shortens the measuring window (default 20 s) for a
// quick run. It needs Linux (it reads /proc) and redis-server in PATH, and
// skips in a -race build, whose figures would mean nothing.
//
// It starts its own redis-server (no persistence) on a free port and
// nothing else uses that server, so the server's CPU time, read from
// /proc/<pid>/stat (utime+stime), is what its clients cost it plus its own
// idle work (serverCron at hz 10). That idle work is measured first, with no
// client connected, and logged as "redis alone". Then, for 1 and for 20
// processes of each variant:
//
//	impl=forgeq       cmd/worker with its defaults: REDIS_CONNECTION_URL,
//	                  HTTP_ADDR=off and LOG_LEVEL=warn set, nothing else
//	                  (queues critical, default and low; WORKER_PICKUP's
//	                  default, events: blocking waits in Redis, see
//	                  docs/pickup.md)
//	impl=forgeq-poll  the same with WORKER_PICKUP=poll: asynq's polling, one
//	                  dequeue round (a Lua call per queue) every
//	                  WORKER_TASK_CHECK_INTERVAL (default 10ms, jittered
//	                  from 5 to 15ms)
//	impl=asynq        the baseline: a bare asynq.Server at asynq's defaults
//	                  (queue default, TaskCheckInterval 1s), this test
//	                  binary re-executed in its raw-asynq mode (runRawAsynq)
//
// it starts the processes, waits until asynq's set of live servers
// (asynq:servers) has them all, lets them settle for 3 s, measures the CPU
// time of the processes (summed) and of redis-server over the window, and
// stops them with SIGTERM. It reports, in percent of one core:
//
//	worker-%core/proc  the worker processes' CPU over the window, per process
//	worker-%core       the same, all processes together
//	redis-%core        redis-server's CPU over the window, its own idle work
//	                   included
//	redis-%core/proc   redis-%core less the "redis alone" figure, per
//	                   process: what one idle worker costs Redis
//
// and logs them as a table, with the load average at the start and the end
// (the machine's other load disturbs the figures; compare the variants of
// one run, not runs on different machines). /proc counts CPU time in 10 ms
// ticks, so one process's figure over a 20 s window is good to about
// ±0.05% of a core.
//
// Besides its pickup, an idle worker is not quite idle; asynq's server
// runs, whatever the pickup:
//
//   - the heartbeater: every 5 s it writes the server's and its workers'
//     state (asynq:servers, asynq:workers) with a TTL;
//   - the forwarder: every DelayedTaskCheckInterval (asynq's default 5 s,
//     the worker's 1 s, so that retries are on time) a Lua call per queue
//     moving due scheduled and retry tasks to pending;
//   - the janitor: every 8 s a Lua call per queue deleting expired
//     completed tasks;
//   - the recoverer: every minute, tasks whose lease expired;
//   - the health checker (the worker sets HealthCheckFunc): a PING every
//     15 s; the syncer (retries failed Redis writes every 5 s, nothing to do
//     when idle); the subscriber, blocked on the task cancellation channel
//     (a pub/sub connection, no CPU).
//
// The worker adds its task catalogue refresh every 30 s and, only when
// configured, its periodic-task scheduler and the web process (off here).
func BenchmarkIdleCost(b *testing.B) {
	if os.Getenv(idleEnv) != "1" {
		b.Skipf("set %s=1 to run (it takes minutes)", idleEnv)
	}
	if runtime.GOOS != "linux" {
		b.Skip("reads CPU times from /proc: Linux only")
	}
	if raceBuild() {
		b.Skip("a -race build's CPU figures mean nothing")
	}
	window := idleWindowFromEnv(b)
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	workerBin := proctest.BuildWorker(b)

	r := proctest.RedisServer(b)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	b.Cleanup(func() { rdb.Close() })
	redisPid := r.Proc().Pid()

	forgeqWorker := func(extra ...string) func(testing.TB, string) *proctest.Proc {
		return func(tb testing.TB, addr string) *proctest.Proc {
			env := append([]string{
				"REDIS_CONNECTION_URL=redis://" + addr,
				"HTTP_ADDR=off",
				"LOG_LEVEL=warn",
			}, extra...)
			return proctest.Start(tb, workerBin, env)
		}
	}
	variants := []idleVariant{
		{name: "forgeq", start: forgeqWorker()},
		{name: "forgeq-poll", start: forgeqWorker("WORKER_PICKUP=poll")},
		{name: "asynq", start: func(tb testing.TB, addr string) *proctest.Proc {
			return proctest.Start(tb, self, []string{rawAsynqEnv + "=" + addr})
		}},
	}

	loadStart := loadAvg(b)
	b.Logf("load average at start: %s; window %v", loadStart, window)
	alone := 100 * cpuOver(b, window, []int{redisPid}) // no client connected yet (rdb connects lazily)
	b.Logf("redis alone: %.3f%% of a core", alone)

	var results []idleResult
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("procs=%d", n), func(b *testing.B) {
			for _, v := range variants {
				b.Run("impl="+v.name, func(b *testing.B) {
					var res idleResult
					for range b.N {
						w, rd := measureIdle(b, v, n, r.Addr(), rdb, redisPid, window)
						res.workerTotal += w / float64(b.N)
						res.redis += rd / float64(b.N)
					}
					res.name, res.procs = v.name, n
					res.redisNetProc = (res.redis - alone) / float64(n)
					b.ReportMetric(res.workerTotal/float64(n), "worker-%core/proc")
					b.ReportMetric(res.workerTotal, "worker-%core")
					b.ReportMetric(res.redis, "redis-%core")
					b.ReportMetric(res.redisNetProc, "redis-%core/proc")
					// A sub-benchmark run again (-benchtime Nx, N > 1)
					// replaces its figures.
					results = slices.DeleteFunc(results, func(o idleResult) bool {
						return o.name == res.name && o.procs == res.procs
					})
					results = append(results, res)
				})
			}
		})
	}

	var t strings.Builder
	fmt.Fprintf(&t, "idle CPU in %% of one core over %v (redis alone %.3f%%):\n", window, alone)
	fmt.Fprintf(&t, "%-12s %5s %12s %12s %10s %15s\n", "impl", "procs", "worker/proc", "worker-sum", "redis", "redis-net/proc")
	for _, res := range results {
		fmt.Fprintf(&t, "%-12s %5d %12.3f %12.3f %10.3f %15.3f\n", res.name, res.procs,
			res.workerTotal/float64(res.procs), res.workerTotal, res.redis, res.redisNetProc)
	}
	fmt.Fprintf(&t, "load average at start: %s, at end: %s", loadStart, loadAvg(b))
	b.Log(t.String())
}

// measureIdle starts n processes of v on the Redis at addr, waits until all
// have registered with asynq and settled, and returns the CPU the processes
// (together) and redis-server (redisPid) used over window, each in percent
// of one core. It stops the processes and flushes Redis before it returns.
func measureIdle(tb testing.TB, v idleVariant, n int, addr string, rdb *redis.Client, redisPid int, window time.Duration) (workers, redisPct float64) {
	tb.Helper()
	procs := make([]*proctest.Proc, n)
	for i := range procs {
		procs[i] = v.start(tb, addr)
	}
	waitForServers(tb, rdb, procs)
	time.Sleep(idleSettle)

	pids := make([]int, n)
	for i, p := range procs {
		pids[i] = p.Pid()
	}
	before, redisBefore := cpuTime(tb, pids...), cpuTime(tb, redisPid)
	time.Sleep(window)
	after, redisAfter := cpuTime(tb, pids...), cpuTime(tb, redisPid)
	for _, p := range procs {
		if p.Exited() {
			tb.Fatalf("%s exited during the window:\n%s", p, p.Logs())
		}
	}

	for _, p := range procs {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			tb.Error(err)
		}
	}
	for _, p := range procs {
		if code, err := p.Wait(stopTimeout); err != nil || code != 0 {
			tb.Errorf("%s after SIGTERM: exit %d, %v\n%s", p, code, err, p.Logs())
		}
	}
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return 100 * (after - before).Seconds() / window.Seconds(),
		100 * (redisAfter - redisBefore).Seconds() / window.Seconds()
}

// waitForServers waits until asynq's set of live servers has one member per
// process (each asynq server writes its entry at start, then every 5 s).
func waitForServers(tb testing.TB, rdb *redis.Client, procs []*proctest.Proc) {
	tb.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		// Scores are expiry times: the live servers score above now.
		now := strconv.FormatInt(time.Now().Unix(), 10)
		live, err := rdb.ZCount(context.Background(), "asynq:servers", "("+now, "+inf").Result()
		if err == nil && live >= int64(len(procs)) {
			return
		}
		for _, p := range procs {
			if p.Exited() {
				tb.Fatalf("%s exited at start:\n%s", p, p.Logs())
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d asynq servers registered after %v (%v)", live, len(procs), startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuOver returns the share of one core the processes pids used together
// over the next d.
func cpuOver(tb testing.TB, d time.Duration, pids []int) float64 {
	tb.Helper()
	before := cpuTime(tb, pids...)
	time.Sleep(d)
	return (cpuTime(tb, pids...) - before).Seconds() / d.Seconds()
}

// cpuTime returns the CPU time, user and system, all threads, that the
// processes pids have used so far, from /proc/<pid>/stat.
func cpuTime(tb testing.TB, pids ...int) time.Duration {
	tb.Helper()
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			tb.Fatal(err)
		}
		// The command name, field 2, is in parentheses and may hold
		// spaces; utime and stime are fields 14 and 15, so the 12th and
		// 13th after it.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			tb.Fatalf("/proc/%d/stat: unexpected %q", pid, s)
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			tb.Fatalf("/proc/%d/stat: unexpected %q", pid, s)
		}
		for _, x := range f[11:13] {
			v, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				tb.Fatalf("/proc/%d/stat: %v", pid, err)
			}
			ticks += v
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// idleWindowFromEnv returns FORGEQ_IDLE_SECS as a duration, or idleWindow.
func idleWindowFromEnv(tb testing.TB) time.Duration {
	tb.Helper()
	s := os.Getenv(idleSecsEnv)
	if s == "" {
		return idleWindow
	}
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || secs <= 0 {
		tb.Fatalf("%s=%q: want a positive number of seconds", idleSecsEnv, s)
	}
	return time.Duration(secs * float64(time.Second))
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// raceBuild reports whether the test binary was built with -race (and so
// proctest builds the worker with it too).
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// runRawAsynq is the test binary's raw-asynq mode, BenchmarkIdleCost's
// baseline: an asynq server on the Redis at addr with asynq's defaults
// (queue default, TaskCheckInterval 1s, one worker goroutine per CPU), a
// handler that does nothing, and warnings only. It runs until SIGTERM or
// SIGINT and returns the exit code.
func runRawAsynq(addr string) int {
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: addr}, asynq.Config{LogLevel: asynq.WarnLevel})
	err := srv.Run(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	if err != nil && !errors.Is(err, asynq.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "raw asynq:", err)
		return 1
	}
	return 0
}
