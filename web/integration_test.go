package web_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
)

// This package owns databases 12 and 13 of the test Redis.
const (
	tasksDB     = 12
	dashboardDB = 13
)

// realRedis returns a client on db of the test Redis, flushed, or skips
// the test when there is none (fails under CI).
func realRedis(tb testing.TB, db int) redis.UniversalClient {
	tb.Helper()
	opts, err := redis.ParseURL(redistest.URL(tb, db))
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	tb.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return rdb
}

func TestIntegrationEnqueueAndComplete(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t, tasksDB)
	b := setupOn(t, nil, rdb)
	startWorker(t, rdb, b.m)
	testEnqueueAndComplete(t, b)
}

func TestIntegrationDashboard(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t, dashboardDB)
	b := setupOn(t, nil, rdb, withAuth)
	testDashboard(t, b, b.login(t))

	// asynqmon's Redis info works on the shared client.
	resp := b.send(t, req{Path: "/monitoring/api/redis_info", User: testUser, Pass: testPass})
	if resp.Status != http.StatusOK {
		t.Errorf("GET /monitoring/api/redis_info: status %d: %s", resp.Status, resp.Body)
	}
}
