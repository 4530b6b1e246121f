package web_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/web"
)

// This package owns databases 12, 13 and 22 of the test Redis.
const (
	tasksDB     = 12
	dashboardDB = 13
	sessionsDB  = 22 // TestSessionEndsWhenThePasswordChanges only
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

// setupFunc sets up a bundle with the options that the mods make.
type setupFunc func(tb testing.TB, mods ...func(*web.Options)) *testBundle

// onEachRedis runs body twice, as parallel subtests: "miniredis", where
// each setup starts a miniredis of its own, and "redis", on database db of
// the test Redis (flushed first; a failure under CI when there is none),
// where each setup's manager has a key prefix of its own. Expiry on the
// real Redis takes real time (testBundle.elapse), so bodies keep TTLs to a
// second or two.
//
// A test that calls it must not be parallel itself: it flushes db, which
// the package's parallel tests use too; they start only once every
// sequential test is done.
func onEachRedis(t *testing.T, db int, body func(t *testing.T, setup setupFunc)) {
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		body(t, func(tb testing.TB, mods ...func(*web.Options)) *testBundle {
			tb.Helper()
			return setup(tb, mods...)
		})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		rdb := realRedis(t, db)
		body(t, func(tb testing.TB, mods ...func(*web.Options)) *testBundle {
			tb.Helper()
			return setupPrefixed(tb, nil, rdb, redistest.Prefix(tb), mods...)
		})
	})
}
