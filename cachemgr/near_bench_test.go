//go:build unix

package cachemgr_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
)

// BenchmarkNearCacheGet compares reads of 100 hot keys (64-byte values) at
// 50 concurrent callers, in one run on a real Redis (REDIS_TEST_URL, DB 12):
//
//	impl=async      Manager.GetAsync without the near cache (the anchor)
//	impl=get        Manager.Get without the near cache
//	impl=near       Manager.Get with the near cache
//	impl=near-async Manager.GetAsync with the near cache
//
// BENCHMARKS.md has the command and the figures.
func BenchmarkNearCacheGet(b *testing.B) {
	url := redistest.URL(b, dbNear)
	ctx := context.Background()
	prefix := redistest.Prefix(b)
	newMgr := func(near cachemgr.NearCacheOptions) *cachemgr.Manager {
		m, err := cachemgr.New(cachemgr.Options{URL: url, KeyPrefix: prefix, NearCache: near})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		return m
	}
	plain := newMgr(cachemgr.NearCacheOptions{})
	near := newMgr(cachemgr.NearCacheOptions{MaxEntries: 10000})
	b.Cleanup(func() { plain.DeletePattern(ctx, "*") })
	value := "a value of some sixty-four bytes, roughly what a cached row is.."
	const hot = 100
	keys := make([]string, hot)
	for i := range keys {
		keys[i] = fmt.Sprint("hot:", i)
		if err := plain.Set(ctx, keys[i], value, 0); err != nil {
			b.Fatal(err)
		}
	}
	// Warm the near cache: every hot key held, tracking live.
	deadline := time.Now().Add(15 * time.Second)
	for near.Stats().Near.Entries < hot {
		if time.Now().After(deadline) {
			b.Fatalf("near cache holds %d of %d hot keys after 15s", near.Stats().Near.Entries, hot)
		}
		for _, k := range keys {
			if _, err := near.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	impls := []struct {
		name string
		fn   func(i int) error
	}{
		{"async", func(i int) error { _, err := plain.GetAsync(ctx, keys[i%hot]).Wait(); return err }},
		{"get", func(i int) error { _, err := plain.Get(ctx, keys[i%hot]); return err }},
		{"near", func(i int) error { _, err := near.Get(ctx, keys[i%hot]); return err }},
		{"near-async", func(i int) error { _, err := near.GetAsync(ctx, keys[i%hot]).Wait(); return err }},
	}
	for _, im := range impls {
		b.Run("callers=50/impl="+im.name, func(b *testing.B) {
			before := near.Stats().Near
			runCallers(b, 50, im.fn)
			if after := near.Stats().Near; after.Hits+after.Misses > before.Hits+before.Misses {
				b.ReportMetric(float64(after.Hits-before.Hits)/float64(after.Hits+after.Misses-before.Hits-before.Misses), "near-hit-ratio")
			}
		})
	}
}

// BenchmarkNearCacheStaleWindow measures how long a manager with the near
// cache can return the old value of a hot key after another client's SET
// has been acknowledged: each iteration SETs a new value from a second
// client, then reads through the manager until it returns that value.
// Reports the p50, p99 and max of that window. Run it with
// -benchtime=2000x for at least 1000 samples.
func BenchmarkNearCacheStaleWindow(b *testing.B) {
	url := redistest.URL(b, dbNear)
	ctx := context.Background()
	m, err := cachemgr.New(cachemgr.Options{URL: url, KeyPrefix: redistest.Prefix(b),
		NearCache: cachemgr.NearCacheOptions{MaxEntries: 1000}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		m.DeletePattern(ctx, "*")
		m.Close()
	}()
	opts, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	other := redis.NewClient(opts)
	defer other.Close()
	key := m.Key("stale")
	if err := other.Set(ctx, key, "0", time.Hour).Err(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for m.Stats().Near.Hits == 0 {
		if time.Now().After(deadline) {
			b.Fatal("near cache not live after 15s")
		}
		if _, err := m.Get(ctx, "stale"); err != nil {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, yield := range []bool{true, false} {
		name := "reader=spin"
		if yield {
			name = "reader=yield"
		}
		b.Run(name, func(b *testing.B) { staleWindow(b, m, other, yield) })
	}
}

// staleWindow is one BenchmarkNearCacheStaleWindow run. A yielding reader
// calls runtime.Gosched between reads, as a reader doing other work would;
// a spinning one does not, and so competes with the tracker's goroutine
// for the CPU.
func staleWindow(b *testing.B, m *cachemgr.Manager, other *redis.Client, yield bool) {
	ctx := context.Background()
	key := m.Key("stale")
	var (
		windows   []time.Duration
		staleHits uint64
	)
	for i := 1; b.Loop(); i++ {
		want := b.Name() + strconv.Itoa(i)
		// The old value is in the near cache before the write.
		for m.Stats().Near.Entries == 0 {
			if _, err := m.Get(ctx, "stale"); err != nil {
				b.Fatal(err)
			}
		}
		if err := other.Set(ctx, key, want, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		for {
			v, err := m.Get(ctx, "stale")
			if err != nil {
				b.Fatal(err)
			}
			if v == want {
				break
			}
			staleHits++
			if time.Since(acked) > 10*time.Second {
				b.Fatalf("old value still served 10s after the write")
			}
			if yield {
				runtime.Gosched()
			}
		}
		windows = append(windows, time.Since(acked))
	}
	slices.Sort(windows)
	q := func(p float64) float64 { return float64(windows[int(p*float64(len(windows)-1))].Nanoseconds()) }
	b.ReportMetric(q(0.5), "p50-ns")
	b.ReportMetric(q(0.99), "p99-ns")
	b.ReportMetric(q(1), "max-ns")
	b.ReportMetric(float64(staleHits)/float64(len(windows)), "stale-reads/op")
}
