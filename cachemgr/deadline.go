package cachemgr

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Bounding sync round trips.
//
// go-redis retries a command whose read timed out (MaxRetries, 3 by
// default), each time on another pooled connection. Against a Redis that
// accepts connections but does not answer (frozen, or behind a network that
// drops packets) every pooled connection is as dead as the first, so one
// call took up to four socket timeouts. A deadline of one socket timeout on
// the call's context stops that: go-redis checks the context between
// attempts, so the first timeout is the last. Fast failures (a connection
// reset by a restarted Redis) are still retried within the deadline.
//
// The deadline must not come later than the first attempt's socket
// timeout: go-redis (without Options.ContextTimeoutEnabled) does not apply
// a context's deadline to the socket, so an attempt begun before the
// deadline runs its full socket timeout, and a second attempt would double
// the wait.
//
// A context.WithTimeout per call would do it, but its timer and
// allocations cost 20% more CPU per Get at 50 concurrent callers
// (BENCHMARKS.md). Instead the calls share one deadline context per time
// slice of an eighth of the timeout: a call started in a slice gets a
// deadline between seven eighths and one timeout away, from a context made
// once per slice.

// deadlines hands out the shared deadline contexts. The zero value with d
// set is ready to use.
type deadlines struct {
	d   time.Duration
	mu  sync.Mutex // serializes renewals
	cur atomic.Pointer[sharedDeadline]
}

// sharedDeadline is the context of one time slice.
type sharedDeadline struct {
	ctx     context.Context
	renewAt time.Time // end of the slice
}

// at returns a context whose deadline is between d*7/8 (exclusive) and d
// after now.
func (ds *deadlines) at(now time.Time) context.Context {
	if s := ds.cur.Load(); s != nil && now.Before(s.renewAt) {
		return s.ctx
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if s := ds.cur.Load(); s != nil && now.Before(s.renewAt) {
		return s.ctx
	}
	slice := ds.d / 8
	// Calls may hold this context until its deadline, whose timer then
	// releases it: nobody cancels it earlier.
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(ds.d))
	_ = cancel
	ds.cur.Store(&sharedDeadline{ctx: ctx, renewAt: now.Add(slice)})
	return ctx
}

// roundTrip returns the context for one round trip to Redis on behalf of
// ctx: ctx itself when it is done already, when its own deadline comes
// within OpTimeout, or when there is no OpTimeout; otherwise a context
// with ctx's values and the shared deadline of this time slice.
//
// Within a round trip the caller's cancellation is not watched. That
// loses little: go-redis does not interrupt a read or write in progress
// when a context is cancelled (it watches the context only while waiting
// for a pooled connection and between retries), and the round trip ends
// within the deadline anyway.
func (m *Manager) roundTrip(ctx context.Context) context.Context {
	return m.roundTripAt(ctx, time.Now())
}

// roundTripAt is roundTrip for a call that has read the clock already.
func (m *Manager) roundTripAt(ctx context.Context, now time.Time) context.Context {
	if m.opTimeout <= 0 || ctx.Err() != nil {
		return ctx
	}
	if d, ok := ctx.Deadline(); ok && d.Sub(now) <= m.opTimeout {
		return ctx
	}
	shared := m.deadlines.at(now)
	if ctx == context.Background() {
		return shared // no values to carry
	}
	return &boundCtx{Context: shared, values: ctx}
}

// boundCtx is a shared deadline context carrying a caller's values
// (tracing spans, loggers) to go-redis's hooks.
type boundCtx struct {
	context.Context // Deadline, Done, Err: the shared deadline's
	values          context.Context
}

func (c *boundCtx) Value(key any) any { return c.values.Value(key) }
