package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/web"
)

// BenchmarkCacheAsideHit compares the cache-aside route on a hit, with
// every layer (request id, access log to a no-op logger, error shaping,
// async manager), with a bare net/http handler calling go-redis directly,
// both on the test Redis, both under parallel load over loopback.
//
//	REDIS_TEST_URL=redis://127.0.0.1:16379 go test ./web -run '^$' -bench CacheAsideHit -cpu 8
func BenchmarkCacheAsideHit(b *testing.B) {
	opts, err := redis.ParseURL(redistest.URL(b, tasksDB))
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	b.Cleanup(func() { rdb.Close() })
	prefix := redistest.Prefix(b)
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{KeyPrefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		m.DeletePattern(context.Background(), "*")
		m.Close()
	})
	if err := m.Set(context.Background(), "hot", "value", 0); err != nil {
		b.Fatal(err)
	}

	srv, err := web.New(web.Options{Manager: m})
	if err != nil {
		b.Fatal(err)
	}
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		v, err := rdb.Get(r.Context(), prefix+key).Result()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"key": key, "data": v, "source": "cache"})
	})
	bareMux := http.NewServeMux()
	bareMux.Handle("GET /api/cache/{key}", bare)

	for _, bb := range []struct {
		name string
		h    http.Handler
	}{
		{"web", srv.Handler()},
		{"bare", bareMux},
	} {
		b.Run(bb.name, func(b *testing.B) {
			ts := httptest.NewServer(bb.h)
			defer ts.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			url := ts.URL + "/api/cache/hot"
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
