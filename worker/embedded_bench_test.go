//go:build unix

package worker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/internal/redistest"
)

// embeddedBenchDB is the database of REDIS_TEST_URL BenchmarkEmbeddedRedis
// flushes and uses for redis=test.
const embeddedBenchDB = 30

// dashboardGets is how many times each dashboard route is timed.
const dashboardGets = 5

// BenchmarkEmbeddedRedis (issue 10) compares the Redis servers the worker
// can run on with many pending tasks: it enqueues tasks=N tasks into an
// empty Redis from enqueuers goroutines (enqueue-tasks/s), times the
// dashboard's queue_stats, queues and redis_info routes with all of them
// pending (median of dashboardGets, in ms), then drains them with a raw
// asynq server of Concurrency 10 (drain-tasks/s).
//
//	redis=miniredis-clockttl  the embedded Redis before issue 10: miniredis
//	                          with ClockTTL(true)
//	redis=miniredis           the fallback now (no redis-server on PATH)
//	redis=child               the embedded default now: a redis-server
//	                          child process (skipped when not installed)
//	redis=test                REDIS_TEST_URL, database 30 (skipped when unset)
//
// Run it with -benchtime 1x; see BENCHMARKS.md for the commands.
func BenchmarkEmbeddedRedis(b *testing.B) {
	servers := []struct {
		name  string
		start func(testing.TB) string // returns a redis:// URL
	}{
		{"miniredis-clockttl", func(tb testing.TB) string {
			mr := miniredis.NewMiniRedis()
			mr.ClockTTL(true)
			if err := mr.Start(); err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(mr.Close)
			return "redis://" + mr.Addr()
		}},
		{"miniredis", func(tb testing.TB) string {
			return "redis://" + benchEmbedded(tb, noRedisServer).Addr()
		}},
		{"child", func(tb testing.TB) string {
			if _, err := exec.LookPath(redisServerBin); err != nil {
				tb.Skip("redis-server is not on PATH")
			}
			return "redis://" + benchEmbedded(tb, exec.LookPath).Addr()
		}},
		{"test", func(tb testing.TB) string {
			url := redistest.URL(tb, embeddedBenchDB)
			if err := redisClient(tb, url).FlushDB(context.Background()).Err(); err != nil {
				tb.Fatal(err)
			}
			return url
		}},
	}
	for _, n := range []int{20000, 100000} {
		b.Run("tasks="+strconv.Itoa(n), func(b *testing.B) {
			for _, s := range servers {
				b.Run("redis="+s.name, func(b *testing.B) {
					for range b.N {
						embeddedBenchOnce(b, s.start(b), n)
					}
				})
			}
		})
	}
}

// benchEmbedded starts an embedded Redis on a free port, closed at cleanup.
func benchEmbedded(tb testing.TB, lookPath func(string) (string, error)) *embeddedRedis {
	tb.Helper()
	e, err := startEmbedded(context.Background(), "127.0.0.1:0", zap.NewNop(), lookPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	return e
}

// embeddedBenchOnce runs one round of BenchmarkEmbeddedRedis on url, an
// empty Redis, and reports its metrics.
func embeddedBenchOnce(b *testing.B, url string, n int) {
	rdb := redisClient(b, url)

	start := time.Now()
	enqueueAll(b, rdb, n)
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "enqueue-tasks/s")

	dash := httptest.NewServer(asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: benchConn{rdb}}))
	defer dash.Close()
	for _, route := range []string{"queue_stats", "queues", "redis_info"} {
		var took []time.Duration
		for range dashboardGets {
			t0 := time.Now()
			resp, err := http.Get(dash.URL + "/monitoring/api/" + route)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("GET %s: %s", route, resp.Status)
			}
			took = append(took, time.Since(t0))
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, route+"-ms")
	}

	srv := newThroughputServer(b, "raw", url)
	start = time.Now()
	srv.start(b)
	waitDrained(b, rdb)
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "drain-tasks/s")
	srv.shutdown()
}

// benchConn hands asynqmon an existing client, as the web process does.
type benchConn struct{ rdb *redis.Client }

// MakeRedisClient implements asynq.RedisConnOpt.
func (c benchConn) MakeRedisClient() any { return c.rdb }
