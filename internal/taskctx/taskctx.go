// Package taskctx carries a task's id in a context outside an asynq
// server, where asynq.GetTaskID finds none: forgeqtest runs handlers this
// way, and tasks reads the id back for progress reports. It also carries
// the sinks of a handler's result and the task's event publisher.
package taskctx

import (
	"context"

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
// WithResult in ctx, innermost first.
func SetResult(ctx context.Context, b []byte) {
	sinks, _ := ctx.Value(resultKey{}).([]func([]byte))
	for i := len(sinks) - 1; i >= 0; i-- {
		sinks[i](b)
	}
}

type eventsKey struct{}

// eventsValue is what WithEvents puts in a ctx.
type eventsValue struct {
	pub  *events.Publisher
	base *events.Event
}

// WithEvents returns ctx in which the task's progress reports
// (tasks.ReportProgress) are published through pub as copies of *base (the
// task's queue, id, type, attempt and trace id) of kind events.Progress.
// base must not change afterwards.
func WithEvents(ctx context.Context, pub *events.Publisher, base *events.Event) context.Context {
	return context.WithValue(ctx, eventsKey{}, &eventsValue{pub: pub, base: base})
}

// Events returns the publisher and base event WithEvents put in ctx; ok is
// false when there are none (events off, or a handler run without the
// worker's middleware). The caller copies *base before changing it.
func Events(ctx context.Context) (pub *events.Publisher, base *events.Event, ok bool) {
	v, ok := ctx.Value(eventsKey{}).(*eventsValue)
	if !ok || v.pub == nil {
		return nil, nil, false
	}
	return v.pub, v.base, true
}
