package cachemgr_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
)

// The rate limiter's Lua script reads the clock with TIME. miniredis runs
// the script and answers TIME from its SetTime clock, so these tests freeze
// time at rateEpoch and move it by hand; FastForward expires the state keys.
var rateEpoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// approxDuration compares durations to within 10µs: the script computes
// them in float seconds and stores its state to about 10µs.
var approxDuration = cmp.Comparer(func(a, b time.Duration) bool {
	d := a - b
	return -10*time.Microsecond <= d && d <= 10*time.Microsecond
})

func TestRateLimitCountsDown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		give      cachemgr.Limit
		wantLimit cachemgr.Limit
	}{
		{"per second", cachemgr.PerSecond(5), cachemgr.Limit{Rate: 5, Period: time.Second, Burst: 5}},
		{"per minute", cachemgr.PerMinute(100), cachemgr.Limit{Rate: 100, Period: time.Minute, Burst: 100}},
		{"per hour", cachemgr.PerHour(7), cachemgr.Limit{Rate: 7, Period: time.Hour, Burst: 7}},
		{"burst above rate", cachemgr.Limit{Rate: 1, Period: time.Minute, Burst: 3}, cachemgr.Limit{Rate: 1, Period: time.Minute, Burst: 3}},
		{"burst below rate", cachemgr.Limit{Rate: 10, Period: time.Second, Burst: 2}, cachemgr.Limit{Rate: 10, Period: time.Second, Burst: 2}},
		{"burst defaults to rate", cachemgr.Limit{Rate: 10, Period: time.Second}, cachemgr.Limit{Rate: 10, Period: time.Second, Burst: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m, mr := miniManager(t, cachemgr.Options{})
			mr.SetTime(rateEpoch)
			burst := tt.wantLimit.Burst
			interval := tt.wantLimit.Period / time.Duration(tt.wantLimit.Rate)

			// A full bucket allows Burst calls at once, counting down. The
			// clock ticks 1µs per call, as a real one does: with no time at
			// all between calls, the script's float error can cost the last
			// request of a burst.
			const tick = time.Microsecond
			for i := range burst {
				mr.SetTime(rateEpoch.Add(time.Duration(i) * tick))
				got, err := m.Allow(ctx, "k", tt.give)
				if err != nil {
					t.Fatal(err)
				}
				want := cachemgr.RateResult{
					Allowed:    true,
					Remaining:  burst - 1 - i,
					ResetAfter: time.Duration(i+1)*interval - time.Duration(i)*tick,
					Limit:      tt.wantLimit,
				}
				if diff := cmp.Diff(want, got, approxDuration); diff != "" {
					t.Fatalf("call %d (-want +got):\n%s", i, diff)
				}
			}

			// Then it denies, saying when to come back; denials cost nothing.
			for i := range 2 {
				elapsed := time.Duration(burst+i) * tick
				mr.SetTime(rateEpoch.Add(elapsed))
				got, err := m.Allow(ctx, "k", tt.give)
				if err != nil {
					t.Fatal(err)
				}
				want := cachemgr.RateResult{
					Allowed:    false,
					Remaining:  0,
					RetryAfter: interval - elapsed,
					ResetAfter: time.Duration(burst)*interval - elapsed,
					Limit:      tt.wantLimit,
				}
				if diff := cmp.Diff(want, got, approxDuration); diff != "" {
					t.Fatalf("denied call %d (-want +got):\n%s", i, diff)
				}
			}

			// Just over one interval later, exactly one more call is allowed.
			mr.SetTime(rateEpoch.Add(interval + time.Millisecond))
			for i, wantAllowed := range []bool{true, false} {
				got, err := m.Allow(ctx, "k", tt.give)
				if err != nil {
					t.Fatal(err)
				}
				if got.Allowed != wantAllowed || got.Remaining != 0 {
					t.Fatalf("after one interval, call %d = %+v, want Allowed %v, Remaining 0", i, got, wantAllowed)
				}
			}

			// Once the bucket has refilled, the state key has expired and
			// the next call starts afresh.
			full := time.Duration(burst)*interval + time.Second
			mr.FastForward(full)
			mr.SetTime(rateEpoch.Add(interval + time.Millisecond + full))
			if keys := mr.Keys(); len(keys) != 0 {
				t.Errorf("keys after refill = %v, want none", keys)
			}
			got, err := m.Allow(ctx, "k", tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Allowed || got.Remaining != burst-1 {
				t.Errorf("after refill = %+v, want Allowed, Remaining %d", got, burst-1)
			}
		})
	}
}

