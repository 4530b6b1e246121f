package cachemgr

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// liveTracker is a tracker that holds a lease forever, without a
// connection: the store's tests need no Redis.
func liveTracker() *tracker {
	t := &tracker{}
	t.subscribed.Store(true)
	t.lease.Store(math.MaxInt64)
	return t
}

func newTestNear(tb testing.TB, o NearCacheOptions) *nearCache {
	tb.Helper()
	if err := o.init(); err != nil {
		tb.Fatal(err)
	}
	return newNearCache(o, "p:")
}

// fillNow fills key as a read that started now would.
func fillNow(nc *nearCache, tr *tracker, key, val string, pttl time.Duration) {
	s := nc.shard(key)
	nc.fill(nearFill{s: s, seq: s.seq.Load(), tr: tr}, key, val, pttl)
}

func TestNearStoreFillAndGet(t *testing.T) {
	t.Parallel()
	nc := newTestNear(t, NearCacheOptions{MaxEntries: 10})
	tr := liveTracker()
	if _, ok := nc.get("k"); ok {
		t.Fatal("hit on an empty cache")
	}
	fillNow(nc, tr, "k", "v", -1)
	if v, ok := nc.get("k"); !ok || v != "v" {
		t.Fatalf("get = %q, %v", v, ok)
	}
	tests := []struct {
		name     string
		givePTTL time.Duration
		wantFill bool
	}{
		{"no expiry", -1, true},
		{"key gone", -2, false},
		{"expires within a millisecond", 0, false},
		{"expires later", time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "ttl:" + tt.name
			fillNow(nc, tr, key, "v", tt.givePTTL)
			if _, ok := nc.get(key); ok != tt.wantFill {
				t.Errorf("filled = %v, want %v", ok, tt.wantFill)
			}
		})
	}
	if st := nc.stats(); st.Hits != 3 || st.Misses != 3 {
		t.Errorf("hits %d misses %d, want 3 and 3", st.Hits, st.Misses)
	}
}

// TestNearStoreFillRace: a read whose reply arrives after an invalidation
// of its shard may carry the old value, and must not fill.
func TestNearStoreFillRace(t *testing.T) {
	t.Parallel()
	nc := newTestNear(t, NearCacheOptions{MaxEntries: 10})
	tr := liveTracker()
	for _, race := range []struct {
		name string
		give func()
	}{
		{"invalidate", func() { nc.invalidateFull("p:k") }},
		{"invalidate another key of the shard", func() { nc.invalidate("k") }},
		{"flush", nc.flush},
		{"fence (tracking came on)", nc.fence},
	} {
		t.Run(race.name, func(t *testing.T) {
			s := nc.shard("k")
			f := nearFill{s: s, seq: s.seq.Load(), tr: tr}
			race.give()
			nc.fill(f, "k", "old", -1)
			if v, ok := nc.get("k"); ok {
				t.Errorf("filled %q after a concurrent %s", v, race.name)
			}
		})
	}
}

func TestNearStoreNotLive(t *testing.T) {
	t.Parallel()
	nc := newTestNear(t, NearCacheOptions{MaxEntries: 10})
	tr := liveTracker()
	fillNow(nc, tr, "k", "v", -1)
	tr.lease.Store(0) // the lease ran out: the node went silent
	if _, ok := nc.get("k"); ok {
		t.Error("hit without a lease")
	}
	fillNow(nc, tr, "k2", "v", -1)
	tr.lease.Store(math.MaxInt64)
	if _, ok := nc.get("k2"); ok {
		t.Error("filled without a lease")
	}
	if _, ok := nc.get("k"); !ok {
		t.Error("entry gone after the lease came back (no flush happened)")
	}
	tr.nc = nc
	tr.lost()
	if _, ok := nc.get("k"); ok {
		t.Error("hit after tracking was lost")
	}
}

func TestNearStoreBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		give          NearCacheOptions
		giveVal       string
		wantMaxCount  int
		wantMaxMemory int64
	}{
		{"entries, one shard", NearCacheOptions{MaxEntries: 50}, "v", 50, DefaultNearCacheMaxBytes},
		{"entries, many shards", NearCacheOptions{MaxEntries: 10000}, "v", 10000, DefaultNearCacheMaxBytes},
		{"bytes", NearCacheOptions{MaxEntries: 100000, MaxBytes: 64 * 1024}, string(make([]byte, 100)), 100000, 64 * 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := newTestNear(t, tt.give)
			tr := liveTracker()
			for i := range 3 * max(tt.wantMaxCount, 1000) {
				fillNow(nc, tr, fmt.Sprint("k", i), tt.giveVal, -1)
			}
			st := nc.stats()
			if st.Entries > tt.wantMaxCount || st.Bytes > tt.wantMaxMemory {
				t.Errorf("%d entries, %d bytes; bounds %d, %d", st.Entries, st.Bytes, tt.wantMaxCount, tt.wantMaxMemory)
			}
			if st.Evictions == 0 || st.Entries == 0 {
				t.Errorf("stats %+v: want evictions and entries", st)
			}
		})
	}
}

// TestNearStoreClock: eviction spares entries read since the hand passed.
func TestNearStoreClock(t *testing.T) {
	t.Parallel()
	nc := newTestNear(t, NearCacheOptions{MaxEntries: 4})
	tr := liveTracker()
	for _, k := range []string{"a", "b", "c", "d"} {
		fillNow(nc, tr, k, k, -1)
	}
	nc.get("a")
	nc.get("c")
	fillNow(nc, tr, "e", "e", -1) // evicts b, the first unread
	fillNow(nc, tr, "f", "f", -1) // evicts d
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": false, "e": true, "f": true} {
		s := nc.shard(k)
		s.mu.RLock()
		_, ok := s.m[k]
		s.mu.RUnlock()
		if ok != want {
			t.Errorf("%s held = %v, want %v", k, ok, want)
		}
	}
}

func TestNearStoreInvalidateAndFlush(t *testing.T) {
	t.Parallel()
	nc := newTestNear(t, NearCacheOptions{MaxEntries: 100})
	tr := liveTracker()
	for i := range 10 {
		fillNow(nc, tr, fmt.Sprint("k", i), "v", -1)
	}
	nc.invalidateFull("p:k1")
	nc.invalidateFull("other:k2") // outside the prefix: not ours
	nc.invalidate("k3")
	if _, ok := nc.get("k1"); ok {
		t.Error("k1 held after its invalidation")
	}
	if _, ok := nc.get("k2"); !ok {
		t.Error("k2 dropped by an invalidation of another prefix")
	}
	if _, ok := nc.get("k3"); ok {
		t.Error("k3 held after its invalidation")
	}
	nc.flush()
	if st := nc.stats(); st.Entries != 0 || st.Bytes != 0 || st.Flushes != 1 || st.Invalidations != 2 {
		t.Errorf("after flush: %+v", st)
	}
}

func TestTrackerName(t *testing.T) {
	t.Parallel()
	for give, want := range map[string]string{
		"cache:":    "forgeq-near:cache:",
		"a b\nc:":   "forgeq-near:a_b_c:",
		"naïve:":    "forgeq-near:na__ve:",
		"t0a1b2c3:": "forgeq-near:t0a1b2c3:",
	} {
		if got := trackerName(give); got != want {
			t.Errorf("trackerName(%q) = %q, want %q", give, got, want)
		}
	}
}
