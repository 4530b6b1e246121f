package worker

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// archiveLike stands in for asynq v0.26's archive script: the same keys
// and arguments, and what matters of its effect.
const archiveLike = `
redis.call("LREM", KEYS[2], 0, ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "archived")
return redis.status_reply("OK")
`

// archive calls archiveLike on rdb as asynq's RDB.Archive calls its script.
func archive(t *testing.T, rdb redis.UniversalClient, queue, id string, now time.Time) {
	t.Helper()
	qk := "asynq:{" + queue + "}:"
	keys := []string{qk + "t:" + id, qk + "active", qk + "lease", qk + "archived",
		qk + "processed:d", qk + "failed:d", qk + "processed", qk + "failed", qk + "t:"}
	err := redis.NewScript(archiveLike).Run(context.Background(), rdb, keys,
		id, "encoded", now.Unix(), now.Add(-time.Hour).Unix(), 10000, now.Add(time.Hour).Unix(), int64(math.MaxInt64)).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// A task postponed on its last attempt is retried, due when its
// postponement ends, instead of archived; any other archive is left alone.
func TestLastAttemptsRetryInsteadOfArchive(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	last := &lastAttempts{}
	rdb.AddHook(last.hook())

	now := time.Now()
	for _, id := range []string{"postponed", "failed"} {
		mr.Lpush("asynq:{q}:active", id)
		if _, err := mr.ZAdd("asynq:{q}:lease", float64(now.Unix()), id); err != nil {
			t.Fatal(err)
		}
		mr.HSet("asynq:{q}:t:"+id, "state", "active")
	}
	last.note("postponed", 3*time.Second, now)
	archive(t, rdb, "q", "postponed", now)
	archive(t, rdb, "q", "failed", now)

	if s := mr.HGet("asynq:{q}:t:postponed", "state"); s != "retry" {
		t.Errorf("postponed task state %q, want retry", s)
	}
	if score, err := mr.ZScore("asynq:{q}:retry", "postponed"); err != nil || int64(score) != now.Add(3*time.Second).Unix() {
		t.Errorf("postponed task due at %v (%v), want %d", score, err, now.Add(3*time.Second).Unix())
	}
	if mr.Exists("asynq:{q}:archived") {
		if m, _ := mr.ZMembers("asynq:{q}:archived"); len(m) != 1 || m[0] != "failed" {
			t.Errorf("archived %v, want only the failed task", m)
		}
	}
	if s := mr.HGet("asynq:{q}:t:failed", "state"); s != "archived" {
		t.Errorf("failed task state %q, want archived", s)
	}
	if active, _ := mr.List("asynq:{q}:active"); len(active) != 0 {
		t.Errorf("active %v, want empty", active)
	}
	// The note is used once.
	if _, ok := last.due.Load("postponed"); ok {
		t.Error("note kept after its archive")
	}
}
