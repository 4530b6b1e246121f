// Package taskctx carries a task's id in a context outside an asynq
// server, where asynq.GetTaskID finds none: forgeqtest runs handlers this
// way, and tasks reads the id back for progress reports.
package taskctx

import "context"

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
// sink: the workflow middleware keeps a step's result this way.
func WithResult(ctx context.Context, sink func([]byte)) context.Context {
	return context.WithValue(ctx, resultKey{}, sink)
}

// SetResult passes b, the result a handler returned, to the sink of
// WithResult in ctx, if any.
func SetResult(ctx context.Context, b []byte) {
	if sink, ok := ctx.Value(resultKey{}).(func([]byte)); ok {
		sink(b)
	}
}