func TestRateLimitAllowN(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	mr.SetTime(rateEpoch)
	l := cachemgr.PerSecond(10) // one every 100ms

	steps := []struct {
		giveN         int
		wantAllowed   bool
		wantRemaining int
		wantRetry     time.Duration
	}{
		{giveN: 3, wantAllowed: true, wantRemaining: 7},
		{giveN: 8, wantAllowed: false, wantRemaining: 0, wantRetry: 100 * time.Millisecond},
		{giveN: 7, wantAllowed: true, wantRemaining: 0},
		{giveN: 1, wantAllowed: false, wantRemaining: 0, wantRetry: 100 * time.Millisecond},
		{giveN: 10, wantAllowed: false, wantRemaining: 0, wantRetry: time.Second},
	}
	for i, s := range steps {
		mr.SetTime(rateEpoch.Add(time.Duration(i) * time.Microsecond)) // a clock that ticks (see TestRateLimitCountsDown)
		got, err := m.AllowN(ctx, "k", l, s.giveN)
		if err != nil {
			t.Fatal(err)
		}
		if got.Allowed != s.wantAllowed || got.Remaining != s.wantRemaining || !approxDurationEqual(got.RetryAfter, s.wantRetry) {
			t.Errorf("step %d: AllowN(%d) = %+v, want Allowed %v, Remaining %d, RetryAfter %v",
				i, s.giveN, got, s.wantAllowed, s.wantRemaining, s.wantRetry)
		}
	}
}

func approxDurationEqual(a, b time.Duration) bool { return cmp.Equal(a, b, approxDuration) }

func TestRateLimitRejectsBadArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		giveKey   string
		giveLimit cachemgr.Limit
		giveN     int
		wantMsg   string
	}{
		{"empty key", "", cachemgr.PerSecond(1), 1, "empty key"},
		{"zero rate", "k", cachemgr.Limit{Period: time.Second}, 1, "Rate 0 "},
		{"negative rate", "k", cachemgr.Limit{Rate: -1, Period: time.Second}, 1, "Rate -1 "},
		{"zero period", "k", cachemgr.Limit{Rate: 1}, 1, "Period 0s "},
		{"negative period", "k", cachemgr.Limit{Rate: 1, Period: -time.Second}, 1, "Period -1s "},
		{"negative burst", "k", cachemgr.Limit{Rate: 1, Period: time.Second, Burst: -1}, 1, "Burst -1 "},
		{"zero n", "k", cachemgr.PerSecond(5), 0, "n 0 "},
		{"negative n", "k", cachemgr.PerSecond(5), -2, "n -2 "},
		{"n above burst", "k", cachemgr.PerSecond(5), 6, "n 6 "},
		{"n above defaulted burst", "k", cachemgr.Limit{Rate: 2, Period: time.Second}, 3, "n 3 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, mr := miniManager(t, cachemgr.Options{})
			got, err := m.AllowN(context.Background(), tt.giveKey, tt.giveLimit, tt.giveN)
			if !errors.Is(err, cachemgr.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("AllowN error = %v, want ErrInvalidArgument mentioning %q", err, tt.wantMsg)
			}
			if diff := cmp.Diff(cachemgr.RateResult{}, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if keys := mr.Keys(); len(keys) != 0 {
				t.Errorf("keys = %v, want none", keys)
			}
		})
	}
}

func TestRateLimitKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		givePrefix string
		wantKey    string
	}{
		{"default prefix", "", "rate:cache:ratelimit:login:10.0.0.1"},
		{"custom prefix", "app1:", "rate:app1:ratelimit:login:10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m, mr := miniManager(t, cachemgr.Options{KeyPrefix: tt.givePrefix})
			mr.SetTime(rateEpoch)
			if _, err := m.Allow(ctx, "login:10.0.0.1", cachemgr.PerMinute(10)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{tt.wantKey}, mr.Keys()); diff != "" {
				t.Fatalf("keys (-want +got):\n%s", diff)
			}
			// One call takes one interval (6s) off a full bucket; the key
			// lives until the bucket is full again.
			if got := mr.TTL(tt.wantKey); got != 6*time.Second {
				t.Errorf("TTL = %v, want 6s", got)
			}
			// The state is outside the cache namespace: a cache wipe keeps it.
			if _, err := m.DeletePattern(ctx, "*"); err != nil {
				t.Fatal(err)
			}
			if !mr.Exists(tt.wantKey) {
				t.Error("DeletePattern(*) deleted the rate limit state")
			}
		})
	}
}

func TestRateLimitKeysAreIndependent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	other, err := cachemgr.NewFromClient(m.Client(), cachemgr.Options{KeyPrefix: "other:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	mr.SetTime(rateEpoch)
	l := cachemgr.PerMinute(1)

	if got, _ := m.Allow(ctx, "a", l); !got.Allowed {
		t.Fatal("first call denied")
	}
	if got, _ := m.Allow(ctx, "a", l); got.Allowed {
		t.Fatal("second call allowed")
	}
	if got, _ := m.Allow(ctx, "b", l); !got.Allowed {
		t.Error("key b limited by key a")
	}
	if got, _ := other.Allow(ctx, "a", l); !got.Allowed {
		t.Error("prefix other: limited by prefix cache:")
	}
}

func TestResetLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	mr.SetTime(rateEpoch)
	l := cachemgr.PerHour(2)

	for range 2 {
		if got, err := m.Allow(ctx, "k", l); err != nil || !got.Allowed {
			t.Fatalf("Allow = %+v, %v", got, err)
		}
	}
	if got, _ := m.Allow(ctx, "k", l); got.Allowed {
		t.Fatal("third call allowed")
	}
	if err := m.ResetLimit(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Errorf("keys after reset = %v, want none", keys)
	}
	if got, err := m.Allow(ctx, "k", l); err != nil || !got.Allowed || got.Remaining != 1 {
		t.Errorf("Allow after reset = %+v, %v, want Allowed, Remaining 1", got, err)
	}
	if err := m.ResetLimit(ctx, "never-used"); err != nil {
		t.Errorf("ResetLimit of a key without state = %v", err)
	}
	if err := m.ResetLimit(ctx, ""); !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("ResetLimit empty key = %v, want ErrInvalidArgument", err)
	}
}

func TestRateLimitStatsAndClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, mr := miniManager(t, cachemgr.Options{})
	mr.SetTime(rateEpoch)

	_, _ = m.Allow(ctx, "k", cachemgr.PerMinute(1))
	_, _ = m.Allow(ctx, "k", cachemgr.PerMinute(1)) // denied: not an error
	_, _ = m.Allow(ctx, "k", cachemgr.Limit{})      // invalid
	_ = m.ResetLimit(ctx, "k")
	want := cachemgr.OpStats{Calls: 4, Errors: 1}
	if diff := cmp.Diff(want, m.Stats().Ops[cachemgr.OpRateLimit], ignoreLatency); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Allow(ctx, "k", cachemgr.PerMinute(1)); !errors.Is(err, cachemgr.ErrClosed) {
		t.Errorf("Allow after Close = %v, want ErrClosed", err)
	}
	if _, err := m.AllowN(ctx, "k", cachemgr.PerMinute(5), 2); !errors.Is(err, cachemgr.ErrClosed) {
		t.Errorf("AllowN after Close = %v, want ErrClosed", err)
	}
	if err := m.ResetLimit(ctx, "k"); !errors.Is(err, cachemgr.ErrClosed) {
		t.Errorf("ResetLimit after Close = %v, want ErrClosed", err)
	}
}

