package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/metrics"
)

// A process builds one Metrics from its cache manager and an Inspector on
// the same client, puts TaskMiddleware on the worker's mux, and serves
// Handler behind HTTPMiddleware.
func Example() {
	mr, _ := miniredis.Run() // any Redis works here
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	cache, _ := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	defer cache.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)

	m, err := metrics.New(metrics.Options{Manager: cache, Inspector: insp})
	if err != nil {
		panic(err)
	}

	// The worker: tasks.NewMux(...) then mux.Use(m.TaskMiddleware()).
	mux := asynq.NewServeMux()
	mux.Use(m.TaskMiddleware())
	mux.HandleFunc("email:deliver", func(context.Context, *asynq.Task) error { return nil })
	_ = mux.ProcessTask(context.Background(), asynq.NewTask("email:deliver", nil))

	// Some cache traffic.
	ctx := context.Background()
	cache.Set(ctx, "user:1", "alice", 0)
	cache.Get(ctx, "user:1")
	cache.Get(ctx, "user:2")

	// The web process.
	web := http.NewServeMux()
	web.Handle("GET /metrics", m.Handler())
	srv := httptest.NewServer(m.HTTPMiddleware(nil)(web))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		for _, p := range []string{`forgeq_cache_hits_total{op="get"}`, `forgeq_cache_misses_total{op="get"}`, "forgeq_tasks_processed_total{"} {
			if strings.HasPrefix(line, p) {
				fmt.Println(line)
			}
		}
	}
	// Output:
	// forgeq_cache_hits_total{op="get"} 1
	// forgeq_cache_misses_total{op="get"} 1
	// forgeq_tasks_processed_total{queue="unknown",task_type="email:deliver"} 1
}
