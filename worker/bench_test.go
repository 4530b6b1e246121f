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
	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
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
	// BenchmarkThroughput.
	throughputConcurrency = 10
	// enqueuers enqueue the throughput tasks concurrently.
	enqueuers = 32

	// pickupRate and pickupFor set BenchmarkPickupLatency's steady load.
	pickupRate = 1000 // tasks per second
	pickupFor  = 5 * time.Second
	// idleFor is how long the server sits idle while its CPU is measured.
	idleFor = time.Second

	// benchTimeout bounds each wait for tasks to be processed.
	benchTimeout = 2 * time.Minute
)

// throughputPayload is the tiny payload of BenchmarkThroughput's tasks.
type throughputPayload struct {
	Seq int `json:"seq"`
}

// pickupPayload carries the time its task was enqueued.
type pickupPayload struct {
	EnqueuedNS int64 `json:"enqueued_ns"`
}

// BenchmarkThroughput measures how fast a server works through 20,000
// pending tasks whose handler decodes a tiny JSON payload and returns: from
// Start until the handler has run for every task and the queue shows none
// pending or active (tasks/s), and the CPU time the process used meanwhile
// per task (cpu-us/task; Redis's is not in it). Both servers have
// Concurrency 10 and serve the one queue the tasks are in.
//
//	impl=raw     asynq.NewServerFromRedisClient with asynq's defaults (and a
//	             silent logger), an asynq.ServeMux and a plain json.Unmarshal
//	impl=forgeq  the worker's construction: config.Load defaults, the cache
//	             manager's client, serverConfig, newMux (tasks.NewMux: strict
//	             decode and a JSON log line per task, to io.Discard here; the
//	             metrics middleware) and inflight
func BenchmarkThroughput(b *testing.B) {
	for _, impl := range []string{"raw", "forgeq"} {
		b.Run("impl="+impl, func(b *testing.B) {
			url := flushedURL(b, benchDB)
			rdb := redisClient(b, url)
			var elapsed, cpu time.Duration
			for range b.N {
				b.StopTimer()
				e, c := throughputOnce(b, impl, url, rdb)
				elapsed += e
				cpu += c
			}
			n := float64(b.N * throughputTasks)
			b.ReportMetric(n/elapsed.Seconds(), "tasks/s")
			b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-us/task")
		})
	}
}

// throughputOnce enqueues throughputTasks tasks, starts a server of impl
// with the timer running and returns how long the server took to process
// them and the CPU time this process used meanwhile. The timer is stopped
// on return.
func throughputOnce(b *testing.B, impl, url string, rdb *redis.Client) (elapsed, cpu time.Duration) {
	ctx := context.Background()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	enqueueAll(b, rdb, throughputTasks)

	var processed atomic.Int64
	done := make(chan struct{})
	onTask := func(throughputPayload) {
		if processed.Add(1) == throughputTasks {
			close(done)
		}
	}
	srv := newBenchServer(b, impl, url, map[string]string{
		"WORKER_CONCURRENCY": fmt.Sprint(throughputConcurrency),
		"WORKER_QUEUES":      benchQueue + "=1",
	}, asynq.Config{
		Concurrency: throughputConcurrency,
		Queues:      map[string]int{benchQueue: 1},
	}, onTask)
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	runtime.GC() // not the setup's garbage on the clock

	cpu0 := processCPU(b)
	b.StartTimer()
	start := time.Now()
	srv.start(b)
	select {
	case <-done:
	case <-time.After(benchTimeout):
		b.Fatalf("%d of %d tasks processed within %v", processed.Load(), throughputTasks, benchTimeout)
	}
	waitDrained(b, inspector)
	elapsed = time.Since(start)
	b.StopTimer()
	cpu = processCPU(b) - cpu0

	srv.shutdown()
	return elapsed, cpu
}

// enqueueAll enqueues n tasks of benchType into benchQueue from enqueuers
// goroutines.
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
				payload, err := json.Marshal(throughputPayload{Seq: i})
				if err != nil {
					return err
				}
				if _, err := client.EnqueueContext(ctx, asynq.NewTask(benchType, payload, asynq.Queue(benchQueue))); err != nil {
					return fmt.Errorf("enqueue task %d: %w", i, err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
}

// waitDrained waits until benchQueue has no pending or active task: asynq
// has marked every task done.
func waitDrained(tb testing.TB, in *asynq.Inspector) {
	tb.Helper()
	deadline := time.Now().Add(benchTimeout)
	for {
		q, err := in.GetQueueInfo(benchQueue)
		if err != nil {
			tb.Fatal(err)
		}
		if q.Pending+q.Active == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("queue %s still has %d pending and %d active tasks after %v", benchQueue, q.Pending, q.Active, benchTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkPickupLatency enqueues tasks at a steady 1,000 per second for 5
// seconds into an idle server and reports the latency from just before
// each EnqueueContext call to its handler starting (p50-ms, p90-ms, p99-ms,
// max-ms), and before that the process's CPU use during one idle second
// with the server started (idle-cpu-%; the benchmark's own goroutines are
// idle then too). sent-tasks/s is the rate the enqueue loop achieved.
//
//	server=forgeq    the worker's construction with every config default:
//	                 TaskCheckInterval 10ms, queues critical=6,default=3,low=1,
//	                 Concurrency one per CPU
//	server=asynq-1s  asynq.NewServerFromRedisClient with asynq's defaults:
//	                 TaskCheckInterval 1s, queue default, Concurrency one per CPU
//
// The tasks go to the queue "default".
func BenchmarkPickupLatency(b *testing.B) {
	// Every default: nothing set in the environment or in asynq.Config.
	b.Run("server=forgeq", func(b *testing.B) { benchmarkPickup(b, "forgeq", nil, asynq.Config{}) })
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
	srv      *asynq.Server
	handler  asynq.Handler
	close    func()
	shutOnce sync.Once
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
		def := tasks.Define(benchType, "benchmark task: decode the payload and return",
			func(_ context.Context, _ tasks.Deps, p P) ([]byte, error) {
				onTask(p)
				return nil, nil
			})
		reg, err := tasks.NewRegistry(def)
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
		return &benchServer{
			srv:     asynq.NewServerFromRedisClient(m.Client(), serverConfig(cfg, logger)),
			handler: newInflight(newMux(reg, tasks.Deps{Cache: m, Logger: logger}, x, nil, nil)),
			close:   func() { m.Close() },
		}

	default:
		tb.Fatalf("unknown impl %q", impl)
		return nil
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
		s.srv.Shutdown()
		s.close()
	})
}
