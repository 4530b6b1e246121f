package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/web"
)

// TestFrozenRedisAnswers503Fast freezes a real redis-server (SIGSTOP: the
// kernel still accepts connections, nothing answers) under a server with
// rate limiting on, and sends one request of each kind that needs Redis.
// Each must get its 503 while Redis is still frozen: the rate limiter's
// call and the route's each take one socket timeout, and the freeze lasts
// 2.75, so a request that waited out the freeze, or for one more attempt
// on another of the pool's dead connections, fails the test. Nothing here
// measures time.
func TestFrozenRedisAnswers503Fast(t *testing.T) {
	t.Parallel()
	const socketTimeout = time.Second
	r := proctest.RedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), ReadTimeout: socketTimeout, WriteTimeout: socketTimeout, DialTimeout: socketTimeout, PoolSize: 64})
	t.Cleanup(func() { rdb.Close() })
	b := setupOn(t, nil, rdb, func(o *web.Options) {
		o.RateLimit = cachemgr.PerSecond(1000)
	})
	ctx := context.Background()
	if err := b.m.Set(ctx, "warm", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := b.send(t, req{Path: "/api/cache/warm"}); got.Status != http.StatusOK {
		t.Fatalf("GET /api/cache/warm before the freeze: %d %s", got.Status, got.Body)
	}
	proctest.WarmPool(t, rdb, 32) // as in a busy process

	requests := []req{
		{Path: "/api/cache/warm"},
		{Path: "/api/cache/cold"},
		{Path: "/health/redis"},
		{Path: "/health/ready"},
		{Method: http.MethodPost, Path: "/api/tasks/data:process", Header: jsonHeader,
			Body: `{"id":"frozen","payload":{"key":"frozen","work":1}}`},
		{Path: "/api/tasks/default/some-id"},
		{Method: http.MethodPost, Path: "/api/workflows", Header: jsonHeader,
			Body: `{"id":"frozen","workflow":{"type":"data:process","payload":{"key":"frozen","work":1}}}`},
		{Path: "/api/workflows/some-id"},
	}
	thawed := r.Pause(socketTimeout * 11 / 4)
	var wg sync.WaitGroup
	for _, q := range requests {
		wg.Go(func() {
			got := b.send(t, q)
			frozen := true
			select {
			case <-thawed:
				frozen = false
			default:
			}
			name := q.Method + " " + q.Path
			switch {
			case got.Status != http.StatusServiceUnavailable:
				t.Errorf("%s on a frozen Redis: %d %s, want 503", name, got.Status, got.Body)
			case !frozen:
				t.Errorf("%s on a frozen Redis: 503 only after Redis thawed", name)
			case strings.HasPrefix(q.Path, "/api/"):
				var e errorBody
				if err := json.Unmarshal(got.Body, &e); err != nil || e.Error.Code != "unavailable" {
					t.Errorf("%s on a frozen Redis: body %s, want error code unavailable", name, got.Body)
				}
			}
		})
	}
	wg.Wait()
	<-thawed
	// The rejected enqueue left nothing behind, and the server recovers.
	if n, err := rdb.Exists(ctx, "asynq:{default}:t:frozen", "forgeq:wf:{frozen}", "asynq:{default}:t:wf:frozen:0").Result(); err != nil || n != 0 {
		t.Errorf("task or workflow of the rejected enqueue and submission: %d exist, %v", n, err)
	}
	if got := b.send(t, req{Path: "/api/cache/warm"}); got.Status != http.StatusOK {
		t.Errorf("GET /api/cache/warm after the thaw: %d %s", got.Status, got.Body)
	}
}
