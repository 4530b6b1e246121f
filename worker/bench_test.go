//go:build unix

// The benchmarks read the process's CPU time with getrusage, hence unix.

package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
)

// The worker benchmarks run against the real Redis of REDIS_TEST_URL, in
// its database benchDB, which they flush (TestRunRetriesAfterConfiguredDelay
// uses it too; flushedURL keeps them apart); they skip when it is unset. Each
// sub-benchmark runs its tasks once per b.N, so run them with -benchtime 1x.
// -count repeats each sub-benchmark back to back; to interleave impl=raw and
// impl=forgeq, repeat the whole command instead:
//
//	for i in 1 2 3 4 5; do
//		go test -run '^$' -bench 'Throughput|PickupLatency' -benchtime 1x -count 1 ./worker
//	done
const (
	benchDB    = 8
	benchType  = "bench:noop"
	benchQueue = "default"

	// throughputTasks are enqueued before each BenchmarkThroughput run.
	throughputTasks = 20000
	// throughputConcurrency is the asynq Concurrency of both servers in
	// BenchmarkThroughput, as in the peer benchmark
	// (../shared/bench/peers).
	throughputConcurrency = 50
	// enqueuers enqueue the throughput tasks concurrently.
	enqueuers = 32

	// pickupRate and pickupFor set BenchmarkPickupLatency's steady load.
	pickupRate = 200 // tasks per second
	pickupFor  = 10 * time.Second
	// idleFor is how long the server sits idle while its CPU is measured.
	idleFor = time.Second

	// benchTimeout bounds each wait for tasks to be processed.
	benchTimeout = 2 * time.Minute
)

// pickupPayload carries the time its task was enqueued.
type pickupPayload struct {
	EnqueuedNS int64 `json:"enqueued_ns"`
}

// BenchmarkThroughput measures how fast a server works through 20,000
// pending cache:invalidate tasks, each deleting one key: from Start until
// the queue shows none pending or active (tasks/s), and the CPU time used
// meanwhile per task, by this process (cpu-us/task) and by Redis
// (redis-cpu-us/task). It also counts the commands Redis ran per task
// (redis-calls/task, from INFO commandstats: what the clients sent, not
// the commands inside scripts). Both servers have Concurrency 50.
//
//	impl=raw     asynq.NewServerFromRedisClient with asynq's defaults (and a
//	             silent logger) serving the one queue "default", and an
//	             asynq.ServeMux whose handler decodes the payload and sends
//	             one DEL on a go-redis client of its own
//	impl=forgeq  the worker as users get it: config.Load defaults (queues
//	             critical=6,default=3,low=1, WORKER_PICKUP=events) but
//	             WORKER_CONCURRENCY, the cache manager's client under asynq
//	             with serverConfig and newPickup, newMux (tasks.NewMux:
//	             strict decode and a JSON log line per task, to io.Discard
//	             here; the task events and metrics middleware) over the
//	             built-in cache:invalidate type, and inflight
func BenchmarkThroughput(b *testing.B) {
	for _, impl := range []string{"raw", "forgeq"} {
		b.Run("impl="+impl, func(b *testing.B) {
			url := flushedURL(b, benchDB)
			rdb := redisClient(b, url)
			var elapsed, cpu, redis time.Duration
			var calls int64
			for range b.N {
				b.StopTimer()
				r := throughputOnce(b, impl, url, rdb)
				elapsed += r.elapsed
				cpu += r.cpu
				redis += r.redisCPU
				calls += r.calls
			}
			n := float64(b.N * throughputTasks)
			b.ReportMetric(n/elapsed.Seconds(), "tasks/s")
			b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-us/task")
			b.ReportMetric(float64(redis.Microseconds())/n, "redis-cpu-us/task")
			b.ReportMetric(float64(calls)/n, "redis-calls/task")
		})
	}
}

// throughputRun is one BenchmarkThroughput run's figures.
type throughputRun struct {
	elapsed, cpu, redisCPU time.Duration
	calls                  int64
}

