package faults

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// The soaks run soakRounds rounds of soakRound small data:process tasks
// each, half of them on keys already cached, and sample after each round.
const (
	soakRounds = 5
	soakRound  = 1000
	soakKeys   = soakRounds * soakRound / 2
	soakWork   = 500
)

// soakPayload is the payload of task k of a soak.
func soakPayload(prefix string, k int) tasks.ProcessData {
	return tasks.ProcessData{Key: fmt.Sprintf("%s:%d", prefix, k%soakKeys), Work: soakWork}
}

// TestSoakInProcess runs 5,000 tasks through an asynq server with
// tasks.NewMux on a cachemgr.Manager, in the test process: goroutines,
// pool connections, Redis clients and the heap stay flat from the first
// thousand to the last, and nothing is left running after shutdown.
//
// It does not call t.Parallel: it runs alone, before the parallel tests
// start, so that the goroutine counts and goleak see only its own.
func TestSoakInProcess(t *testing.T) {
	_, url := secureRedis(t)
	admin := newAdmin(t, url)
	// From here on, every goroutine is the soak's.
	ignore := goleak.IgnoreCurrent()

	const poolSize = 16
	m, err := cachemgr.New(cachemgr.Options{URL: url, PoolSize: poolSize})
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	srv := asynq.NewServerFromRedisClient(m.Client(), asynq.Config{
		Concurrency:       10,
		Queues:            map[string]int{"default": 1},
		ShutdownTimeout:   8 * time.Second,
		TaskCheckInterval: 10 * time.Millisecond,
		Logger:            asynqLogger{log.Named("asynq").Sugar()},
		LogLevel:          asynq.WarnLevel,
	})
	mux := tasks.NewMux(tasks.Default(), tasks.Deps{Cache: m, Logger: log})
	var done, failed atomic.Int64
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		err := mux.ProcessTask(ctx, task)
		if err != nil {
			failed.Add(1)
		} else {
			done.Add(1)
		}
		return err
	})); err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(m.Client())
	in := asynq.NewInspectorFromRedisClient(m.Client())

	type sample struct {
		goroutines, poolConns, redisClients int
		heap                                uint64
		took                                time.Duration
	}
	var samples []sample
	start := time.Now()
	for round := range soakRounds {
		roundStart := time.Now()
		enqueueConcurrently(t, soakRound, func(i int) {
			task, err := tasks.NewProcessDataTask(soakPayload("soak", round*soakRound+i))
			if err == nil {
				_, err = client.EnqueueContext(context.Background(), task)
			}
			if err != nil {
				t.Error(err)
			}
		})
		want := int64((round + 1) * soakRound)
		if !waitUntil(2*time.Minute, 10*time.Millisecond, func() bool {
			q, err := in.GetQueueInfo("default")
			return done.Load()+failed.Load() >= want && err == nil && q.Active == 0 && q.Pending == 0
		}) {
			t.Fatalf("round %d: %d done, %d failed after 2m, want %d", round+1, done.Load(), failed.Load(), want)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		samples = append(samples, sample{
			goroutines:   runtime.NumGoroutine(),
			poolConns:    int(m.Client().PoolStats().TotalConns),
			redisClients: clientCount(t, admin),
			heap:         ms.HeapAlloc,
			took:         time.Since(roundStart),
		})
	}
	total := time.Since(start)
	for i, s := range samples {
		t.Logf("after %5d tasks: %4d goroutines, %2d pool connections (pool size %d), %2d Redis clients, heap %5.1f MiB, round took %v",
			(i+1)*soakRound, s.goroutines, s.poolConns, poolSize, s.redisClients, float64(s.heap)/(1<<20), s.took.Round(time.Millisecond))
	}
	t.Logf("%d tasks in %v (%.0f/s), %d failed", done.Load()+failed.Load(), total.Round(time.Millisecond),
		float64(done.Load()+failed.Load())/total.Seconds(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d tasks failed", failed.Load())
	}
	first, last := samples[0], samples[len(samples)-1]
	if last.goroutines > first.goroutines+10 {
		t.Errorf("goroutines grew from %d to %d", first.goroutines, last.goroutines)
	}
	if last.poolConns > first.poolConns+2 || last.poolConns > poolSize {
		t.Errorf("pool connections grew from %d to %d (pool size %d)", first.poolConns, last.poolConns, poolSize)
	}
	if last.redisClients > first.redisClients+2 {
		t.Errorf("Redis clients grew from %d to %d", first.redisClients, last.redisClients)
	}
	if limit := first.heap + max(16<<20, first.heap/2); last.heap > limit {
		t.Errorf("heap grew from %d to %d bytes", first.heap, last.heap)
	}

	srv.Shutdown()
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	goleak.VerifyNone(t, ignore)
}

// TestSoakWorker runs 5,000 tasks through a worker process: its
// goroutines, its sockets, the Redis clients and its resident memory stay
// flat (the memory after the first thousand tasks, its warm-up).
func TestSoakWorker(t *testing.T) {
	t.Parallel()

	_, url := secureRedis(t)
	admin := newAdmin(t, url)
	in := asynq.NewInspectorFromRedisClient(admin)
	w := startWorker(t, url, "WORKER_CONCURRENCY=10", "WORKER_QUEUES=default=1")

	type sample struct {
		goroutines, sockets, redisClients int
		rss                               int64
		took                              time.Duration
	}
	var samples []sample
	start := time.Now()
	for round := range soakRounds {
		roundStart := time.Now()
		lines := make([]fileTask, soakRound)
		for i := range lines {
			k := round*soakRound + i
			lines[i] = fileTask{ID: fmt.Sprintf("soak-%d", k), Payload: soakPayload("soakw", k)}
		}
		enqueueFile(t, url, lines)
		want := (round + 1) * soakRound
		var q *asynq.QueueInfo
		if !waitUntil(3*time.Minute, 50*time.Millisecond, func() bool {
			var err error
			q, err = in.GetQueueInfo("default")
			return err == nil && q.Completed+q.Archived+q.Retry >= want && q.Active == 0 && q.Pending == 0
		}) {
			t.Fatalf("round %d: queue %+v after 3m, want %d completed", round+1, q, want)
		}
		if q.Archived+q.Retry != 0 {
			t.Errorf("round %d: %d archived, %d to retry", round+1, q.Archived, q.Retry)
		}
		samples = append(samples, sample{
			goroutines:   metric(t, w.base, "go_goroutines"),
			sockets:      sockets(t, w.Pid()),
			redisClients: clientCount(t, admin),
			rss:          rss(t, w.Pid()),
			took:         time.Since(roundStart),
		})
	}
	total := time.Since(start)
	for i, s := range samples {
		t.Logf("after %5d tasks: %4d goroutines, %2d sockets, %2d Redis clients, RSS %5.1f MiB, round took %v",
			(i+1)*soakRound, s.goroutines, s.sockets, s.redisClients, float64(s.rss)/(1<<20), s.took.Round(time.Millisecond))
	}
	t.Logf("%d tasks in %v (%.0f/s, enqueue included)", soakRounds*soakRound, total.Round(time.Millisecond),
		float64(soakRounds*soakRound)/total.Seconds())
	first, last := samples[0], samples[len(samples)-1]
	if last.goroutines > first.goroutines+20 {
		t.Errorf("goroutines grew from %d to %d", first.goroutines, last.goroutines)
	}
	if last.sockets > first.sockets+3 {
		t.Errorf("sockets grew from %d to %d", first.sockets, last.sockets)
	}
	if last.redisClients > first.redisClients+3 {
		t.Errorf("Redis clients grew from %d to %d", first.redisClients, last.redisClients)
	}
	// Generous: a -race binary's memory moves in large steps.
	if limit := first.rss + max(64<<20, first.rss/2); last.rss > limit {
		t.Errorf("RSS grew from %d to %d bytes after warm-up", first.rss, last.rss)
	}
	l := readLedger(t, w.Proc)
	if n := l.count(msgDone); n != soakRounds*soakRound {
		t.Errorf("%d tasks logged done, want %d", n, soakRounds*soakRound)
	}
	l.checkNoOverlap(t)
	if code := w.stop(t, 30*time.Second); code != 0 {
		t.Errorf("worker exited %d after SIGTERM, want 0", code)
	}
}

// enqueueConcurrently calls enqueue(i) for i in [0, n) from 16 goroutines.
func enqueueConcurrently(t *testing.T, n int, enqueue func(i int)) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				enqueue(i)
			}
		})
	}
	wg.Wait()
}

// newAdmin returns a client of its own for the test's looks at Redis, with
// one connection, so that it counts as one Redis client; it is closed at
// cleanup.
func newAdmin(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	o.PoolSize = 1
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// clientCount returns how many clients the Redis server has, from CLIENT
// LIST.
func clientCount(t *testing.T, admin *redis.Client) int {
	t.Helper()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(strings.TrimSpace(list), "\n") + 1
}

// metric returns the value of a gauge without labels from the worker's
// /metrics.
func metric(t *testing.T, base, name string) int {
	t.Helper()
	res := get(base+"/metrics", 10*time.Second)
	if res.err != nil {
		t.Fatal(res.err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(res.body)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(f)
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// rss returns the resident memory of process pid, in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// sockets returns how many sockets process pid has open.
func sockets(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(dir + "/" + fd.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}
