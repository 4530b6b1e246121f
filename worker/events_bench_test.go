package worker

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// eventsBenchDB is BenchmarkEventsCost's real Redis database, which it
// flushes.
const eventsBenchDB = 45

// eventsTasks are enqueued before each BenchmarkEventsCost run: three times
// BenchmarkThroughput's, so that a run lasts seconds and the machine's
// noise averages out.
const eventsTasks = 3 * throughputTasks

// BenchmarkEventsCost measures what the task events cost the worker's
// throughput: BenchmarkThroughput's impl=forgeq (every config default but
// WORKER_CONCURRENCY=50; 60,000 pending cache:invalidate tasks) with
// WORKER_EVENTS=false and with its default, true, alternating in one run
// so that both see the same machine. Each b.N iteration runs both, off
// first on odd iterations and on first on even ones. It reports the
// throughput of each (off-tasks/s, on-tasks/s), the CPU time per task of
// this process and of Redis with events on and off, and cost-% = 100 x
// (1 - on/off), the throughput lost to the events, over all runs and as
// the median of the pairs (median-pair-cost-%). Each task publishes two
// events (started, succeeded), which the publisher writes packed, many
// to a stream entry; the stream's memory after a run (MEMORY USAGE) is
// reported as stream-bytes, with its entries (stream-entries): trimmed to
// about WORKER_EVENTS_MAX_LEN, what a busy queue's stream takes.
//
//	go test -run '^$' -bench EventsCost -benchtime 6x ./worker
func BenchmarkEventsCost(b *testing.B) {
	url := redistest.URL(b, eventsBenchDB)
	rdb := redisClient(b, url)
	var off, on throughputRun
	var streamBytes, entries float64
	var costs []float64 // per pair of runs, in %
	for i := range b.N {
		b.StopTimer()
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		var pair [2]time.Duration // off, on
		for _, evs := range order {
			r := eventsThroughputOnce(b, url, evs)
			if evs {
				on, pair[1] = on.add(r), r.elapsed
				key := events.StreamKey(benchQueue)
				mem, err := rdb.MemoryUsage(context.Background(), key, 0).Result()
				if err != nil {
					b.Fatal(err)
				}
				streamBytes, entries = float64(mem), float64(rdb.XLen(context.Background(), key).Val())
			} else {
				off, pair[0] = off.add(r), r.elapsed
			}
		}
		// Same number of tasks: the throughput ratio is the inverse
		// ratio of the times.
		costs = append(costs, 100*(1-pair[0].Seconds()/pair[1].Seconds()))
	}
	n := float64(b.N * eventsTasks)
	offRate, onRate := n/off.elapsed.Seconds(), n/on.elapsed.Seconds()
	slices.Sort(costs)
	b.ReportMetric(offRate, "off-tasks/s")
	b.ReportMetric(onRate, "on-tasks/s")
	b.ReportMetric(100*(1-onRate/offRate), "cost-%")
	b.ReportMetric(costs[len(costs)/2], "median-pair-cost-%")
	b.ReportMetric(float64(off.cpu.Microseconds())/n, "off-cpu-us/task")
	b.ReportMetric(float64(on.cpu.Microseconds())/n, "on-cpu-us/task")
	b.ReportMetric(float64(off.redisCPU.Microseconds())/n, "off-redis-cpu-us/task")
	b.ReportMetric(float64(on.redisCPU.Microseconds())/n, "on-redis-cpu-us/task")
	b.ReportMetric(streamBytes, "stream-bytes")
	b.ReportMetric(entries, "stream-entries")
	b.ReportMetric(0, "ns/op")
	b.Logf("cost %% per pair, sorted: %.1f", costs)
}

// add sums two runs.
func (r throughputRun) add(o throughputRun) throughputRun {
	return throughputRun{elapsed: r.elapsed + o.elapsed, cpu: r.cpu + o.cpu, redisCPU: r.redisCPU + o.redisCPU, calls: r.calls + o.calls}
}

// eventsThroughputOnce is throughputOnce for impl=forgeq with events on
// or off.
func eventsThroughputOnce(b *testing.B, url string, evs bool) throughputRun {
	ctx := context.Background()
	rdb := redisClient(b, url)
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	enqueueAll(b, rdb, eventsTasks)
	srv := newForgeqServer(b, url, map[string]string{
		"WORKER_CONCURRENCY": fmt.Sprint(throughputConcurrency),
		"WORKER_EVENTS":      fmt.Sprint(evs),
	}, tasks.CacheInvalidate)
	runtime.GC()
	cpu0, redis0 := processCPU(b), redisCPU(b, rdb)
	start := time.Now()
	srv.start(b)
	waitDrained(b, rdb)
	r := throughputRun{elapsed: time.Since(start)}
	r.cpu, r.redisCPU = processCPU(b)-cpu0, redisCPU(b, rdb)-redis0
	srv.shutdown() // flushes the last events
	if evs {
		if n := rdb.XLen(ctx, events.StreamKey(benchQueue)).Val(); n == 0 {
			b.Fatal("events on: no stream written")
		}
	} else if n := rdb.Exists(ctx, events.StreamKey(benchQueue)).Val(); n != 0 {
		b.Fatal("events off: a stream was written")
	}
	return r
}
