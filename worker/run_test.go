package worker

import (
	"context"
	"io"

	"github.com/forgeq/forgeq/tasks"
)

// run is the worker of cmd/worker (the built-in types), returning its
// error rather than an exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return New("worker").Register(tasks.Builtin()...).run(ctx, args, Env{Getenv: getenv, Stdout: stdout, Stderr: stderr})
}
