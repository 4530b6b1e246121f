package taskstest

import (
	"context"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// Greet is the payload of GreetType.
type Greet struct {
	Name  string `json:"name" jsonschema:"minLength=1" help:"whom to greet"`
	Times int    `json:"times,omitempty" jsonschema:"minimum=1,maximum=10" help:"how often"`
}

// GreetType is test:greet, a type the enqueue command and the web process
// are built without in the catalogue tests: only a worker publishes it.
// Its defaults (queue low, 2 retries, 90s timeout) differ from asynq's, so
// the tests see them applied.
var GreetType = tasks.Define("test:greet", "Greets someone.",
	func(context.Context, tasks.Deps, Greet) ([]byte, error) { return nil, nil },
	asynq.Queue("low"), asynq.MaxRetry(2), asynq.Timeout(90*time.Second))
