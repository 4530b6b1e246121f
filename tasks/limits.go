package tasks

import (
	"errors"
	"fmt"
	"time"
)

// Reasons of a postponement by a type's declared limits: the reason of the
// *PostponeError the worker returns, the "reason" label of
// forgeq_tasks_postponed_total and a field of the task's log line.
const (
	PostponedRate        = "rate"            // over the type's RateLimit
	PostponedConcurrency = "concurrency"     // over the type's MaxConcurrent
	PostponedKey         = "concurrency_key" // over the type's MaxConcurrentPerKey for its key
)

// LimitReasons are the reasons the worker postpones a task over one of its
// type's declared limits.
var LimitReasons = []string{PostponedRate, PostponedConcurrency, PostponedKey}

// OutcomePostponed is the outcome of a handler call that returned a
// *PostponeError: the task was not run (or chose to run later) and asynq
// runs it again after the error's delay, without counting a retry.
const OutcomePostponed = "postponed"

// PostponeError is the error that postpones a task: the worker's asynq
// server takes it as no failure, so the task is not archived and its retry
// count stays, and runs the task again after Delay. Make one with Postpone.
type PostponeError struct {
	// Delay is how long to wait before running the task again. asynq
	// keeps the times of tasks to come in whole seconds and moves them to
	// their queue once a second, so a task postponed for less than a
	// second comes back within about a second.
	Delay time.Duration
	// Reason is a short word saying why: one of LimitReasons for the
	// declared limits. It labels forgeq_tasks_postponed_total, so keep
	// the set of reasons small.
	Reason string
}

// Error returns "postponed for <Delay>: <Reason>".
func (e *PostponeError) Error() string {
	return fmt.Sprintf("postponed for %v: %s", e.Delay, e.Reason)
}

// Postponed returns Delay. Packages that cannot import tasks (telemetry)
// recognise a postponement by this method.
func (e *PostponeError) Postponed() time.Duration { return e.Delay }

// Postpone returns a *PostponeError: a handler (or middleware) returning it
// has its task run again after d, without counting a retry and without
// archiving it however often it is postponed. A negative d counts as 0;
// an empty reason as "postponed". The worker's declared limits use it
// (RateLimit, MaxConcurrent, MaxConcurrentPerKey), and handlers may too,
// e.g. when a resource they need is busy.
func Postpone(d time.Duration, reason string) error {
	if reason == "" {
		reason = OutcomePostponed
	}
	return &PostponeError{Delay: max(d, 0), Reason: reason}
}

// AsPostpone returns the *PostponeError err is or wraps, if any.
func AsPostpone(err error) (*PostponeError, bool) {
	var pe *PostponeError
	ok := errors.As(err, &pe)
	return pe, ok
}

// Rate is a type's declared rate limit: at most N tasks start per Per
// across all workers, with bursts of up to Burst at once.
type Rate struct {
	N     int
	Per   time.Duration
	Burst int
}

// limits are the limits a type declares (RateLimit, MaxConcurrent,
// MaxConcurrentPerKey); the zero value declares none.
type limits struct {
	rate       Rate // N == 0: none
	concurrent int  // 0: none
	perKey     int  // 0: none
	keyOf      func(payload []byte) (string, error)
}

// RateLimit returns a copy of t whose tasks start at most n times per
// period per across all workers: the worker checks each task, before its
// handler, against a GCRA limiter in Redis (go-redis/redis_rate, one
// atomic script on the server's clock). A task over the limit is postponed
// (see Postpone) until the limiter allows one more, with reason "rate";
// it does not count a retry and no worker waits for it.
//
// Bursts of up to n start at once when the limiter is full (as
// cachemgr.PerSecond does); after that one starts every per/n, so over any
// interval of length d at most n + n·d/per start, and on average n per
// period. RateLimitBurst sets another burst. Declare rates per second or
// longer: a postponed task comes back within about a second, so a burst
// smaller than what the limit allows in a second loses throughput.
//
// It panics when n < 1 or per <= 0, a programming error.
func (t *Type[P]) RateLimit(n int, per time.Duration) *Type[P] {
	return t.RateLimitBurst(n, per, n)
}

