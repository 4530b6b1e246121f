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
