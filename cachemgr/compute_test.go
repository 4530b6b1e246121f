package cachemgr_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
)

// twoProcesses returns two managers with their own pools on one server, as
// two worker processes would have.
func twoProcesses(t *testing.T, addr string, o cachemgr.Options) (*cachemgr.Manager, *cachemgr.Manager) {
	t.Helper()
	var ms [2]*cachemgr.Manager
	for i := range ms {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { rdb.Close() })
		m, err := cachemgr.NewFromClient(rdb, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms[i] = m
	}
	return ms[0], ms[1]
}

// stampede runs n goroutines per manager on one cold key and returns how
// many computations ran and the values and hit flags seen.
func stampede(t *testing.T, ms []*cachemgr.Manager, n int, key string) (computed int64, hits int64) {
	t.Helper()
	var calls atomic.Int64
	compute := func(ctx context.Context) (string, error) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond) // long enough for everyone to pile up
		return "expensive", nil
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	var hitCount atomic.Int64
	for _, m := range ms {
		for range n {
			wg.Go(func() {
				<-start
				v, hit, err := m.GetOrCompute(context.Background(), key, time.Minute, compute)
				if err != nil || v != "expensive" {
					t.Errorf("GetOrCompute = %q, %v", v, err)
				}
				if hit {
					hitCount.Add(1)
				}
			})
		}
	}
	close(start)
	wg.Wait()
	return calls.Load(), hitCount.Load()
}

func TestGetOrComputeOnceAcrossProcesses(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	a, b := twoProcesses(t, mr.Addr(), cachemgr.Options{})
	computed, _ := stampede(t, []*cachemgr.Manager{a, b}, 50, "report:1")
	if computed != 1 {
		t.Fatalf("computations = %d, want exactly 1", computed)
	}
	if got := a.Stats().Computations + b.Stats().Computations; got != 1 {
		t.Errorf("Stats().Computations = %d", got)
	}
	if ttl := mr.TTL("cache:report:1"); ttl != time.Minute {
		t.Errorf("stored TTL = %v", ttl)
	}
	// Warm now: a hit, no computation.
	v, hit, err := a.GetOrCompute(context.Background(), "report:1", time.Minute, func(context.Context) (string, error) {
		t.Error("computed a warm key")
		return "", nil
	})
	if err != nil || !hit || v != "expensive" {
		t.Errorf("warm = %q, %v, %v", v, hit, err)
	}
	if mr.Exists("cache:__lock__:report:1") {
		t.Error("lock left behind")
	}
}

func TestGetOrComputeErrorStoresNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, cachemgr.Options{})
	boom := errors.New("db down")
	_, _, err := b.m.GetOrCompute(ctx, "k", 0, func(context.Context) (string, error) { return "", boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want wrapping %v", err, boom)
	}
	if len(b.mr.Keys()) != 0 {
		t.Errorf("keys after failed compute: %v", b.mr.Keys())
	}
	v, hit, err := b.m.GetOrCompute(ctx, "k", 0, func(context.Context) (string, error) { return "ok", nil })
	if err != nil || hit || v != "ok" {
		t.Errorf("retry = %q, %v, %v", v, hit, err)
	}
	s := b.m.Stats().Ops[cachemgr.OpGetOrCompute]
	if s.Calls != 2 || s.Errors != 1 || s.Misses != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestGetOrComputeTakesOverFromDeadHolder(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	// A process that died while computing left its lock behind.
	b.mr.Set("cache:__lock__:k", "someone-else")
	go func() {
		time.Sleep(100 * time.Millisecond)
		b.mr.Del("cache:__lock__:k") // the lock expires
	}()
	start := time.Now()
	v, hit, err := b.m.GetOrCompute(context.Background(), "k", 0, func(context.Context) (string, error) { return "mine", nil })
	if err != nil || hit || v != "mine" {
		t.Fatalf("= %q, %v, %v", v, hit, err)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Error("computed while another process held the lock")
	}
}

func TestGetOrComputeWaitsForOtherProcess(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	b.mr.Set("cache:__lock__:k", "someone-else")
	go func() {
		time.Sleep(50 * time.Millisecond)
		b.mr.Set("cache:k", "theirs")
		b.mr.Del("cache:__lock__:k")
	}()
	v, hit, err := b.m.GetOrCompute(context.Background(), "k", 0, func(context.Context) (string, error) {
		t.Error("computed although another process was computing")
		return "mine", nil
	})
	if err != nil || !hit || v != "theirs" {
		t.Fatalf("= %q, %v, %v", v, hit, err)
	}
}

func TestGetOrComputeCallerCancelLeavesOthers(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	release := make(chan struct{})
	var calls atomic.Int64
	compute := func(ctx context.Context) (string, error) {
		calls.Add(1)
		select {
		case <-release:
			return "v", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	impatient, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.m.GetOrCompute(impatient, "k", 0, compute)
		errc <- err
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	patient := make(chan string, 1)
	go func() {
		v, _, _ := b.m.GetOrCompute(context.Background(), "k", 0, compute)
		patient <- v
	}()
	time.Sleep(200 * time.Millisecond) // let the patient caller join the flight
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("impatient caller: %v", err)
	}
	close(release)
	if v := <-patient; v != "v" {
		t.Errorf("patient caller got %q: the shared computation was cancelled", v)
	}
	if calls.Load() != 1 {
		t.Errorf("computations = %d", calls.Load())
	}
}

func TestGetOrComputeAllCallersGoneCancels(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	started, cancelled := make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, _, err := b.m.GetOrCompute(ctx, "k", 0, func(ctx context.Context) (string, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return "", ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("computation not cancelled after its only caller left")
	}
}

func TestGetOrComputeRenewsLock(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{LockTTL: 30 * time.Millisecond})
	var ttls []time.Duration
	_, _, err := b.m.GetOrCompute(context.Background(), "slow", 0, func(context.Context) (string, error) {
		for range 5 {
			time.Sleep(20 * time.Millisecond)
			b.mr.FastForward(20 * time.Millisecond) // without renewals the lock is gone after two of these
			ttls = append(ttls, b.mr.TTL("cache:__lock__:slow"))
		}
		return "v", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Renewals every LockTTL/3 (10ms) keep resetting the TTL to 30ms, so it
	// is still positive after each 20ms step.
	for i, ttl := range ttls {
		if ttl <= 0 || ttl > 30*time.Millisecond {
			t.Errorf("lock TTL #%d = %v, want (0, 30ms]", i, ttl)
		}
	}
}

func TestGetOrComputeAsync(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	f := b.m.GetOrComputeAsync(context.Background(), "k", 0, func(context.Context) (string, error) { return "v", nil })
	c, err := f.Wait()
	if err != nil || c.Value != "v" || c.Hit {
		t.Fatalf("= %+v, %v", c, err)
	}
	c, err = b.m.GetOrComputeAsync(context.Background(), "k", 0, nil).Wait()
	if !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("nil compute: %+v, %v", c, err)
	}
}
