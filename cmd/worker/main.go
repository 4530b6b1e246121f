// Command worker runs forgeq's worker with the built-in task types
// (data:process, cache:invalidate, cache:warm): the asynq server, the
// periodic-task scheduler, the embedded web process and, when no Redis is
// configured, an embedded in-memory Redis. `worker enqueue ...` is the
// enqueue command. It is the public worker package with nothing added:
// see worker.App, and `worker --help` for the settings.
package main

import (
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

func main() {
	worker.New("worker").Register(tasks.Builtin()...).Main()
}