// throughputOnce enqueues throughputTasks tasks, starts a server of impl
// with the timer running and returns how long the server took to process
// them and the CPU time this process and Redis used meanwhile. The timer
// is stopped on return.
func throughputOnce(b *testing.B, impl, url string, rdb *redis.Client) throughputRun {
	ctx := context.Background()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	enqueueAll(b, rdb, throughputTasks)

	srv := newThroughputServer(b, impl, url)
	runtime.GC() // not the setup's garbage on the clock
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}

	cpu0, redis0, polls0 := processCPU(b), redisCPU(b, rdb), drainPolls.Load()
	b.StartTimer()
	start := time.Now()
	srv.start(b)
	waitDrained(b, rdb)
	var r throughputRun
	r.elapsed = time.Since(start)
	b.StopTimer()
	r.cpu, r.redisCPU = processCPU(b)-cpu0, redisCPU(b, rdb)-redis0
	srv.shutdown()
	r.calls = commandCalls(b, rdb) - 2*(drainPolls.Load()-polls0)
	return r
}

// tracingOff is what telemetry.Setup returns with no OTEL_* variable set.
var tracingOff *telemetry.Provider

// newThroughputServer builds BenchmarkThroughput's server of impl.
func newThroughputServer(tb testing.TB, impl, url string) *benchServer {
	tb.Helper()
	if impl == "forgeq" {
		return newForgeqServer(tb, url, map[string]string{"WORKER_CONCURRENCY": fmt.Sprint(throughputConcurrency)},
			tasks.CacheInvalidate)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeInvalidate, func(ctx context.Context, t *asynq.Task) error {
		var p tasks.Invalidate
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("decode %s: %v: %w", t.Type(), err, asynq.SkipRetry)
		}
		return rdb.Del(ctx, "cache:"+p.Keys[0]).Err()
	})
	return &benchServer{
		srv: asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: throughputConcurrency,
			Queues:      map[string]int{benchQueue: 1},
			Logger:      asynqLogger{zap.NewNop().Sugar()},
		}),
		handler: mux,
		close:   func() { rdb.Close() },
	}
}

// commandCalls returns how many commands clients sent Redis since the
// last CONFIG RESETSTAT: INFO commandstats without the commands scripts
// ran (they have no separate count there, so those of the scripts asynq
// and forgeq run are estimated from the EVALSHA calls' own count: none).
func commandCalls(tb testing.TB, rdb *redis.Client) int64 {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		switch strings.TrimPrefix(name, "cmdstat_") {
		case "info", "config", "flushdb":
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			tb.Fatalf("commandstats %s: %v", line, err)
		}
		total += n
	}
	return total
}

