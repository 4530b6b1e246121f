package cachemgr_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
)

type testBundle struct {
	mr  *miniredis.Miniredis
	rdb *redis.Client
	m   *cachemgr.Manager
}

func setup(t *testing.T, o cachemgr.Options) *testBundle {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &testBundle{mr: mr, rdb: rdb, m: m}
}

func TestGetSetUsePrefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})

	if err := b.m.Set(ctx, "user:1", "alice", 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.mr.Get("cache:user:1"); got != "alice" {
		t.Errorf("raw cache:user:1 = %q, want alice", got)
	}
	if b.mr.Exists("user:1") {
		t.Error("unprefixed key written")
	}
	got, err := b.m.Get(ctx, "user:1")
	if err != nil || got != "alice" {
		t.Errorf("Get = %q, %v", got, err)
	}
	if _, err := b.m.Get(ctx, "user:2"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("Get missing = %v, want ErrMiss", err)
	}
	if errors.Is(func() error { _, err := b.m.Get(ctx, "user:2"); return err }(), redis.Nil) {
		t.Error("miss leaks redis.Nil")
	}
}

func TestCustomPrefix(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{KeyPrefix: "app1:"})
	if err := b.m.Set(context.Background(), "k", "v", 0); err != nil {
		t.Fatal(err)
	}
	if !b.mr.Exists("app1:k") {
		t.Errorf("keys = %v, want app1:k", b.mr.Keys())
	}
	if b.m.Key("k") != "app1:k" || b.m.KeyPrefix() != "app1:" {
		t.Errorf("Key = %q, KeyPrefix = %q", b.m.Key("k"), b.m.KeyPrefix())
	}
}

func TestSetTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		giveDef    time.Duration
		giveTTL    time.Duration
		wantTTL    time.Duration
		wantErrSub string
	}{
		{name: "zero uses default 1h", giveTTL: 0, wantTTL: time.Hour},
		{name: "zero uses configured default", giveDef: 5 * time.Minute, giveTTL: 0, wantTTL: 5 * time.Minute},
		{name: "explicit", giveTTL: 90 * time.Second, wantTTL: 90 * time.Second},
		{name: "no expiry", giveTTL: cachemgr.NoExpiry, wantTTL: 0},
		{name: "default no expiry", giveDef: cachemgr.NoExpiry, giveTTL: 0, wantTTL: 0},
		{name: "negative", giveTTL: -5 * time.Second, wantErrSub: "negative TTL -5s"},
		{name: "below 1ms", giveTTL: time.Microsecond, wantErrSub: "1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, cachemgr.Options{DefaultTTL: tt.giveDef})
			err := b.m.Set(context.Background(), "k", "v", tt.giveTTL)
			if tt.wantErrSub != "" {
				if !errors.Is(err, cachemgr.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("err = %v, want ErrInvalidArgument containing %q", err, tt.wantErrSub)
				}
				if b.mr.Exists("cache:k") {
					t.Error("rejected Set wrote the key")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.mr.TTL("cache:k"); got != tt.wantTTL {
				t.Errorf("TTL = %v, want %v", got, tt.wantTTL)
			}
		})
	}
}

func TestSetExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	if err := b.m.Set(ctx, "k", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	b.mr.FastForward(61 * time.Second)
	if _, err := b.m.Get(ctx, "k"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("after TTL: %v, want ErrMiss", err)
	}
}

type point struct{ X, Y int }

func (p point) MarshalBinary() ([]byte, error) { return fmt.Appendf(nil, "%d,%d", p.X, p.Y), nil }

func TestSetValueTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	tests := []struct {
		give any
		want string
	}{
		{"s", "s"}, {[]byte("b"), "b"}, {42, "42"}, {int64(-7), "-7"}, {uint8(3), "3"},
		{1.5, "1.5"}, {true, "1"}, {point{1, 2}, "1,2"},
	}
	for i, tt := range tests {
		key := fmt.Sprint("v", i)
		if err := b.m.Set(ctx, key, tt.give, 0); err != nil {
			t.Fatalf("Set(%T): %v", tt.give, err)
		}
		if got, _ := b.m.Get(ctx, key); got != tt.want {
			t.Errorf("Set(%T %v) stored %q, want %q", tt.give, tt.give, got, tt.want)
		}
	}
	for _, bad := range []any{nil, struct{}{}, map[string]int{}, []int{1}} {
		err := b.m.Set(ctx, "bad", bad, 0)
		if !errors.Is(err, cachemgr.ErrInvalidArgument) {
			t.Errorf("Set(%T) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if b.mr.Exists("cache:bad") {
		t.Error("rejected value was written")
	}
}

// The empty key and the keys of GetOrCompute's locks are refused, so that
// no caller can overwrite or delete a lock another process holds.
func TestEmptyAndReservedKeysRejected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	b.mr.Set("cache:__lock__:k", "holder")
	for _, key := range []string{"", "__lock__:k"} {
		checks := map[string]error{
			"Get":          func() error { _, err := b.m.Get(ctx, key); return err }(),
			"Set":          b.m.Set(ctx, key, "v", 0),
			"Delete":       func() error { _, err := b.m.Delete(ctx, "a", key); return err }(),
			"GetAsync":     func() error { _, err := b.m.GetAsync(ctx, key).Wait(); return err }(),
			"SetAsync":     func() error { _, err := b.m.SetAsync(ctx, key, "v", 0).Wait(); return err }(),
			"DeleteAsync":  func() error { _, err := b.m.DeleteAsync(ctx, key).Wait(); return err }(),
			"GetOrCompute": func() error { _, _, err := b.m.GetOrCompute(ctx, key, 0, constant("v")); return err }(),
		}
		for name, err := range checks {
			if !errors.Is(err, cachemgr.ErrInvalidArgument) {
				t.Errorf("%s(%q): %v, want ErrInvalidArgument", name, key, err)
			}
		}
	}
	if v, _ := b.mr.Get("cache:__lock__:k"); v != "holder" {
		t.Errorf("lock = %q after the refused calls", v)
	}
}

