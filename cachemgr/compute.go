package cachemgr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// lockSegment marks the keys of GetOrCompute's cross-process locks inside
// the prefix.
const lockSegment = "__lock__:"

// Waiting for another process's computation polls the value with a backoff
// between these bounds.
const (
	minPoll = 2 * time.Millisecond
	maxPoll = 50 * time.Millisecond
)

var (
	// renewScript extends the lock only while we still hold it.
	renewScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
	// releaseScript deletes the lock only while we still hold it.
	releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)

// Computed is the result of GetOrComputeAsync.
type Computed struct {
	Value string
	Hit   bool // true when the value came from the cache, not this call's compute
}

// GetOrCompute returns the value of key from the cache (hit == true) or
// computes it, stores it for ttl (0: Options.DefaultTTL) and returns it.
//
// It protects against stampedes: inside the process, concurrent calls for
// one key share a single computation (singleflight); across processes, the
// computing process holds a short Redis lock (Options.LockTTL, renewed while
// it computes) and the others wait for the value instead of computing it
// again. If the holder dies, its lock expires and a waiter takes over; if
// its compute fails, a waiter computes instead.
//
// A caller whose ctx ends stops waiting and gets ctx.Err(); the shared
// computation is cancelled only when every caller waiting for it has gone.
// An error from compute is returned wrapped (errors.Is works) and nothing is
// stored. Other errors: ErrClosed, ErrInvalidArgument, Redis errors.
func (m *Manager) GetOrCompute(ctx context.Context, key string, ttl time.Duration,
	compute func(context.Context) (string, error)) (value string, hit bool, err error) {
	if err := m.closedErr(); err != nil {
		m.stats.record(OpGetOrCompute, err)
		return "", false, err
	}
	return m.runGetOrCompute(ctx, key, ttl, compute)
}

// runGetOrCompute is GetOrCompute for a call already accepted.
func (m *Manager) runGetOrCompute(ctx context.Context, key string, ttl time.Duration,
	compute func(context.Context) (string, error)) (string, bool, error) {
	defer m.stats.took(OpGetOrCompute, time.Now())
	v, hit, err := m.getOrCompute(ctx, key, ttl, compute)
	switch {
	case err != nil:
		m.stats.ops[OpGetOrCompute].calls.Add(1)
		m.stats.ops[OpGetOrCompute].errors.Add(1)
	case hit:
		m.stats.read(OpGetOrCompute, nil)
	default:
		m.stats.read(OpGetOrCompute, ErrMiss)
	}
	return v, hit, err
}

// GetOrComputeAsync is GetOrCompute on its own goroutine.
func (m *Manager) GetOrComputeAsync(ctx context.Context, key string, ttl time.Duration,
	compute func(context.Context) (string, error)) *Future[Computed] {
	return goAsync(m, ctx, ctx, func(ctx context.Context) (Computed, error) {
		v, hit, err := m.runGetOrCompute(ctx, key, ttl, compute)
		return Computed{Value: v, Hit: hit}, err
	})
}

func (m *Manager) getOrCompute(ctx context.Context, key string, ttl time.Duration,
	compute func(context.Context) (string, error)) (string, bool, error) {
	if err := validKey(key); err != nil {
		return "", false, err
	}
	if compute == nil {
		return "", false, fmt.Errorf("%w: nil compute function", ErrInvalidArgument)
	}
	exp, err := m.expiry(ttl)
	if err != nil {
		return "", false, err
	}
	v, err := m.get(ctx, m.prefix+key)
	if err == nil {
		return v, true, nil
	}
	if !errors.Is(err, redis.Nil) {
		return "", false, m.wrap("get", key, err)
	}

	f := m.joinFlight(ctx, key)
	ch := m.flights.DoChan(key, func() (any, error) {
		v, hit, err := m.computeLocked(f.ctx, key, exp, compute)
		return Computed{Value: v, Hit: hit}, err
	})
	select {
	case res := <-ch:
		m.leaveFlight(key, f)
		c, _ := res.Val.(Computed)
		return c.Value, c.Hit, res.Err
	case <-ctx.Done():
		m.leaveFlight(key, f)
		return "", false, ctx.Err()
	}
}

