package cachemgr

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
)

func TestDeadlinesShareOneContextPerSlice(t *testing.T) {
	t.Parallel()
	ds := deadlines{d: 8 * time.Second} // slices of 1s
	t0 := time.Now()
	a := ds.at(t0)
	if b := ds.at(t0.Add(900 * time.Millisecond)); b != a {
		t.Error("a call in the same slice got another context")
	}
	// Never later than a socket timeout after the call: see deadline.go.
	for _, now := range []time.Time{t0, t0.Add(900 * time.Millisecond)} {
		d, ok := a.Deadline()
		if left := d.Sub(now); !ok || left <= ds.d*7/8 || left > ds.d {
			t.Errorf("deadline %v after the call, want more than %v, at most %v", left, ds.d*7/8, ds.d)
		}
	}
	next := ds.at(t0.Add(time.Second))
	if next == a {
		t.Fatal("the next slice got the same context")
	}
	if d, _ := next.Deadline(); d.Sub(t0.Add(time.Second)) != ds.d {
		t.Errorf("new slice's deadline %v after its start, want %v", d.Sub(t0.Add(time.Second)), ds.d)
	}
}

type ctxKey struct{}

func TestRoundTripContext(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ReadTimeout: 2 * time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	m, err := NewFromClient(rdb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if m.OpTimeout() != 2*time.Second {
		t.Fatalf("OpTimeout = %v, want the longer socket timeout, 2s", m.OpTimeout())
	}

	parent := context.WithValue(context.Background(), ctxKey{}, "span")
	ctx := m.roundTrip(parent)
	if ctx == parent {
		t.Fatal("no deadline added to a context without one")
	}
	if d, ok := ctx.Deadline(); !ok || time.Until(d) < time.Second || time.Until(d) > 2*time.Second {
		t.Errorf("deadline in %v, want about 2s", time.Until(d))
	}
	if ctx.Value(ctxKey{}) != "span" {
		t.Error("the caller's values are lost")
	}

	soon, cancel := context.WithTimeout(parent, time.Second)
	defer cancel()
	if m.roundTrip(soon) != soon {
		t.Error("a context whose own deadline comes first was replaced")
	}
	done, cancelDone := context.WithCancel(parent)
	cancelDone()
	if m.roundTrip(done) != done {
		t.Error("a cancelled context was replaced: its call would not fail with its error")
	}

	unbounded := redis.NewClient(&redis.Options{Addr: mr.Addr(), ReadTimeout: -1})
	t.Cleanup(func() { unbounded.Close() })
	mu, err := NewFromClient(unbounded, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mu.Close() })
	if mu.OpTimeout() != 0 || mu.roundTrip(parent) != parent {
		t.Errorf("a client without timeouts: OpTimeout %v, want 0 and no deadline", mu.OpTimeout())
	}
}

// BenchmarkRoundTripBound measures what bounding a round trip costs: a GET
// on a real Redis (REDIS_TEST_URL) under the caller's context as it is
// (none), under Manager.roundTrip's shared deadline (shared), and under a
// context.WithTimeout per call (timer, the obvious way), interleaved by
// -count in one run. BENCHMARKS.md has the figures and the command.
func BenchmarkRoundTripBound(b *testing.B) {
	opts, err := redis.ParseURL(redistest.URL(b, 1) /* dbCache */)
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	m, err := NewFromClient(rdb, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	key := redistest.Prefix(b) + "bench:bound"
	if err := rdb.Set(ctx, key, "v", 0).Err(); err != nil {
		b.Fatal(err)
	}
	defer rdb.Del(ctx, key)
	bounds := map[string]func(context.Context) (context.Context, context.CancelFunc){
		"none":   func(ctx context.Context) (context.Context, context.CancelFunc) { return ctx, func() {} },
		"shared": func(ctx context.Context) (context.Context, context.CancelFunc) { return m.roundTrip(ctx), func() {} },
		"timer": func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, m.OpTimeout())
		},
	}
	for _, callers := range []int{1, 50} {
		for _, bound := range []string{"none", "shared", "timer"} {
			fn := bounds[bound]
			b.Run(fmt.Sprintf("callers=%d/bound=%s", callers, bound), func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						rctx, cancel := fn(ctx)
						err := rdb.Get(rctx, key).Err()
						cancel()
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
