package cachemgr_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
)

// dbNear is the database of the near cache's real-Redis tests. Tracking is
// keyed by key name across databases, so each test still uses its own
// prefix.
const dbNear = 12

// eventually polls cond until it holds or a generous deadline passes: the
// near cache's invalidations are asynchronous, and no test here asserts
// how fast they are (BenchmarkNearCacheStaleWindow measures that).
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type nearBundle struct {
	m     *cachemgr.Manager
	other redis.UniversalClient // another process writing the same keys
}

// setupNear returns a manager with the near cache on at url, and another
// client on the same Redis, once the near cache is live.
func setupNear(t *testing.T, url string, near cachemgr.NearCacheOptions) *nearBundle {
	t.Helper()
	if near.MaxEntries == 0 {
		near.MaxEntries = 1000
	}
	m := newReal(t, url, cachemgr.Options{NearCache: near})
	other, err := cachemgr.New(cachemgr.Options{URL: url, KeyPrefix: m.KeyPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	b := &nearBundle{m: m, other: other.Client()}
	waitLive(t, m, "warm")
	return b
}

// waitLive reads key until the near cache is live and holds it.
func waitLive(t *testing.T, m *cachemgr.Manager, key string) {
	t.Helper()
	ctx := context.Background()
	if err := m.Client().Set(ctx, m.Key(key), "x", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "near cache live", func() bool {
		before := m.Stats().Near.Hits
		if _, err := m.Get(ctx, key); err != nil {
			t.Fatal(err)
		}
		return m.Stats().Near.Hits > before
	})
}

// nearHit reads key and reports whether the near cache answered.
func nearHit(t *testing.T, m *cachemgr.Manager, key string) (string, bool) {
	t.Helper()
	before := m.Stats().Near.Hits
	v, err := m.Get(context.Background(), key)
	if err != nil && !errors.Is(err, cachemgr.ErrMiss) {
		t.Fatal(err)
	}
	return v, m.Stats().Near.Hits > before
}

// fillNear reads key until the near cache holds it.
func fillNear(t *testing.T, m *cachemgr.Manager, key string) {
	t.Helper()
	eventually(t, "near cache holds "+key, func() bool {
		_, hit := nearHit(t, m, key)
		return hit
	})
}

func TestRealNearOtherProcessWriteInvalidates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupNear(t, redistest.URL(t, dbNear), cachemgr.NearCacheOptions{})
	if err := b.other.Set(ctx, b.m.Key("k"), "v1", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	fillNear(t, b.m, "k")
	if v, hit := nearHit(t, b.m, "k"); v != "v1" || !hit {
		t.Fatalf("Get = %q (near hit %v), want v1 from the near cache", v, hit)
	}

	if err := b.other.Set(ctx, b.m.Key("k"), "v2", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "other process's SET seen", func() bool {
		v, _ := nearHit(t, b.m, "k")
		return v == "v2"
	})
	// Once seen, never the old value again.
	for range 100 {
		if v, _ := nearHit(t, b.m, "k"); v != "v2" {
			t.Fatalf("Get = %q after v2 was seen", v)
		}
	}

	if err := b.other.Del(ctx, b.m.Key("k")).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "other process's DEL seen", func() bool {
		_, err := b.m.Get(ctx, "k")
		return errors.Is(err, cachemgr.ErrMiss)
	})
	// GetAsync and GetJSON read through the same tier.
	if err := b.other.Set(ctx, b.m.Key("j"), `{"n":1}`, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	fillNear(t, b.m, "j")
	if err := b.other.Set(ctx, b.m.Key("j"), `{"n":2}`, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "GetJSON sees the new value", func() bool {
		v, err := cachemgr.GetJSON[struct{ N int }](ctx, b.m, "j")
		return err == nil && v.N == 2
	})
	if v, err := b.m.GetAsync(ctx, "j").Wait(); err != nil || v != `{"n":2}` {
		t.Fatalf("GetAsync = %q, %v", v, err)
	}
	st := b.m.Stats()
	if st.Near.Invalidations == 0 || st.Tiers[cachemgr.TierNear].Hits == 0 || st.Tiers[cachemgr.TierRedis].Hits == 0 {
		t.Errorf("stats: %+v, tiers %+v", st.Near, st.Tiers)
	}
}

func TestRealNearReadYourWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupNear(t, redistest.URL(t, dbNear), cachemgr.NearCacheOptions{})
	for i := range 50 {
		want := strconv.Itoa(i)
		var err error
		switch i % 4 {
		case 0:
			err = b.m.Set(ctx, "k", want, 0)
		case 1:
			_, err = b.m.SetAsync(ctx, "k", want, 0).Wait()
		case 2:
			err = cachemgr.SetJSON(ctx, b.m, "k", i, 0)
		case 3:
			_, _, err = b.m.GetOrCompute(ctx, "k", 0, func(context.Context) (string, error) { return want, nil })
			if err == nil {
				continue // the key existed: nothing written
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		fillNear(t, b.m, "k")
		if v, err := b.m.Get(ctx, "k"); err != nil || v != want {
			t.Fatalf("write %d: Get = %q, %v", i, v, err)
		}
		if v, err := b.m.GetAsync(ctx, "k").Wait(); err != nil || v != want {
			t.Fatalf("write %d: GetAsync = %q, %v", i, v, err)
		}
	}
	if _, err := b.m.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Get(ctx, "k"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Fatalf("Get after Delete: %v, want ErrMiss", err)
	}
	if err := b.m.Set(ctx, "k", "again", 0); err != nil {
		t.Fatal(err)
	}
	fillNear(t, b.m, "k")
	if _, err := b.m.DeleteAsync(ctx, "k").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Get(ctx, "k"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Fatalf("Get after DeleteAsync: %v, want ErrMiss", err)
	}
}

func TestRealNearDeletePatternInvalidates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupNear(t, redistest.URL(t, dbNear), cachemgr.NearCacheOptions{})
	for i := range 10 {
		if err := b.m.Set(ctx, fmt.Sprint("user:", i), i, 0); err != nil {
			t.Fatal(err)
		}
		fillNear(t, b.m, fmt.Sprint("user:", i))
	}
	// This process's pattern delete: gone at once.
	if n, err := b.m.DeletePattern(ctx, "user:*"); err != nil || n != 10 {
		t.Fatalf("DeletePattern = %d, %v", n, err)
	}
	for i := range 10 {
		if _, err := b.m.Get(ctx, fmt.Sprint("user:", i)); !errors.Is(err, cachemgr.ErrMiss) {
			t.Fatalf("user:%d after DeletePattern: %v, want ErrMiss", i, err)
		}
	}
	// Another process's pattern delete: gone eventually.
	other, err := cachemgr.NewFromClient(b.other, cachemgr.Options{KeyPrefix: b.m.KeyPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i := range 10 {
		if err := other.Set(ctx, fmt.Sprint("user:", i), i, 0); err != nil {
			t.Fatal(err)
		}
		fillNear(t, b.m, fmt.Sprint("user:", i))
	}
	if n, err := other.DeletePattern(ctx, "user:*"); err != nil || n != 10 {
		t.Fatalf("other DeletePattern = %d, %v", n, err)
	}
	for i := range 10 {
		eventually(t, "other process's DeletePattern seen", func() bool {
			_, err := b.m.Get(ctx, fmt.Sprint("user:", i))
			return errors.Is(err, cachemgr.ErrMiss)
		})
	}
}

func TestRealNearBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const maxEntries, maxBytes = 100, 20_000
	b := setupNear(t, redistest.URL(t, dbNear), cachemgr.NearCacheOptions{MaxEntries: maxEntries, MaxBytes: maxBytes})
	value := strings.Repeat("v", 100)
	// A FLUSHDB anywhere on the server (other tests flush their own
	// databases) empties every near cache, since Redis's tracking does not
	// know databases: an attempt that saw one proves nothing about
	// eviction, so it is made again.
	for attempt := 1; ; attempt++ {
		flushes := b.m.Stats().Near.Flushes
		for i := range 1000 {
			key := fmt.Sprintf("k%d-%d", attempt, i)
			if err := b.m.Set(ctx, key, value, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := b.m.Get(ctx, key); err != nil {
				t.Fatal(err)
			}
			if st := b.m.Stats().Near; st.Entries > maxEntries || st.Bytes > maxBytes {
				t.Fatalf("after %d keys: %d entries, %d bytes; bounds %d, %d", i+1, st.Entries, st.Bytes, maxEntries, maxBytes)
			}
		}
		st := b.m.Stats().Near
		if st.Flushes != flushes && attempt < 10 {
			continue
		}
		if st.Evictions == 0 || st.Entries == 0 {
			t.Errorf("stats %+v: want evictions and some entries", st)
		}
		break
	}
	// A value larger than the byte bound is served, never cached.
	if err := b.m.Set(ctx, "big", strings.Repeat("b", maxBytes), 0); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if v, hit := nearHit(t, b.m, "big"); hit || len(v) != maxBytes {
			t.Fatalf("big value: %d bytes, near hit %v", len(v), hit)
		}
	}
}

func TestRealNearHonoursRedisTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupNear(t, redistest.URL(t, dbNear), cachemgr.NearCacheOptions{})
	if err := b.m.Set(ctx, "short", "v", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	fillNear(t, b.m, "short")
	// Redis may report the expiry late (it expires lazily); the near cache
	// must not: the entry carries the key's PTTL.
	time.Sleep(400 * time.Millisecond)
	if _, hit := nearHit(t, b.m, "short"); hit {
		t.Fatal("near cache served a key past its Redis TTL")
	}
}

// trackerIDs returns the client ids of m's tracking connections.
func trackerIDs(t *testing.T, rdb redis.UniversalClient, m *cachemgr.Manager) []string {
	t.Helper()
	ctx := context.Background()
	var (
		mu  sync.Mutex
		out []string
	)
	collect := func(c *redis.Client) error {
		list, err := c.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name=forgeq-near:"+m.KeyPrefix()+" ") {
				for _, f := range strings.Fields(line) {
					if id, ok := strings.CutPrefix(f, "id="); ok {
						mu.Lock()
						out = append(out, c.Options().Addr+"/"+id)
						mu.Unlock()
					}
				}
			}
		}
		return nil
	}
	var err error
	switch c := rdb.(type) {
	case *redis.Client:
		err = collect(c)
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return collect(c) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRealNearConnectionDropFlushes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupNear(t, redistest.URL(t, dbNear), cachemgr.NearCacheOptions{})
	if err := b.m.Set(ctx, "k", "v1", 0); err != nil {
		t.Fatal(err)
	}
	fillNear(t, b.m, "k")
	ids := trackerIDs(t, b.other, b.m)
	if len(ids) != 1 {
		t.Fatalf("tracking connections: %v, want 1", ids)
	}
	flushes := b.m.Stats().Near.Flushes
	_, id, _ := strings.Cut(ids[0], "/")
	if err := b.other.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatal(err)
	}
	// Written while the tracking connection is down: no invalidation
	// reaches this process for it, so only the flush can keep it fresh.
	if err := b.other.Set(ctx, b.m.Key("k"), "v2", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "flush after the tracking connection dropped", func() bool {
		return b.m.Stats().Near.Flushes > flushes
	})
	if v, err := b.m.Get(ctx, "k"); err != nil || v != "v2" {
		t.Fatalf("Get after the drop = %q, %v; want v2", v, err)
	}
	// It reconnects, and serves again.
	fillNear(t, b.m, "k")
	if ids2 := trackerIDs(t, b.other, b.m); len(ids2) != 1 || ids2[0] == ids[0] {
		t.Fatalf("tracking connections after the drop: %v (before %v)", ids2, ids)
	}
	if err := b.other.Set(ctx, b.m.Key("k"), "v3", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "write seen after reconnecting", func() bool {
		v, _ := nearHit(t, b.m, "k")
		return v == "v3"
	})
}

func TestRealNearFlushDB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := redistest.URL(t, dbNear+1) // flushed here: not the shared dbNear
	m := newReal(t, url, cachemgr.Options{NearCache: cachemgr.NearCacheOptions{MaxEntries: 100}})
	waitLive(t, m, "k")
	flushes := m.Stats().Near.Flushes
	// FLUSHDB sends an invalidation without keys to every tracking client,
	// whatever its database: this manager must flush its tier.
	if err := m.Client().FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tier flushed after FLUSHDB", func() bool { return m.Stats().Near.Flushes > flushes })
	if _, err := m.Get(ctx, "k"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Fatalf("Get after FLUSHDB: %v, want ErrMiss", err)
	}
}

func TestRealNearCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := redistest.ClusterURL(t)
	b := setupNear(t, url, cachemgr.NearCacheOptions{})
	keys := make([]string, 30)
	for i := range keys {
		keys[i] = fmt.Sprint("c", i)
		if err := b.other.Set(ctx, b.m.Key(keys[i]), "v1", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		fillNear(t, b.m, keys[i])
	}
	// One tracking connection per master holding a key.
	if ids := trackerIDs(t, b.other, b.m); len(ids) != 3 {
		t.Fatalf("tracking connections: %v, want one on each of 3 masters", ids)
	}
	for _, k := range keys {
		if err := b.other.Set(ctx, b.m.Key(k), "v2", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		eventually(t, "cluster write to "+k+" seen", func() bool {
			v, _ := nearHit(t, b.m, k)
			return v == "v2"
		})
	}
	for _, k := range keys {
		fillNear(t, b.m, k)
	}
	if n, err := b.m.DeletePattern(ctx, "c*"); err != nil || n != int64(len(keys)) {
		t.Fatalf("DeletePattern = %d, %v", n, err)
	}
	for _, k := range keys {
		if _, err := b.m.Get(ctx, k); !errors.Is(err, cachemgr.ErrMiss) {
			t.Fatalf("%s after DeletePattern: %v", k, err)
		}
	}
	// Losing one master's tracking connection flushes the tier.
	if err := b.m.Set(ctx, keys[0], "v3", 0); err != nil {
		t.Fatal(err)
	}
	fillNear(t, b.m, keys[0])
	ids := trackerIDs(t, b.other, b.m)
	flushes := b.m.Stats().Near.Flushes
	addr, id, _ := strings.Cut(ids[0], "/")
	node := redis.NewClient(&redis.Options{Addr: addr})
	defer node.Close()
	if err := node.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "flush after a master's tracking connection dropped", func() bool {
		return b.m.Stats().Near.Flushes > flushes
	})
}

