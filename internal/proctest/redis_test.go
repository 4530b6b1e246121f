package proctest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
)

// client returns a go-redis client for url with short timeouts and no
// retries, closed at cleanup.
func client(tb testing.TB, url string) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	opts.MaxRetries = -1
	opts.DialTimeout = 300 * time.Millisecond
	opts.ReadTimeout = 300 * time.Millisecond
	opts.WriteTimeout = 300 * time.Millisecond
	c := redis.NewClient(opts)
	tb.Cleanup(func() { c.Close() })
	return c
}

func TestFreePort(t *testing.T) {
	t.Parallel()

	a, b := proctest.FreePort(t), proctest.FreePort(t)
	if a <= 0 || b <= 0 {
		t.Fatalf("FreePort: %d, %d", a, b)
	}
}

func TestRedisServerStopStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	r := proctest.RedisServer(t, "--maxmemory", "10mb")
	if want := fmt.Sprintf("redis://127.0.0.1:%d", r.Port()); r.URL() != want {
		t.Errorf("URL() = %q, want %q", r.URL(), want)
	}
	c := client(t, r.URL())
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := c.ConfigGet(ctx, "maxmemory").Val()["maxmemory"]; got != "10485760" {
		t.Errorf("maxmemory %q, want the extra argument's 10485760", got)
	}
	if got := c.ConfigGet(ctx, "save").Val()["save"]; got != "" {
		t.Errorf("save %q, want none", got)
	}

	r.Stop()
	if r.Running() {
		t.Fatal("Running() after Stop")
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered after Stop")
	}

	port := r.Port()
	r.Start()
	if r.Port() != port {
		t.Errorf("restarted on port %d, want %d", r.Port(), port)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET k after a restart: %v, want redis.Nil (no persistence)", err)
	}

	r.Kill()
	if r.Running() {
		t.Fatal("Running() after Kill")
	}
	r.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Kill and Start: %v", err)
	}
}

func TestRedisServerPause(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	r := proctest.RedisServer(t)
	c := client(t, r.URL())
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	resumed := r.Pause(time.Second)
	err := c.Ping(ctx).Err()
	if err == nil {
		t.Fatal("PING answered while paused")
	}
	var ne interface{ Timeout() bool }
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("PING while paused: %v, want a timeout", err)
	}
	select {
	case <-resumed:
	case <-time.After(5 * time.Second):
		t.Fatal("Pause's channel not closed after its duration")
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after the pause: %v", err)
	}

	r.ClientPause(500 * time.Millisecond)
	if err := c.Ping(ctx).Err(); err == nil {
		t.Error("PING answered within 300ms during CLIENT PAUSE 500")
	}
	time.Sleep(300 * time.Millisecond)

	// Stop resumes a paused server first.
	r.Pause(time.Hour)
	r.Stop()
	if r.Running() {
		t.Fatal("Running() after Stop of a paused server")
	}
}

func TestRedisServerRequirePass(t *testing.T) {
	t.Parallel()

	r := proctest.RedisServer(t, "--requirepass", "s3cret")
	c := client(t, strings.Replace(r.URL(), "redis://", "redis://:s3cret@", 1))
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	r.Start()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestRedisServerAppendOnly(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveArgs []string
		giveAuth string
	}{
		{name: "shutdown", giveArgs: []string{"--appendonly", "yes"}},
		{name: "sigterm", giveArgs: []string{"--appendonly", "yes", "--requirepass", "pw"}, giveAuth: ":pw@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()

			r := proctest.RedisServer(t, tt.giveArgs...)
			c := client(t, strings.Replace(r.URL(), "redis://", "redis://"+tt.giveAuth, 1))
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			r.Stop()
			r.Start()
			// Right after a start the server may still answer LOADING
			// while it replays the file, and the pool's old connections
			// are gone: give it a moment on a loaded machine.
			got, err := c.Get(ctx, "k").Result()
			for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
				got, err = c.Get(ctx, "k").Result()
			}
			if err != nil || got != "v" {
				t.Errorf("GET k after Stop and Start with an append-only file: %q, %v; want %q", got, err, "v")
			}
		})
	}
}
