package worker

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/redistest"
)

// selectFor runs selectRedis with a logger whose entries it returns, and
// closes any embedded Redis at cleanup.
func selectFor(tb testing.TB, r config.Redis) (redisTarget, *observer.ObservedLogs, error) {
	tb.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	target, err := selectRedis(context.Background(), r, zap.New(core))
	if target.embedded != nil {
		tb.Cleanup(target.embedded.Close)
	}
	return target, logs, err
}

// refuses fails the test if something listens at addr.
func refuses(tb testing.TB, addr string) {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		tb.Errorf("something listens at %s", addr)
	}
}

func TestSelectRedisURLNeverEmbeds(t *testing.T) {
	t.Parallel()

	for _, embedded := range []string{"auto", "false"} {
		t.Run(embedded, func(t *testing.T) {
			t.Parallel()
			addr := freeAddr(t)
			const giveURL = "redis://app:secret@redis.internal:6379/3"
			got, logs, err := selectFor(t, config.Redis{URL: giveURL, Embedded: embedded, EmbeddedAddr: addr})
			if err != nil {
				t.Fatal(err)
			}
			if got.url != giveURL || got.embedded != nil || got.implicit {
				t.Errorf("target = %+v, want the URL as given and no embedded Redis", got)
			}
			refuses(t, addr)
			if logs.Len() != 0 {
				t.Errorf("logged %v", logs.All())
			}
		})
	}

	t.Run("true is a contradiction", func(t *testing.T) {
		t.Parallel()
		addr := freeAddr(t)
		_, _, err := selectFor(t, config.Redis{URL: "redis://127.0.0.1:1", Embedded: "true", EmbeddedAddr: addr})
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "REDIS_CONNECTION_URL (redis.url) is set") {
			t.Errorf("error = %v, want a usage error naming REDIS_CONNECTION_URL", err)
		}
		refuses(t, addr)
	})
}

func TestSelectRedisAutoEmbedsOnFreePort(t *testing.T) {
	t.Parallel()

	addr := freeAddr(t)
	got, logs, err := selectFor(t, config.Redis{Embedded: "auto", EmbeddedAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	if got.embedded == nil || got.url != "redis://"+addr {
		t.Fatalf("target = %+v, want an embedded Redis at %s", got, addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("embedded Redis does not answer: %v", err)
	}
	warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
	if len(warns) != 1 {
		t.Fatalf("want one warning, got %v", logs.All())
	}
	for _, want := range []string{"EMBEDDED IN-MEMORY", "LOST when the worker exits", "REDIS_CONNECTION_URL=redis://host:6379"} {
		if !strings.Contains(warns[0].Message, want) {
			t.Errorf("warning %q lacks %q", warns[0].Message, want)
		}
	}
	if warns[0].ContextMap()["addr"] != addr {
		t.Errorf("warning fields %v lack addr %s", warns[0].ContextMap(), addr)
	}
}

func TestSelectRedisAutoUsesLocalRedis(t *testing.T) {
	t.Parallel()

	mr := miniredis.RunT(t)
	real := func(tb testing.TB) string {
		u, err := url.Parse(redistest.URL(tb, 8))
		if err != nil {
			tb.Fatal(err)
		}
		return u.Host
	}
	tests := []struct {
		name     string
		giveAddr func(testing.TB) string
	}{
		{name: "miniredis", giveAddr: func(testing.TB) string { return mr.Addr() }},
		{name: "real Redis", giveAddr: real},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := tt.giveAddr(t)
			got, logs, err := selectFor(t, config.Redis{Embedded: "auto", EmbeddedAddr: addr})
			if err != nil {
				t.Fatal(err)
			}
			if got.embedded != nil || got.url != "redis://"+addr || got.implicit {
				t.Errorf("target = %+v, want redis://%s, not embedded", got, addr)
			}
			if logs.FilterLevelExact(zapcore.WarnLevel).Len() != 0 {
				t.Errorf("warned: %v", logs.All())
			}
		})
	}
}

func TestSelectRedisAutoPortTakenByOther(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveServ func(net.Conn) // what the listener does with a connection
		wantErr  string
	}{
		{
			name:     "an HTTP server",
			giveServ: func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")) },
			wantErr:  `it answered PING with "HTTP/1.1 400 Bad Request"`,
		},
		{
			name:     "a listener that hangs up",
			giveServ: func(c net.Conn) {},
			wantErr:  "no answer to PING",
		},
		{
			name:     "a silent listener",
			giveServ: func(c net.Conn) { time.Sleep(2 * probeTimeout) },
			wantErr:  "no answer to PING",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						tt.giveServ(c)
					}()
				}
			}()
			addr := l.Addr().String()
			_, _, err = selectFor(t, config.Redis{Embedded: "auto", EmbeddedAddr: addr})
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range []string{addr + " is in use by something that is not Redis", tt.wantErr, "REDIS_CONNECTION_URL", "REDIS_EMBEDDED_ADDR"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}

	t.Run("a Redis with a password", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t)
		mr.RequireAuth("secret")
		_, _, err := selectFor(t, config.Redis{Embedded: "auto", EmbeddedAddr: mr.Addr()})
		want := "the Redis at " + mr.Addr() + " wants a password"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want %q", err, want)
		}
	})
}

func TestSelectRedisForced(t *testing.T) {
	t.Parallel()

	t.Run("false uses the address unchecked", func(t *testing.T) {
		t.Parallel()
		addr := freeAddr(t)
		got, _, err := selectFor(t, config.Redis{Embedded: "false", EmbeddedAddr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if got.url != "redis://"+addr || got.embedded != nil || !got.implicit {
			t.Errorf("target = %+v", got)
		}
		refuses(t, addr)
	})
	t.Run("true embeds", func(t *testing.T) {
		t.Parallel()
		addr := freeAddr(t)
		got, _, err := selectFor(t, config.Redis{Embedded: "true", EmbeddedAddr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if got.embedded == nil || got.url != "redis://"+addr {
			t.Errorf("target = %+v", got)
		}
	})
	t.Run("true on a taken port", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t) // a Redis is there already
		_, _, err := selectFor(t, config.Redis{Embedded: "true", EmbeddedAddr: mr.Addr()})
		for _, want := range []string{"start embedded Redis at " + mr.Addr(), "address already in use", "REDIS_EMBEDDED=true", "REDIS_EMBEDDED_ADDR"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error = %v, want it to contain %q", err, want)
			}
		}
	})
}

// TestEmbeddedTTLsExpire checks that keys expire on the wall clock in the
// embedded Redis (miniredis only does that with ClockTTL).
func TestEmbeddedTTLsExpire(t *testing.T) {
	t.Parallel()

	got, _, err := selectFor(t, config.Redis{Embedded: "true", EmbeddedAddr: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: got.embedded.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.SetNX(ctx, "lock", "1", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, "k", "lock").Result(); n != 2 {
		t.Fatalf("%d of 2 keys exist right after SET", n)
	}
	time.Sleep(500 * time.Millisecond)
	if n, err := rdb.Exists(ctx, "k", "lock").Result(); err != nil || n != 0 {
		t.Errorf("%d keys left 500ms after their 200-300ms TTLs (err %v), want 0", n, err)
	}
	// A lock taken again after expiry succeeds, as asynq's unique locks need.
	if ok, err := rdb.SetNX(ctx, "lock", "2", time.Second).Result(); err != nil || !ok {
		t.Errorf("SETNX after expiry = %v, %v; want true", ok, err)
	}
}
