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