func TestRateLimitServerError(t *testing.T) {
	t.Parallel()
	m, mr := miniManager(t, cachemgr.Options{})
	mr.SetError("LOADING")
	_, err := m.Allow(context.Background(), "login:1", cachemgr.PerMinute(1))
	if err == nil || !strings.Contains(err.Error(), `rate limit "login:1"`) {
		t.Errorf("Allow = %v, want an error naming the operation and key", err)
	}
}

// rawRateKey is where the limiter keeps the state of key (see ratelimit.go).
func rawRateKey(m *cachemgr.Manager, key string) string {
	return "rate:" + m.KeyPrefix() + "ratelimit:" + key
}

// redisServers are the real Redis deployments the rate limiter must work on.
var redisServers = []struct {
	name string
	url  func(testing.TB) string
}{
	{"single", func(tb testing.TB) string { return redistest.URL(tb, 2) }},
	{"cluster", redistest.ClusterURL},
}

func TestRateLimitCountsDownRealRedis(t *testing.T) {
	t.Parallel()
	for _, srv := range redisServers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m := realManager(t, srv.url(t))
			t.Cleanup(func() { _ = m.ResetLimit(context.Background(), "k") })
			// One request every 36s, so the clock running during the test
			// cannot free another one.
			l := cachemgr.Limit{Rate: 100, Period: time.Hour}

			// Remaining is exact from the first call: redis_rate alone
			// reports 98 there.
			for i := range 100 {
				got, err := m.Allow(ctx, "k", l)
				if err != nil {
					t.Fatal(err)
				}
				if !got.Allowed || got.Remaining != 99-i || got.RetryAfter != 0 {
					t.Fatalf("call %d = %+v, want Allowed, Remaining %d, RetryAfter 0", i, got, 99-i)
				}
			}
			got, err := m.Allow(ctx, "k", l)
			if err != nil {
				t.Fatal(err)
			}
			if got.Allowed || got.Remaining != 0 || got.RetryAfter <= 0 || got.RetryAfter > 36*time.Second {
				t.Errorf("call 101 = %+v, want denied with RetryAfter in (0, 36s]", got)
			}
			ttl, err := m.Client().TTL(ctx, rawRateKey(m, "k")).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl <= 0 || ttl > time.Hour {
				t.Errorf("TTL of the state key = %v, want (0, 1h]", ttl)
			}
		})
	}
}

func TestRateLimitConcurrentRealRedis(t *testing.T) {
	t.Parallel()
	for _, srv := range redisServers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m := realManager(t, srv.url(t))
			t.Cleanup(func() { _ = m.ResetLimit(context.Background(), "flood") })
			l := cachemgr.PerMinute(100) // a burst of 100, then one every 600ms

			const goroutines, calls = 50, 20
			var (
				allowed, denied atomic.Int64
				wg              sync.WaitGroup
				start           = make(chan struct{})
			)
			for range goroutines {
				wg.Go(func() {
					<-start
					for range calls {
						got, err := m.Allow(ctx, "flood", l)
						switch {
						case err != nil:
							t.Error(err)
							return
						case got.Allowed:
							allowed.Add(1)
						case got.RetryAfter <= 0:
							t.Errorf("denied with RetryAfter %v", got.RetryAfter)
						default:
							denied.Add(1)
						}
					}
				})
			}
			began := time.Now()
			close(start)
			wg.Wait()
			took := time.Since(began)

			// Every 600ms of the test frees one more request.
			wantMax := int64(100 + took/(600*time.Millisecond))
			if got := allowed.Load(); got < 100 || got > wantMax {
				t.Errorf("allowed %d of %d calls in %v, want 100 (at most %d)", got, goroutines*calls, took, wantMax)
			}
			if got := allowed.Load() + denied.Load(); got != goroutines*calls {
				t.Errorf("allowed + denied = %d, want %d", got, goroutines*calls)
			}
			ttl, err := m.Client().TTL(ctx, rawRateKey(m, "flood")).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl <= 0 || ttl > time.Minute {
				t.Errorf("TTL of the state key = %v, want (0, 1m]", ttl)
			}
		})
	}
}