// enqueueAll enqueues n cache:invalidate tasks of one key into benchQueue
// from enqueuers goroutines.
func enqueueAll(tb testing.TB, rdb *redis.Client, n int) {
	tb.Helper()
	client := asynq.NewClientFromRedisClient(rdb)
	var next atomic.Int64
	g, ctx := errgroup.WithContext(context.Background())
	for range enqueuers {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				t, err := tasks.CacheInvalidate.NewTask(tasks.Invalidate{Keys: []string{"bench:x"}}, asynq.Queue(benchQueue))
				if err != nil {
					return err
				}
				if _, err := client.EnqueueContext(ctx, t); err != nil {
					return fmt.Errorf("enqueue task %d: %w", i, err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
}

// drainPolls counts waitDrained's round trips (two commands each), which
// BenchmarkThroughput takes out of its command count.
var drainPolls atomic.Int64

// waitDrained waits until benchQueue has no pending or active task: asynq
// has marked every task done. It polls the two lists every millisecond.
func waitDrained(tb testing.TB, rdb *redis.Client) {
	tb.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(benchTimeout)
	for {
		var pending, active *redis.IntCmd
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			pending = p.LLen(ctx, "asynq:{"+benchQueue+"}:pending")
			active = p.LLen(ctx, "asynq:{"+benchQueue+"}:active")
			return nil
		})
		drainPolls.Add(1)
		if err != nil {
			tb.Fatal(err)
		}
		if pending.Val()+active.Val() == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("queue %s still has %d pending and %d active tasks after %v", benchQueue, pending.Val(), active.Val(), benchTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkPickupLatency enqueues tasks at a steady 200 per second for 10
// seconds into an idle server and reports the latency from just before
// each EnqueueContext call to its handler starting (p50-ms, p90-ms, p99-ms,
// max-ms), and before that the process's CPU use during one idle second
// with the server started (idle-cpu-%; the benchmark's own goroutines are
// idle then too) and Redis's (idle-redis-cpu-%). sent-tasks/s is the rate
// the enqueue loop achieved.
//
//	server=forgeq       the worker's construction with every config default:
//	                    WORKER_PICKUP=events (waits in Redis for a push),
//	                    queues critical=6,default=3,low=1, Concurrency one
//	                    per CPU
//	server=forgeq-poll  the same with WORKER_PICKUP=poll: asynq's polling
//	                    every WORKER_TASK_CHECK_INTERVAL (10ms), as before
//	server=asynq-1s     asynq.NewServerFromRedisClient with asynq's defaults:
//	                    TaskCheckInterval 1s, queue default, Concurrency one
//	                    per CPU
//
// The tasks go to the queue "default".
func BenchmarkPickupLatency(b *testing.B) {
	// Every default: nothing set in the environment or in asynq.Config.
	b.Run("server=forgeq", func(b *testing.B) { benchmarkPickup(b, "forgeq", nil, asynq.Config{}) })
	b.Run("server=forgeq-poll", func(b *testing.B) {
		benchmarkPickup(b, "forgeq", map[string]string{"WORKER_PICKUP": "poll"}, asynq.Config{})
	})
	b.Run("server=asynq-1s", func(b *testing.B) { benchmarkPickup(b, "raw", nil, asynq.Config{}) })
}

// benchmarkPickup is BenchmarkPickupLatency for one server; newBenchServer
// explains impl, env and rawCfg.
func benchmarkPickup(b *testing.B, impl string, env map[string]string, rawCfg asynq.Config) {
	url := flushedURL(b, benchDB)
	rdb := redisClient(b, url)
	lat := newLatencies(pickupRate * int(pickupFor/time.Second))
	onTask := func(p pickupPayload) { lat.add(time.Duration(time.Now().UnixNano() - p.EnqueuedNS)) }
	var (
		all          []time.Duration
		idleCPU      time.Duration
		idleRedisCPU time.Duration
		sent         int
		sentFor      time.Duration
	)
	for range b.N {
		b.StopTimer()
		if err := rdb.FlushDB(context.Background()).Err(); err != nil {
			b.Fatal(err)
		}
		lat.reset()
		srv := newBenchServer(b, impl, url, env, rawCfg, onTask)
		srv.start(b)

		// Let Start's first round of work pass, then measure an idle
		// second.
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		before, redisBefore := processCPU(b), redisCPU(b, rdb)
		time.Sleep(idleFor)
		idleCPU += processCPU(b) - before
		idleRedisCPU += redisCPU(b, rdb) - redisBefore

		b.StartTimer()
		n, took := enqueueSteady(b, rdb, pickupRate, pickupFor)
		lat.wait(b, n)
		b.StopTimer()
		srv.shutdown()

		sent += n
		sentFor += took
		all = append(all, lat.snapshot()...)
	}
	slices.Sort(all)
	for _, p := range []struct {
		unit string
		q    float64
	}{{"p50-ms", 0.50}, {"p90-ms", 0.90}, {"p99-ms", 0.99}, {"max-ms", 1}} {
		b.ReportMetric(ms(quantile(all, p.q)), p.unit)
	}
	b.ReportMetric(100*idleCPU.Seconds()/(float64(b.N)*idleFor.Seconds()), "idle-cpu-%")
	b.ReportMetric(100*idleRedisCPU.Seconds()/(float64(b.N)*idleFor.Seconds()), "idle-redis-cpu-%")
	b.ReportMetric(float64(sent)/sentFor.Seconds(), "sent-tasks/s")
}

// enqueueSteady enqueues pickupPayload tasks at rate per second for d,
// paced by a ticker at that rate: each tick enqueues the tasks due by then
// (one, or more to catch up after the loop was held up), each from its own
// goroutine so that a slow EnqueueContext call does not delay the next.
// Each payload carries the time just before its call. It returns how many
// tasks it enqueued and how long that took, until the last call returned.
func enqueueSteady(tb testing.TB, rdb *redis.Client, rate int, d time.Duration) (int, time.Duration) {
	tb.Helper()
	client := asynq.NewClientFromRedisClient(rdb)
	enqueue := func() error {
		payload, err := json.Marshal(pickupPayload{EnqueuedNS: time.Now().UnixNano()})
		if err != nil {
			return err
		}
		_, err = client.EnqueueContext(context.Background(), asynq.NewTask(benchType, payload, asynq.Queue(benchQueue)))
		return err
	}
	var g errgroup.Group
	total := int(int64(rate) * int64(d) / int64(time.Second))
	tick := time.NewTicker(time.Second / time.Duration(rate))
	start := time.Now()
	n := 0
	for now := range tick.C {
		due := min(total, int(int64(rate)*int64(now.Sub(start))/int64(time.Second)))
		for ; n < due; n++ {
			g.Go(enqueue)
		}
		if n == total {
			break
		}
	}
	tick.Stop()
	err := g.Wait()
	took := time.Since(start)
	if err != nil {
		tb.Fatal(err)
	}
	return n, took
}

// latencies collects the handler's measurements; safe for concurrent use.
type latencies struct {
	mu     sync.Mutex
	d      []time.Duration
	change chan struct{} // closed and replaced on each add
}

func newLatencies(capacity int) *latencies {
	return &latencies{d: make([]time.Duration, 0, capacity), change: make(chan struct{})}
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d = append(l.d, d)
	close(l.change)
	l.change = make(chan struct{})
}

func (l *latencies) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d = l.d[:0]
}

func (l *latencies) snapshot() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.d)
}

// wait waits until n latencies have been added.
func (l *latencies) wait(tb testing.TB, n int) {
	tb.Helper()
	timeout := time.After(benchTimeout)
	for {
		l.mu.Lock()
		got, change := len(l.d), l.change
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-change:
		case <-timeout:
			tb.Fatalf("%d of %d tasks picked up within %v", got, n, benchTimeout)
		}
	}
}