func constant(v string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return v, nil }
}

func TestDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	for _, k := range []string{"a", "b", "c"} {
		if err := b.m.Set(ctx, k, "v", 0); err != nil {
			t.Fatal(err)
		}
	}
	n, err := b.m.Delete(ctx, "a", "b", "missing")
	if err != nil || n != 2 {
		t.Errorf("Delete = %d, %v; want 2 existed", n, err)
	}
	if n, _ := b.m.Delete(ctx); n != 0 {
		t.Errorf("Delete() = %d", n)
	}
	if d := cmp.Diff([]string{"cache:c"}, b.mr.Keys()); d != "" {
		t.Errorf("keys (-want +got)\n%s", d)
	}
	n, err = b.m.DeleteAsync(ctx, "c", "zz").Wait()
	if err != nil || n != 1 {
		t.Errorf("DeleteAsync = %d, %v", n, err)
	}
}

func TestDeletePattern(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	for i := range 1200 { // more than one SCAN batch
		if err := b.m.Set(ctx, fmt.Sprintf("user:%d:profile", i), "v", 0); err != nil {
			t.Fatal(err)
		}
	}
	b.m.Set(ctx, "user:7:settings", "v", 0)
	b.m.Set(ctx, "other", "v", 0)
	b.mr.Set("user:1:profile", "outside the prefix")

	n, err := b.m.DeletePattern(ctx, "user:7:*")
	if err != nil || n != 2 {
		t.Fatalf("DeletePattern(user:7:*) = %d, %v; want 2", n, err)
	}
	n, err = b.m.DeletePattern(ctx, "user:*")
	if err != nil || n != 1199 {
		t.Fatalf("DeletePattern(user:*) = %d, %v; want 1199", n, err)
	}
	if d := cmp.Diff([]string{"cache:other", "user:1:profile"}, b.mr.Keys()); d != "" {
		t.Errorf("keys left (-want +got)\n%s", d)
	}
	n, err = b.m.DeletePatternAsync(ctx, "*").Wait()
	if err != nil || n != 1 {
		t.Errorf("DeletePatternAsync(*) = %d, %v", n, err)
	}
	if _, err := b.m.DeletePattern(ctx, ""); !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("empty pattern: %v", err)
	}
}

func TestDeletePatternPrefixIsLiteral(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{KeyPrefix: "c[1]*:"})
	b.m.Set(ctx, "k", "v", 0)
	b.mr.Set("c1x:k", "not ours, but matched by the unescaped glob")
	n, err := b.m.DeletePattern(ctx, "*")
	if err != nil || n != 1 {
		t.Fatalf("DeletePattern = %d, %v", n, err)
	}
	if !b.mr.Exists("c1x:k") {
		t.Error("glob characters in the prefix reached a foreign key")
	}
}

func TestOptionsRejected(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	tests := []struct {
		name    string
		give    cachemgr.Options
		wantSub string
	}{
		{"asynq prefix", cachemgr.Options{KeyPrefix: "asynq:"}, `KeyPrefix "asynq:"`},
		{"inside asynq", cachemgr.Options{KeyPrefix: "asynq:{default}:"}, "overlaps"},
		{"reaches asynq", cachemgr.Options{KeyPrefix: "asy"}, "overlaps"},
		{"negative ttl", cachemgr.Options{DefaultTTL: -2 * time.Second}, "DefaultTTL -2s"},
		{"negative pool", cachemgr.Options{PoolSize: -1}, "PoolSize -1"},
		{"negative in flight", cachemgr.Options{AsyncMaxInFlight: -1}, "AsyncMaxInFlight -1"},
		{"tiny lock", cachemgr.Options{LockTTL: time.Millisecond}, "LockTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cachemgr.NewFromClient(rdb, tt.give)
			if !errors.Is(err, cachemgr.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("err = %v, want ErrInvalidArgument containing %q", err, tt.wantSub)
			}
		})
	}
	if _, err := cachemgr.NewFromClient(nil, cachemgr.Options{}); !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("nil client: %v", err)
	}
}

func TestNewURLErrorsHidePassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://app:hunter2@host:6379/notadb",
		"http://app:hunter2@host:6379",
		"redis://app:hunter2@host:6379?bogus=1",
		"redis+sentinel://app:hunter2@h:1",
	} {
		_, err := cachemgr.New(cachemgr.Options{URL: u})
		if err == nil {
			t.Errorf("New(%q): no error", u)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks password: %v", err)
		}
		if !errors.Is(err, cachemgr.ErrInvalidArgument) {
			t.Errorf("New(%q) = %v, want ErrInvalidArgument", u, err)
		}
	}
}

func TestNewDoesNotDial(t *testing.T) {
	t.Parallel()
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://127.0.0.1:1", SocketTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Ping(context.Background()); err == nil {
		t.Error("Ping to a closed port succeeded")
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	if err := b.m.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.PingAsync(context.Background()).Wait(); err != nil {
		t.Fatal(err)
	}
	b.mr.Close()
	if err := b.m.Ping(context.Background()); err == nil {
		t.Error("Ping after server stop succeeded")
	}
}

func TestCallsAfterClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	if err := b.m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.m.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	errs := map[string]error{
		"Get":           func() error { _, err := b.m.Get(ctx, "k"); return err }(),
		"Set":           b.m.Set(ctx, "k", "v", 0),
		"Delete":        func() error { _, err := b.m.Delete(ctx, "k"); return err }(),
		"DeletePattern": func() error { _, err := b.m.DeletePattern(ctx, "*"); return err }(),
		"Ping":          b.m.Ping(ctx),
		"GetAsync":      func() error { _, err := b.m.GetAsync(ctx, "k").Wait(); return err }(),
		"SetAsync":      func() error { _, err := b.m.SetAsync(ctx, "k", "v", 0).Wait(); return err }(),
		"DeleteAsync":   func() error { _, err := b.m.DeleteAsync(ctx, "k").Wait(); return err }(),
		"PingAsync":     func() error { _, err := b.m.PingAsync(ctx).Wait(); return err }(),
		"GetOrCompute": func() error {
			_, _, err := b.m.GetOrCompute(ctx, "k", 0, func(context.Context) (string, error) { return "v", nil })
			return err
		}(),
	}
	for name, err := range errs {
		if !errors.Is(err, cachemgr.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	// NewFromClient leaves the caller's client open.
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		t.Errorf("caller's client closed by Close: %v", err)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	b.m.Set(ctx, "k", "v", 0)
	b.m.Get(ctx, "k")
	b.m.Get(ctx, "nope")
	b.m.GetAsync(ctx, "k").Wait()
	b.m.Set(ctx, "k", struct{}{}, 0)
	b.mr.SetError("boom")
	b.m.Get(ctx, "k")
	b.mr.SetError("")

	s := b.m.Stats()
	want := map[cachemgr.Op]cachemgr.OpStats{
		cachemgr.OpGet: {Calls: 4, Hits: 2, Misses: 1, Errors: 1},
		cachemgr.OpSet: {Calls: 2, Errors: 1},
	}
	for op, w := range want {
		if d := cmp.Diff(w, s.Ops[op], ignoreLatency); d != "" {
			t.Errorf("%v (-want +got)\n%s", op, d)
		}
	}
	if s.AsyncInFlight != 0 {
		t.Errorf("AsyncInFlight = %d", s.AsyncInFlight)
	}
	if got := cachemgr.OpDeletePattern.String(); got != "delete_pattern" {
		t.Errorf("String = %q", got)
	}
	if len(cachemgr.Ops()) != len(s.Ops) {
		t.Errorf("Ops() has %d, Stats %d", len(cachemgr.Ops()), len(s.Ops))
	}
}

func TestConcurrentSyncAndAsync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for i := range 50 {
				k := fmt.Sprintf("g%d:%d", g, i)
				if i%2 == 0 {
					if err := b.m.Set(ctx, k, k, 0); err != nil {
						t.Error(err)
					}
				} else if _, err := b.m.SetAsync(ctx, k, k, 0).Wait(); err != nil {
					t.Error(err)
				}
				got, err := b.m.GetAsync(ctx, k).Wait()
				if err != nil || got != k {
					t.Errorf("GetAsync(%s) = %q, %v", k, got, err)
				}
			}
		})
	}
	wg.Wait()
}
