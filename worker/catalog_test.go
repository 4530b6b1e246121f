package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/tasks"
)

func TestWorkerID(t *testing.T) {
	t.Parallel()
	a, b := workerID(), workerID()
	parts := strings.Split(a, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || len(parts[2]) != 6 {
		t.Errorf("worker id %q, want host/pid/6 hex digits", a)
	}
	if a == b {
		t.Errorf("two worker ids are both %q", a)
	}
}

// waitLog waits until logs has an entry with msg and returns it.
func waitLog(tb testing.TB, logs *observer.ObservedLogs, msg string) observer.LoggedEntry {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if es := logs.FilterMessage(msg).All(); len(es) > 0 {
			return es[0]
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no log %q within 10s; logs: %v", msg, logs.All())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPublisher: a first publish that fails (here: the catalogue's key
// holds something else, as a refused ACL would fail it) is a warning, and
// the next refresh publishes; refreshes keep the entries; at the end the
// worker withdraws and the types stay.
func TestPublisher(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	core, logs := observer.New(zapcore.DebugLevel)
	p := newPublisher(rdb, tasks.Default(), map[string]int{"default": 1}, zap.New(core))
	p.refresh = 20 * time.Millisecond
	ctx := context.Background()

	if err := rdb.Set(ctx, tasks.CatalogTypesKey, "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	p.publish(ctx)
	warn := waitLog(t, logs, "task catalogue not written; producers without these types cannot validate them until it is "+
		"(a Redis ACL user needs ~forgeq:*); retrying every refresh")
	if warn.Level != zapcore.WarnLevel {
		t.Errorf("level %v, want warn", warn.Level)
	}

	runCtx, stop := context.WithCancel(ctx)
	started := make(chan struct{})
	close(started)
	done := make(chan error, 1)
	go func() { done <- p.run(runCtx, started) }()
	rdb.Del(ctx, tasks.CatalogTypesKey)
	published := waitLog(t, logs, "task types published")
	fields := published.ContextMap()
	if diff := cmp.Diff([]any{"cache:invalidate", "cache:warm", "data:process"}, fields["task_types"]); diff != "" {
		t.Errorf("task_types (-want +got):\n%s", diff)
	}
	if fields["worker_id"] != p.w.ID {
		t.Errorf("worker_id = %v, want %q", fields["worker_id"], p.w.ID)
	}
	unserved := logs.FilterMessage("task type's default queue is not among this worker's queues (WORKER_QUEUES): tasks enqueued there wait for another worker").All()
	if len(unserved) != 1 || unserved[0].ContextMap()["task_type"] != tasks.TypeWarm {
		t.Errorf("unserved warnings %v, want one for cache:warm", unserved)
	}

	// A refresh publishes a type deleted meanwhile again.
	rdb.HDel(ctx, tasks.CatalogTypesKey, tasks.TypeWarm)
	deadline := time.Now().Add(10 * time.Second)
	for !rdb.HExists(ctx, tasks.CatalogTypesKey, tasks.TypeWarm).Val() {
		if time.Now().After(deadline) {
			t.Fatal("the refresh did not publish cache:warm again")
		}
		time.Sleep(5 * time.Millisecond)
	}

	stop()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	waitLog(t, logs, "task types withdrawn")
	for _, typ := range tasks.Default().Types() {
		if n := rdb.ZCard(ctx, tasks.CatalogWorkersPrefix+typ).Val(); n != 0 {
			t.Errorf("%s: %d workers after the withdrawal, want 0", typ, n)
		}
		if !rdb.HExists(ctx, tasks.CatalogTypesKey, typ).Val() {
			t.Errorf("%s: no longer published after the withdrawal", typ)
		}
	}
}

// TestPublisherNeverStarted: when the server never started, run returns
// without touching Redis.
func TestPublisherNeverStarted(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	p := newPublisher(rdb, tasks.Default(), nil, zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.run(ctx, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if n := logs.Len(); n != 0 {
		t.Errorf("%d log entries, want none: %v", n, logs.All())
	}
}