// quantile returns the q-quantile (nearest rank) of sorted, which must not
// be empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// processCPU returns the user and system CPU time the process has used.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU returns the CPU time (user + system) the Redis server behind rdb
// has used since it started, from INFO cpu: what an idle worker's polling
// costs on the server's side. The benchmark's Redis serves nothing else
// while it runs.
func redisCPU(tb testing.TB, rdb *redis.Client) time.Duration {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || (name != "used_cpu_sys" && name != "used_cpu_user") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			tb.Fatalf("INFO cpu %s: %v", name, err)
		}
		total += f
	}
	return time.Duration(total * float64(time.Second))
}

// benchServer is an asynq server and its handler, ready to start.
type benchServer struct {
	srv            *asynq.Server
	handler        asynq.Handler
	beforeShutdown func() // may be nil
	close          func()
	shutOnce       sync.Once
}

// newBenchServer builds a server of impl on the Redis at url whose handler
// decodes each benchType task's payload into a P and calls onTask with it.
//
// impl "raw" is asynq.NewServerFromRedisClient on a go-redis client of its
// own with rawCfg (asynq's log silenced) and an asynq.ServeMux.
//
// impl "forgeq" is what run builds, from config.Load's defaults overridden
// by env: the cache manager, its client under asynq with serverConfig, and
// newMux (tasks.NewMux and the metrics middleware) over a registry of one
// tasks.Define'd type, wrapped by inflight. The logger writes JSON to
// io.Discard. The web process and the scheduler are left out.
func newBenchServer[P any](tb testing.TB, impl, url string, env map[string]string, rawCfg asynq.Config, onTask func(P)) *benchServer {
	tb.Helper()
	switch impl {
	case "raw":
		opts, err := redis.ParseURL(url)
		if err != nil {
			tb.Fatal(err)
		}
		rdb := redis.NewClient(opts)
		rawCfg.Logger = asynqLogger{zap.NewNop().Sugar()}
		mux := asynq.NewServeMux()
		mux.HandleFunc(benchType, func(_ context.Context, t *asynq.Task) error {
			var p P
			if err := json.Unmarshal(t.Payload(), &p); err != nil {
				return fmt.Errorf("decode %s: %v: %w", t.Type(), err, asynq.SkipRetry)
			}
			onTask(p)
			return nil
		})
		return &benchServer{
			srv:     asynq.NewServerFromRedisClient(rdb, rawCfg),
			handler: mux,
			close:   func() { rdb.Close() },
		}

	case "forgeq":
		def := tasks.Define(benchType, "benchmark task: decode the payload and return",
			func(_ context.Context, _ tasks.Deps, p P) ([]byte, error) {
				onTask(p)
				return nil, nil
			})
		return newForgeqServer(tb, url, env, def)

	default:
		tb.Fatalf("unknown impl %q", impl)
		return nil
	}
}

