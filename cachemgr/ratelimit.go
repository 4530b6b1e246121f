package cachemgr

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/go-redis/redis_rate/v10"
)

// Rate limiting uses go-redis/redis_rate, an implementation of GCRA (the
// generic cell rate algorithm) in a single Lua script: reading the state,
// deciding and writing the new state with its expiry happen atomically on
// the server, with the server's clock (TIME). So there is no window between
// a read and an increment for concurrent callers to slip through, and the
// state key is only ever written together with its TTL. One key per call
// means it works on a cluster too.
//
// The state of a key lives in Redis under
//
//	"rate:" + KeyPrefix + "ratelimit:" + key
//
// ("rate:cache:ratelimit:login:10.0.0.1" with the default prefix):
// redis_rate adds "rate:" in front of the key it is given. Because it does
// not start with KeyPrefix, DeletePattern never touches it.

// rateKeyInfix separates rate limiter keys from cache keys under KeyPrefix.
const rateKeyInfix = "ratelimit:"

// remainingSlack is how far redis_rate's state may be off because of float
// arithmetic (its script keeps times as float seconds since 2017 and stores
// them with 14 significant digits, about 10µs). See rateResult.
const remainingSlack = 10 * time.Microsecond

// Limit is a rate limit: Rate requests per Period, with bursts of up to
// Burst requests (0: Rate). A full bucket allows Burst requests at once;
// after that one more is allowed every Period/Rate. PerMinute(100) allows
// 100 requests at once and then one every 600ms.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// PerSecond returns a limit of n requests per second, with bursts of n.
func PerSecond(n int) Limit { return Limit{Rate: n, Period: time.Second, Burst: n} }

// PerMinute returns a limit of n requests per minute, with bursts of n.
func PerMinute(n int) Limit { return Limit{Rate: n, Period: time.Minute, Burst: n} }

// PerHour returns a limit of n requests per hour, with bursts of n.
func PerHour(n int) Limit { return Limit{Rate: n, Period: time.Hour, Burst: n} }

// RateResult is the outcome of one Allow or AllowN call.
type RateResult struct {
	// Allowed reports whether the requests were allowed (and counted).
	// A denied call is not counted against the limit.
	Allowed bool
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// RetryAfter is how long to wait before the same call would be
	// allowed: positive when denied, 0 when Allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to a full bucket
	// (Remaining == Burst) if no more requests come.
	ResetAfter time.Duration
	// Limit is the limit applied, with Burst filled in.
	Limit Limit
}

// Allow reports whether one request under key fits into l, and counts it
// if so. It is AllowN with n == 1.
func (m *Manager) Allow(ctx context.Context, key string, l Limit) (RateResult, error) {
	return m.AllowN(ctx, key, l, 1)
}

// AllowN reports whether n requests under key fit into l right now, and
// counts them if so; a denied call counts nothing. The decision is made
// atomically in Redis, so any number of goroutines and processes may share
// a key: with PerMinute(100), exactly 100 of a simultaneous flood get
// through. The state key expires by itself once the bucket is full again.
//
// Errors wrap ErrInvalidArgument for an empty key, Rate <= 0, Period <= 0,
// Burst < 0, n < 1 or n greater than the burst (which could never be
// allowed). Other errors: ErrClosed, Redis errors. It is safe for
// concurrent use.
func (m *Manager) AllowN(ctx context.Context, key string, l Limit, n int) (RateResult, error) {
	defer m.stats.took(OpRateLimit, time.Now())
	res, err := m.allowN(ctx, key, l, n)
	m.stats.record(OpRateLimit, err)
	return res, err
}

func (m *Manager) allowN(ctx context.Context, key string, l Limit, n int) (RateResult, error) {
	if err := m.check(key); err != nil {
		return RateResult{}, err
	}
	l, err := l.normalize()
	if err != nil {
		return RateResult{}, err
	}
	if n < 1 || n > l.Burst {
		return RateResult{}, fmt.Errorf("%w: rate limit n %d is outside [1, Burst %d]", ErrInvalidArgument, n, l.Burst)
	}
	ctx = m.roundTrip(ctx)
	res, err := m.limiter.AllowN(ctx, m.prefix+rateKeyInfix+key,
		redis_rate.Limit{Rate: l.Rate, Period: l.Period, Burst: l.Burst}, n)
	if err != nil {
		return RateResult{}, m.wrap("rate limit", key, err)
	}
	return rateResult(res, l, n), nil
}

// ResetLimit forgets the state of key, so its next call starts with a full
// bucket. Resetting a key without state is not an error. Errors: ErrClosed,
// ErrInvalidArgument for an empty key, Redis errors. It is safe for
// concurrent use.
func (m *Manager) ResetLimit(ctx context.Context, key string) error {
	defer m.stats.took(OpRateLimit, time.Now())
	err := m.check(key)
	if err == nil {
		ctx := m.roundTrip(ctx)
		err = m.wrap("reset rate limit", key, m.limiter.Reset(ctx, m.prefix+rateKeyInfix+key))
	}
	m.stats.record(OpRateLimit, err)
	return err
}

// normalize fills in Burst and validates l.
func (l Limit) normalize() (Limit, error) {
	switch {
	case l.Rate <= 0:
		return l, fmt.Errorf("%w: rate limit Rate %d is not positive", ErrInvalidArgument, l.Rate)
	case l.Period <= 0:
		return l, fmt.Errorf("%w: rate limit Period %v is not positive", ErrInvalidArgument, l.Period)
	case l.Burst < 0:
		return l, fmt.Errorf("%w: rate limit Burst %d is negative", ErrInvalidArgument, l.Burst)
	case l.Burst == 0:
		l.Burst = l.Rate
	}
	return l, nil
}

// rateResult converts redis_rate's result. redis_rate's Remaining is the
// script's float truncated by Redis, and float error makes it one too low
// whenever the true value is a whole number with no time elapsed since the
// last call: the very first call of PerMinute(100) reports 98. After an
// allowed call the script's ResetAfter is Burst - Remaining in units of
// Period/Rate, with the fraction intact, so Remaining is recomputed from it,
// tolerating remainingSlack of error, and kept within one of redis_rate's
// figure.
func rateResult(res *redis_rate.Result, l Limit, n int) RateResult {
	out := RateResult{
		Allowed:    res.Allowed > 0,
		Remaining:  res.Remaining,
		RetryAfter: res.RetryAfter,
		ResetAfter: res.ResetAfter,
		Limit:      l,
	}
	if !out.Allowed {
		// Denied means the script's wait was positive, however small.
		out.RetryAfter = max(out.RetryAfter, time.Nanosecond)
		return out
	}
	out.RetryAfter = 0
	interval := float64(l.Period) / float64(l.Rate)
	r := int(math.Floor(float64(l.Burst) - float64(res.ResetAfter-remainingSlack)/interval))
	r = min(r, res.Remaining+1, l.Burst-n)
	out.Remaining = max(r, res.Remaining, 0)
	return out
}
