// Package taskctx carries a task's id in a context outside an asynq
// server, where asynq.GetTaskID finds none: forgeqtest runs handlers this
// way, and tasks reads the id back for progress reports. It also carries
// the sinks of a handler's result and the task's event publisher.
package taskctx

import (
	"context"
	"sync"

	"github.com/forgeq/forgeq/events"
)

type key struct{}

// WithID returns ctx carrying the task id id.
func WithID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// ID returns the task id WithID put in ctx.
func ID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(key{}).(string)
	return id, ok
}

type resultKey struct{}

// WithResult returns ctx in which SetResult hands a handler's result to
// sink, and to the sinks of the WithResult calls that built ctx: the
// workflow middleware keeps a step's result this way, and the worker's
// events middleware puts it in the task's succeeded event.
func WithResult(ctx context.Context, sink func([]byte)) context.Context {
	prev, _ := ctx.Value(resultKey{}).([]func([]byte))
	sinks := make([]func([]byte), len(prev), len(prev)+1)
	copy(sinks, prev)
	return context.WithValue(ctx, resultKey{}, append(sinks, sink))
}

// SetResult passes b, the result a handler returned, to every sink of
// WithResult in ctx, innermost first, then to the Attempt of ctx, if any.
func SetResult(ctx context.Context, b []byte) {
	sinks, _ := ctx.Value(resultKey{}).([]func([]byte))
	for i := len(sinks) - 1; i >= 0; i-- {
		sinks[i](b)
	}
	if a, ok := ctx.Value(eventsKey{}).(*Attempt); ok {
		a.setResult(b)
	}
}

type eventsKey struct{}

// Attempt is what the worker's events middleware keeps of a running
// attempt: the publisher of its events, the base of its events (its queue,
// id, type, attempt number and trace id; Kind unset) and the result its
// handler set (SetResult).
type Attempt struct {
	Pub  *events.Publisher
	Base events.Event

	mu     sync.Mutex // the cancellation middleware may return before its handler
	result []byte
}

func (a *Attempt) setResult(b []byte) { a.mu.Lock(); a.result = b; a.mu.Unlock() }

// Result returns the result the handler set, nil for none.
func (a *Attempt) Result() []byte { a.mu.Lock(); defer a.mu.Unlock(); return a.result }

// WithAttempt returns ctx in which the task's progress reports
// (tasks.ReportProgress) are published through a.Pub as copies of a.Base
// of kind events.Progress, and in which SetResult hands the result to a.
// a.Pub and a.Base must not change afterwards.
func WithAttempt(ctx context.Context, a *Attempt) context.Context {
	return context.WithValue(ctx, eventsKey{}, a)
}

// Events returns the publisher and base event of the Attempt in ctx; ok
// is false when there are none (events off, or a handler run without the
// worker's middleware). The caller copies *base before changing it.
func Events(ctx context.Context) (pub *events.Publisher, base *events.Event, ok bool) {
	a, ok := ctx.Value(eventsKey{}).(*Attempt)
	if !ok || a.Pub == nil {
		return nil, nil, false
	}
	return a.Pub, &a.Base, true
}
