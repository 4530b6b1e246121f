package cachemgr_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/proctest"
)

// TestFrozenRedisFailsWithinSocketTimeout freezes a real redis-server
// (SIGSTOP: the kernel still accepts connections, nothing answers) and
// makes every kind of call. Each must fail with a timeout error while the
// server is still frozen, not wait for it: go-redis alone retries a timed
// out command (MaxRetries) and takes several socket timeouts.
//
// The pool holds many idle connections when Redis freezes, as in a busy
// process, so a call that times out and is retried by go-redis gets
// another pooled connection, as dead as the first, and a call would take
// up to 4 socket timeouts (MaxRetries 3). A call fails "fast" when it
// returns with an error before the server thaws; one that makes one
// attempt too many outlasts the freeze and then succeeds, which fails the
// test. The test measures no time itself.
func TestFrozenRedisFailsWithinSocketTimeout(t *testing.T) {
	t.Parallel()
	const socketTimeout = time.Second
	r := proctest.RedisServer(t)
	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + r.Addr(), SocketTimeout: socketTimeout, PoolSize: 128})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ctx := context.Background()
	if err := m.Set(ctx, "warm", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := m.OpTimeout(); got != socketTimeout {
		t.Errorf("OpTimeout = %v, want the socket timeout %v", got, socketTimeout)
	}

	// One round trip each, so one socket timeout: the freeze lasts 1.75,
	// which leaves 750ms to spare on a busy machine and ends before a
	// second attempt would.
	t.Run("sync", func(t *testing.T) {
		proctest.WarmPool(t, m.Client().(*redis.Client), 32)
		checkFrozen(t, r, socketTimeout*7/4, map[string]func() error{
			"Get":  func() error { _, err := m.Get(ctx, "warm"); return err },
			"Set":  func() error { return m.Set(ctx, "k", "v", 0) },
			"Ping": func() error { return m.Ping(ctx) },
			"Delete": func() error {
				_, err := m.Delete(ctx, "a", "b")
				return err
			},
			"DeletePattern": func() error { _, err := m.DeletePattern(ctx, "x:*"); return err },
			"GetOrCompute": func() error {
				_, _, err := m.GetOrCompute(ctx, "cold", 0, func(context.Context) (string, error) { return "v", nil })
				return err
			},
			"GetJSON": func() error { _, err := cachemgr.GetJSON[int](ctx, m, "warm"); return err },
			"Allow": func() error {
				_, err := m.Allow(ctx, "rl", cachemgr.Limit{Rate: 10, Burst: 10, Period: time.Second})
				return err
			},
			"GetSession": func() error {
				return m.GetSession(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", new(map[string]any))
			},
			// These two run the sync call on a goroutine.
			"PingAsync": func() error { _, err := m.PingAsync(ctx).Wait(); return err },
			"GetOrComputeAsync": func() error {
				_, err := m.GetOrComputeAsync(ctx, "cold2", 0, func(context.Context) (string, error) { return "v", nil }).Wait()
				return err
			},
		})
	})

	// Pipelined calls: at most a socket timeout queued behind the batches
	// on the wire (else they fail unsent), then at most one on the wire.
	// Many at once, so that some queue. The freeze lasts 2.75.
	t.Run("pipelined", func(t *testing.T) {
		proctest.WarmPool(t, m.Client().(*redis.Client), 32)
		calls := map[string]func() error{}
		for i := range 25 {
			calls[fmt.Sprint("GetAsync ", i)] = func() error { _, err := m.GetAsync(ctx, "warm").Wait(); return err }
			calls[fmt.Sprint("SetAsync ", i)] = func() error { _, err := m.SetAsync(ctx, "k2", "v", 0).Wait(); return err }
			calls[fmt.Sprint("DeleteAsync ", i)] = func() error { _, err := m.DeleteAsync(ctx, "k3").Wait(); return err }
			calls[fmt.Sprint("GetJSONAsync ", i)] = func() error {
				_, err := cachemgr.GetJSONAsync[int](ctx, m, "warm").Wait()
				return err
			}
		}
		// A write-behind backlog of 6 pipelines: 3 rounds of the 2
		// flushers, were the queued ones not failed unsent.
		calls["SetAsync backlog"] = func() error {
			fs := make([]*cachemgr.Future[struct{}], 6*512)
			for i := range fs {
				fs[i] = m.SetAsync(ctx, fmt.Sprint("backlog:", i), "v", 0)
			}
			var last error
			for _, f := range fs {
				if _, err := f.Wait(); err == nil {
					return nil // reported as a success
				} else {
					last = err
				}
			}
			return last
		}
		checkFrozen(t, r, socketTimeout*11/4, calls)
	})

	// The manager works again once Redis answers.
	if v, err := m.Get(ctx, "warm"); err != nil || v != "v" {
		t.Errorf("Get after the thaw = %q, %v", v, err)
	}
}

// checkFrozen freezes r for d, makes the calls at once and checks that
// each fails with a timeout before the thaw; it returns after the thaw.
func checkFrozen(t *testing.T, r *proctest.Redis, d time.Duration, calls map[string]func() error) {
	t.Helper()
	thawed := r.Pause(d)
	type result struct {
		err      error
		inFreeze bool
	}
	var (
		mu      sync.Mutex
		results = map[string]result{}
		wg      sync.WaitGroup
	)
	for name, call := range calls {
		wg.Go(func() {
			err := call()
			frozen := true
			select {
			case <-thawed:
				frozen = false
			default:
			}
			mu.Lock()
			results[name] = result{err, frozen}
			mu.Unlock()
		})
	}
	wg.Wait()
	for name, res := range results {
		switch {
		case res.err == nil:
			t.Errorf("%s on a frozen Redis succeeded", name)
		case !res.inFreeze:
			t.Errorf("%s on a frozen Redis returned only after it thawed: %v", name, res.err)
		case !isTimeout(res.err):
			t.Errorf("%s on a frozen Redis: %v, want a timeout", name, res.err)
		}
	}
	<-thawed
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &te) && te.Timeout())
}