// newForgeqServer is what run builds, from config.Load's defaults
// overridden by env: the cache manager, its client under asynq with
// serverConfig and newPickup, the task events publisher (WORKER_EVENTS),
// and newMux (tasks.NewMux, the events and metrics middleware) over a
// registry of types, wrapped by inflight. The logger
// writes JSON to io.Discard. The web process and the scheduler are left
// out.
func newForgeqServer(tb testing.TB, url string, env map[string]string, types ...tasks.Declared) *benchServer {
	tb.Helper()
	withURL := map[string]string{"REDIS_CONNECTION_URL": url}
	for k, v := range env {
		withURL[k] = v
	}
	cfg, err := config.Load(nil, func(k string) string { return withURL[k] })
	if err != nil {
		tb.Fatal(err)
	}
	logger, err := bootstrap.NewLogger(cfg.Log, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := cachemgr.New(bootstrap.ManagerOptions(cfg, url, logger))
	if err != nil {
		tb.Fatal(err)
	}
	reg, err := tasks.NewRegistry(types...)
	if err != nil {
		tb.Fatal(err)
	}
	// As run: the metrics share the manager's client through an
	// inspector, which only a scrape (none here) reads.
	x, err := metrics.New(metrics.Options{
		Manager:   m,
		Inspector: asynq.NewInspectorFromRedisClient(m.Client()),
		Logger:    logger.Named("metrics"),
	})
	if err != nil {
		tb.Fatal(err)
	}
	pk, err := newPickup(cfg, url, m.Client(), logger)
	if err != nil {
		tb.Fatal(err)
	}
	// Task events as run builds them (on by default; WORKER_EVENTS).
	var evs *events.Publisher
	if cfg.Worker.Events {
		evs = events.NewPublisher(m.Client(), events.PublisherOptions{MaxLen: int64(cfg.Worker.EventsMaxLen)})
	}
	return &benchServer{
		srv: asynq.NewServerFromRedisClient(m.Client(), serverConfig(cfg, logger)),
		// Outermost, as run builds it: the tracing middleware, off here
		// as with no OTEL_* variable set (the request id only).
		handler: newInflight(tracingOff.Middleware()(newMux(reg, tasks.Deps{Cache: m, Logger: logger}, x, evs, nil, nil, nil, nil, nil))),
		beforeShutdown: func() {
			if pk != nil {
				pk.Close()
			}
		},
		close: func() { evs.Close(); m.Close() },
	}
}

// start starts the server; cleanup shuts it down if the benchmark has not.
func (s *benchServer) start(tb testing.TB) {
	tb.Helper()
	tb.Cleanup(s.shutdown)
	if err := s.srv.Start(s.handler); err != nil {
		tb.Fatal(err)
	}
}

// shutdown stops the server, then closes its Redis client. Calls after the
// first do nothing.
func (s *benchServer) shutdown() {
	s.shutOnce.Do(func() {
		if s.beforeShutdown != nil {
			s.beforeShutdown()
		}
		s.srv.Shutdown()
		s.close()
	})
}
