// Command enqueue puts forgeq tasks on their queues: one task from the
// command line, many from a JSON Lines file, optionally waiting for a
// task's result. It knows the built-in task types and validates any other
// type against the task catalogue that running workers publish in Redis.
// Run it with --help for the flags and examples.
//
// Exit codes: 0 success, 2 bad usage or input (nothing was enqueued), 1 a
// runtime failure (Redis unreachable, a task that failed or was archived
// under --wait, a bulk enqueue that did not enqueue everything).
package main

import (
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

func main() {
	worker.New("enqueue").Register(tasks.Builtin()...).MainEnqueue()
}
