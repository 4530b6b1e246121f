package worker

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/internal/proctest"
)

// TestRedisLog: go-redis's messages become zap warnings, at most one per
// kind of message per redisLogEvery, the next one counting those dropped.
func TestRedisLog(t *testing.T) {
	t.Parallel()

	core, logs := observer.New(zapcore.DebugLevel)
	now := time.Unix(1e9, 0)
	l := newRedisLog(func() time.Time { return now })
	l.route(zap.New(core))

	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for range 3 {
		l.Printf(context.Background(), dial, 5, "connection refused")
	}
	l.Printf(context.Background(), "sentinel: new master=%q addr=%q", "m", "h:1")
	now = now.Add(redisLogEvery)
	l.Printf(context.Background(), dial, 5, "connection refused")

	type line struct {
		Level      zapcore.Level
		Message    string
		Suppressed int64
	}
	var got []line
	for _, e := range logs.All() {
		n, _ := e.ContextMap()["suppressed"].(int64)
		got = append(got, line{e.Level, e.ContextMap()["redis_message"].(string), n})
	}
	want := []line{
		{zapcore.WarnLevel, "connection pool: failed to dial after 5 attempts: connection refused", 0},
		{zapcore.WarnLevel, `sentinel: new master="m" addr="h:1"`, 0},
		{zapcore.WarnLevel, "connection pool: failed to dial after 5 attempts: connection refused", 2},
	}
	if len(got) != len(want) {
		t.Fatalf("logged %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}

	// With no worker running, the messages go nowhere, not to stderr.
	l.route(nil)
	l.Printf(context.Background(), "other %d", 1)
	if n := logs.Len(); n != 3 {
		t.Errorf("%d lines after route(nil), want 3", n)
	}
}

// TestBinaryRedisOutageLogsJSON: when Redis goes away under a running
// worker with LOG_FORMAT=json, every line on stderr is still a JSON log
// line: go-redis's own complaints go through zap.
func TestBinaryRedisOutageLogsJSON(t *testing.T) {
	t.Parallel()

	r := proctest.RedisServer(t)
	p := proctest.Start(t, proctest.BuildWorker(t), []string{
		"REDIS_CONNECTION_URL=" + r.URL(), "HTTP_ADDR=off", "LOG_FORMAT=json", "WORKER_SHUTDOWN_TIMEOUT=1s",
	})
	if !p.WaitForLog(`"worker started"`, 30*time.Second) {
		t.Fatalf("worker did not start:\n%s", p.Logs())
	}
	r.Stop()
	if !p.WaitForLog("failed to dial", 20*time.Second) {
		t.Errorf("no go-redis dial failure logged within 20s of the outage")
	}
	time.Sleep(2 * time.Second)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(strings.TrimRight(p.Stderr(), "\n"), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("stderr line %d is not JSON: %q", i+1, line)
		}
	}
}