func TestNearMiniredisDisablesItself(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mr := miniredis.RunT(t)
	core, logs := observer.New(zap.ErrorLevel)
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr(), Logger: zap.New(core),
		NearCache: cachemgr.NearCacheOptions{MaxEntries: 100}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Set(ctx, "k", "v1", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "near cache disabled with a log line", func() bool {
		if _, err := m.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		return logs.FilterMessageSnippet("near cache disabled").Len() > 0
	})
	// Writes behind the manager's back are seen at once: nothing is cached.
	for i := range 20 {
		mr.Set(m.Key("k"), strconv.Itoa(i))
		if v, err := m.Get(ctx, "k"); err != nil || v != strconv.Itoa(i) {
			t.Fatalf("Get = %q, %v; want %d", v, err, i)
		}
	}
	st := m.Stats()
	if !st.Near.Enabled || st.Near.Live || st.Near.Hits != 0 || st.Near.Entries != 0 {
		t.Errorf("near stats on miniredis: %+v", st.Near)
	}
	if st.Tiers[cachemgr.TierRedis].Hits == 0 || st.Tiers[cachemgr.TierNear].Misses == 0 {
		t.Errorf("tier stats: %+v", st.Tiers)
	}
}

func TestNearOff(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Set(context.Background(), "k", "v", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	st := m.Stats()
	if st.Near != (cachemgr.NearStats{}) {
		t.Errorf("near stats with the near cache off: %+v", st.Near)
	}
	if got := st.Tiers[cachemgr.TierRedis]; got.Hits != 1 {
		t.Errorf("redis tier: %+v, want 1 hit", got)
	}
}

func TestNearOptionsRejected(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	tests := []struct {
		name string
		give cachemgr.NearCacheOptions
	}{
		{"negative entries", cachemgr.NearCacheOptions{MaxEntries: -1}},
		{"negative bytes", cachemgr.NearCacheOptions{MaxEntries: 10, MaxBytes: -1}},
		{"negative ttl", cachemgr.NearCacheOptions{MaxEntries: 10, TTL: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr(), NearCache: tt.give})
			if !errors.Is(err, cachemgr.ErrInvalidArgument) {
				t.Errorf("New = %v, want ErrInvalidArgument", err)
			}
		})
	}
	t.Run("ring client", func(t *testing.T) {
		ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": mr.Addr()}})
		defer ring.Close()
		_, err := cachemgr.NewFromClient(ring, cachemgr.Options{NearCache: cachemgr.NearCacheOptions{MaxEntries: 10}})
		if !errors.Is(err, cachemgr.ErrInvalidArgument) {
			t.Errorf("NewFromClient(ring) = %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("cluster reading from replicas", func(t *testing.T) {
		for _, o := range []redis.ClusterOptions{{ReadOnly: true}, {RouteByLatency: true}, {RouteRandomly: true}} {
			o.Addrs = []string{mr.Addr()}
			c := redis.NewClusterClient(&o)
			_, err := cachemgr.NewFromClient(c, cachemgr.Options{NearCache: cachemgr.NearCacheOptions{MaxEntries: 10}})
			c.Close()
			if !errors.Is(err, cachemgr.ErrInvalidArgument) {
				t.Errorf("NewFromClient(cluster %+v) = %v, want ErrInvalidArgument", o, err)
			}
		}
	})
}

func TestRealNearACL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The ACL user may touch keys under cache: only.
	url := redistest.ACLURL(t)
	prefix := "cache:" + redistest.Prefix(t)
	m := newReal(t, url, cachemgr.Options{KeyPrefix: prefix, NearCache: cachemgr.NearCacheOptions{MaxEntries: 100}})
	waitLive(t, m, "k")
	if err := m.Set(ctx, "k", "v2", 0); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get(ctx, "k"); err != nil || v != "v2" {
		t.Fatalf("Get = %q, %v", v, err)
	}
}