// flight is the shared context of one in-process computation: it is
// cancelled when the last caller waiting for it leaves.
type flight struct {
	ctx     context.Context
	cancel  context.CancelFunc
	waiters int
}

type flightTable struct {
	mu sync.Mutex
	m  map[string]*flight
}

func (m *Manager) joinFlight(ctx context.Context, key string) *flight {
	t := &m.flightCtx
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*flight)
	}
	f := t.m[key]
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{ctx: fctx, cancel: cancel}
		t.m[key] = f
	}
	f.waiters++
	return f
}

func (m *Manager) leaveFlight(key string, f *flight) {
	t := &m.flightCtx
	t.mu.Lock()
	defer t.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		f.cancel()
		if t.m[key] == f {
			delete(t.m, key)
		}
	}
}

// computeLocked runs the cross-process protocol for one key: take the lock
// and compute, or wait for whoever holds it.
func (m *Manager) computeLocked(ctx context.Context, key string, exp time.Duration,
	compute func(context.Context) (string, error)) (string, bool, error) {
	full, lock := m.prefix+key, m.prefix+lockSegment+key
	token := newToken()
	poll := minPoll
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		rctx := m.roundTrip(ctx)
		ok, err := m.rdb.SetNX(rctx, lock, token, m.opts.LockTTL).Result()
		if err != nil {
			return "", false, m.wrap("lock", key, err)
		}
		if ok {
			return m.computeHolding(ctx, key, full, lock, token, exp, compute)
		}
		// Another process computes: wait for its value, or for its lock to
		// go (done without a value, failed, or died), then try again.
		timer.Reset(poll)
		select {
		case <-ctx.Done():
			return "", false, ctx.Err()
		case <-timer.C:
		}
		poll = min(poll*2, maxPoll)
		v, err := m.get(ctx, full)
		if err == nil {
			return v, true, nil
		}
		if !errors.Is(err, redis.Nil) {
			return "", false, m.wrap("get", key, err)
		}
	}
}

func (m *Manager) computeHolding(ctx context.Context, key, full, lock, token string, exp time.Duration,
	compute func(context.Context) (string, error)) (string, bool, error) {
	defer func() {
		// Release even if ctx was cancelled, so waiters need not wait for
		// the lock to expire.
		rctx := m.roundTrip(context.WithoutCancel(ctx))
		if err := releaseScript.Run(rctx, m.rdb, []string{lock}, token).Err(); err != nil {
			m.log.Warn("compute lock release failed", zap.String("cache_key", key), zap.Error(err))
		}
	}()
	// The value may have been stored between our miss and taking the lock.
	v, err := m.get(ctx, full)
	if err == nil {
		return v, true, nil
	}
	if !errors.Is(err, redis.Nil) {
		return "", false, m.wrap("get", key, err)
	}

	stop := m.renewLock(ctx, key, lock, token)
	m.stats.computations.Add(1)
	v, err = compute(ctx)
	stop()
	if err != nil {
		return "", false, fmt.Errorf("cachemgr: compute %q: %w", key, err)
	}
	sctx := m.roundTrip(ctx)
	err = m.rdb.Set(sctx, full, v, exp).Err()
	m.nearWrote(key)
	if err != nil {
		return "", false, m.wrap("set", key, err)
	}
	return v, false, nil
}

// get is one GET of a full key under the round-trip bound.
func (m *Manager) get(ctx context.Context, full string) (string, error) {
	ctx = m.roundTrip(ctx)
	return m.rdb.Get(ctx, full).Result()
}

// renewLock extends the lock every LockTTL/3 until stop is called.
func (m *Manager) renewLock(ctx context.Context, key, lock, token string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		every := m.opts.LockTTL / 3
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				rctx := m.roundTrip(ctx)
				n, err := renewScript.Run(rctx, m.rdb, []string{lock}, token, m.opts.LockTTL.Milliseconds()).Int()
				switch {
				case err != nil && ctx.Err() == nil:
					m.log.Warn("compute lock renewal failed", zap.String("cache_key", key), zap.Error(err))
				case err == nil && n == 0:
					m.log.Warn("compute lock lost while computing", zap.String("cache_key", key))
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	return hex.EncodeToString(b[:])
}
