package web

import (
	"context"
	"fmt"
	"time"
)

// redisCtx bounds a call to Redis that the manager does not make (asynq's)
// or does not bound (an async wait) by the manager's OpTimeout, the socket
// timeout.
func (s *Server) redisCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if d := s.m.OpTimeout(); d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return ctx, func() {}
}

// within waits at most d (0: no bound) for fn, a call that takes no ctx,
// or until ctx ends. When it gives up, fn goes on running on its own
// goroutine and its result is dropped; the error is then
// context.DeadlineExceeded or ctx's.
func within[T any](ctx context.Context, d time.Duration, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-done:
		return r.v, r.err
	case <-timeout:
		var zero T
		return zero, fmt.Errorf("no answer within %v: %w", d, context.DeadlineExceeded)
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
