package enqueue

import (
	"context"
	"io"

	"github.com/forgeq/forgeq/tasks"
)

// run is Run with the built-in types, as cmd/enqueue runs it.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, Params{Prog: "enqueue", Registry: tasks.Default(), Getenv: getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr}, args)
}
