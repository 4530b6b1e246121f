package tasks_test

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// The manager satisfies what handlers need from a cache.
var _ tasks.Cache = (*cachemgr.Manager)(nil)

// unitBundle is what a handler test without a server needs: a manager on
// miniredis, the miniredis itself, and the debug logs of the handlers.
type unitBundle struct {
	mr   *miniredis.Miniredis
	m    *cachemgr.Manager
	logs *observer.ObservedLogs
	deps tasks.Deps
}

// setupUnit returns a fresh bundle; everything is closed in tb.Cleanup.
func setupUnit(tb testing.TB) *unitBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	core, logs := observer.New(zap.DebugLevel)
	return &unitBundle{mr: mr, m: m, logs: logs, deps: tasks.Deps{Cache: m, Logger: zap.New(core)}}
}

// handler returns the handler of typ from the default registry, bound to
// b's deps.
func (b *unitBundle) handler(tb testing.TB, typ string) asynq.Handler {
	tb.Helper()
	def, ok := tasks.Default().Lookup(typ)
	if !ok {
		tb.Fatalf("no task type %q in the default registry", typ)
	}
	return def.Handler(b.deps)
}
