//go:build unix

package cachemgr_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
)

// BenchmarkCache compares the manager with raw go-redis on the same real
// Redis (REDIS_TEST_URL), in the same run, at 1 and 50 concurrent callers.
// BENCHMARKS.md has the figures and the command.
//
//	impl=raw      one go-redis call per operation
//	impl=manager  Manager.Get / Manager.Set
//	impl=async    Manager.GetAsync / SetAsync, each caller waiting for its Future
func BenchmarkCache(b *testing.B) {
	url := redistest.URL(b, dbCache)
	opts, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	raw := redis.NewClient(opts)
	defer raw.Close()
	mgrClient := redis.NewClient(opts)
	defer mgrClient.Close()
	m, err := cachemgr.NewFromClient(mgrClient, cachemgr.Options{KeyPrefix: redistest.Prefix(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		m.DeletePattern(ctx, "*")
		m.Close()
	}()
	const keys = 1000
	value := "a value of some sixty-four bytes, roughly what a cached row is.."
	for i := range keys {
		k := fmt.Sprint("bench:", i)
		if err := m.Set(ctx, k, value, 0); err != nil {
			b.Fatal(err)
		}
	}

	ops := map[string]map[string]func(i int) error{
		"get": {
			"raw":     func(i int) error { return raw.Get(ctx, m.Key(benchKey(i))).Err() },
			"manager": func(i int) error { _, err := m.Get(ctx, benchKey(i)); return err },
			"async":   func(i int) error { _, err := m.GetAsync(ctx, benchKey(i)).Wait(); return err },
		},
		"set": {
			"raw":     func(i int) error { return raw.Set(ctx, m.Key(benchKey(i)), value, cachemgr.DefaultTTL).Err() },
			"manager": func(i int) error { return m.Set(ctx, benchKey(i), value, 0) },
			"async":   func(i int) error { _, err := m.SetAsync(ctx, benchKey(i), value, 0).Wait(); return err },
		},
	}
	for _, op := range []string{"get", "set"} {
		for _, callers := range []int{1, 50} {
			for _, impl := range []string{"raw", "manager", "async"} {
				fn := ops[op][impl]
				b.Run(fmt.Sprintf("op=%s/callers=%d/impl=%s", op, callers, impl), func(b *testing.B) {
					before := m.Stats()
					runCallers(b, callers, fn)
					if impl == "async" {
						after := m.Stats()
						if n := after.Batches - before.Batches; n > 0 {
							b.ReportMetric(float64(after.BatchedCalls-before.BatchedCalls)/float64(n), "calls/pipeline")
						}
					}
				})
			}
		}
	}
}

func benchKey(i int) string { return benchKeys[i%len(benchKeys)] }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var benchKeys = func() []string {
	out := make([]string, 1000)
	for i := range out {
		out[i] = fmt.Sprint("bench:", i)
	}
	return out
}()

// runCallers runs fn b.N times spread over callers goroutines. Besides
// ns/op it reports cpu-ns/op, the process's CPU time (user + system) per
// operation, which other load on a shared machine disturbs far less than
// wall time.
func runCallers(b *testing.B, callers int, fn func(int) error) {
	b.ReportAllocs()
	before := cpuTime()
	defer func() {
		b.ReportMetric(float64((cpuTime()-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}()
	if callers == 1 {
		for i := 0; b.Loop(); i++ {
			if err := fn(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((callers + procs - 1) / procs)
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := fn(int(next.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