// RateLimitBurst is RateLimit with bursts of up to burst tasks at once:
// over any interval of length d at most burst + n·d/per start. A burst
// of 1 spaces the tasks evenly, one every per/n. It panics when n, burst
// < 1 or per <= 0.
func (t *Type[P]) RateLimitBurst(n int, per time.Duration, burst int) *Type[P] {
	if n < 1 || per <= 0 || burst < 1 {
		panic(fmt.Sprintf("tasks: %s: RateLimitBurst(%d, %v, %d): want n >= 1, per > 0, burst >= 1", t.def.typ, n, per, burst)) // programming error
	}
	d := *t.def
	d.limits.rate = Rate{N: n, Per: per, Burst: burst}
	return &Type[P]{def: &d}
}

// MaxConcurrent returns a copy of t of which at most n tasks run at once
// across all workers. Before its handler, the worker takes a lease on one
// of n slots in Redis (a sorted set per type, in one atomic script); a
// task that finds them all taken is postponed for 100-500 ms (with jitter)
// with reason "concurrency", without counting a retry. A slot is freed
// when the handler returns; a worker that dies holds its slots for at
// most 30 s, the lease it keeps renewing while the handler runs.
//
// It panics when n < 1, a programming error.
func (t *Type[P]) MaxConcurrent(n int) *Type[P] {
	if n < 1 {
		panic(fmt.Sprintf("tasks: %s: MaxConcurrent(%d): want n >= 1", t.def.typ, n)) // programming error
	}
	d := *t.def
	d.limits.concurrent = n
	return &Type[P]{def: &d}
}

// MaxConcurrentPerKey returns a copy of t of which at most n tasks with the
// same key run at once across all workers, the key of a task being
// key(payload), e.g. the customer it is for. It works as MaxConcurrent
// does, one set of n slots per key, and postpones with reason
// "concurrency_key". A task whose key is "" has no per-key cap. With
// MaxConcurrent too, a task takes both slots in one script, or neither.
//
// It panics when n < 1 or key is nil, a programming error.
func (t *Type[P]) MaxConcurrentPerKey(n int, key func(P) string) *Type[P] {
	if n < 1 || key == nil {
		panic(fmt.Sprintf("tasks: %s: MaxConcurrentPerKey(%d, key): want n >= 1 and a key func", t.def.typ, n)) // programming error
	}
	typ := t.def.typ
	d := *t.def
	d.limits.perKey = n
	d.limits.keyOf = func(payload []byte) (string, error) {
		p, err := decodeStrict[P](typ, payload)
		if err != nil {
			return "", err
		}
		return key(p), nil
	}
	return &Type[P]{def: &d}
}

// RateLimit returns the type's declared rate limit, and false when it
// declares none.
func (d *Definition) RateLimit() (Rate, bool) {
	return d.limits.rate, d.limits.rate.N > 0
}

// MaxConcurrent returns how many tasks of the type may run at once across
// all workers; 0 when the type declares no cap.
func (d *Definition) MaxConcurrent() int { return d.limits.concurrent }

// MaxConcurrentPerKey returns how many tasks of the type with the same key
// may run at once across all workers; 0 when the type declares no cap.
func (d *Definition) MaxConcurrentPerKey() int { return d.limits.perKey }

// ConcurrencyKey returns the key of a task of the type with payload, for
// MaxConcurrentPerKey: "" when the type declares no per-key cap. Errors
// wrap ErrInvalidPayload for a payload that does not decode.
func (d *Definition) ConcurrencyKey(payload []byte) (string, error) {
	if d.limits.keyOf == nil {
		return "", nil
	}
	return d.limits.keyOf(payload)
}

// Limited reports whether the type declares any limit.
func (d *Definition) Limited() bool {
	l := d.limits
	return l.rate.N > 0 || l.concurrent > 0 || l.perKey > 0
}
