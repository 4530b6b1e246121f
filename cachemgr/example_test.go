package cachemgr_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/forgeq/forgeq/cachemgr"
)

// The seed's two halves: a task handler uses the sync API (cache, then
// compute, then store); a web handler uses the async API.
func Example() {
	mr, _ := miniredis.Run() // any Redis URL works here
	defer mr.Close()

	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr()})
	if err != nil {
		panic(err)
	}
	defer m.Close() // waits for accepted async work
	ctx := context.Background()

	// Sync, as in a task handler.
	v, hit, err := m.GetOrCompute(ctx, "user:profile:1", 5*time.Minute, func(ctx context.Context) (string, error) {
		return `{"name":"John"}`, nil // the expensive part
	})
	fmt.Println(v, hit, err)

	// Async, as in a web handler: start both, then wait.
	get := m.GetAsync(ctx, "user:profile:1")
	del := m.DeleteAsync(ctx, "user:profile:2")
	cached, err := get.Wait()
	fmt.Println(cached, err)
	n, _ := del.Wait()
	fmt.Println("deleted", n)

	// Pattern invalidation stays inside the cache's prefix.
	n, _ = m.DeletePattern(ctx, "user:*")
	fmt.Println("invalidated", n)
	// Output:
	// {"name":"John"} false <nil>
	// {"name":"John"} <nil>
	// deleted 0
	// invalidated 1
}

func ExampleManager_GetOrCompute() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	m, _ := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr()})
	defer m.Close()

	compute := func(ctx context.Context) (string, error) { return "42", nil }
	for range 2 {
		v, hit, _ := m.GetOrCompute(context.Background(), "answer", time.Hour, compute)
		fmt.Println(v, hit)
	}
	// Output:
	// 42 false
	// 42 true
}

// A near cache keeps hot keys in process memory; Redis invalidates them
// when anyone writes (client tracking), so a read never lags a write by
// more than a few milliseconds. miniredis has no client tracking: there
// the near cache turns itself off (one log line) and every read goes to
// Redis, so this example runs anywhere and still reads fresh values.
func ExampleNearCacheOptions() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	m, err := cachemgr.New(cachemgr.Options{
		URL:       "redis://" + mr.Addr(),
		NearCache: cachemgr.NearCacheOptions{MaxEntries: 10_000, MaxBytes: 32 << 20},
	})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	_ = m.Set(ctx, "user:1", "Ada", 0)
	v, _ := m.Get(ctx, "user:1") // on a real Redis, repeated reads come from memory
	fmt.Println(v)

	mr.Set(m.Key("user:1"), "Grace") // another process writes
	v, _ = m.Get(ctx, "user:1")
	fmt.Println(v)

	st := m.Stats()
	fmt.Println("near cache on:", st.Near.Enabled)
	fmt.Println("hits:", st.Tiers[cachemgr.TierNear].Hits+st.Tiers[cachemgr.TierRedis].Hits)
	// Output:
	// Ada
	// Grace
	// near cache on: true
	// hits: 2
}
