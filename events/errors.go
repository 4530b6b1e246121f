package events

import (
	"errors"
	"fmt"
)

// ErrNotFound is WaitResult's error for a task that is neither in Redis
// nor in its queue's event stream: a wrong id or queue, or a task whose
// retention ran out and whose events were trimmed from the stream.
var ErrNotFound = errors.New("events: task not found")

// ErrResultTruncated is WaitResult's error for a task that succeeded with
// a result longer than MaxResultBytes, when the task itself is gone from
// Redis: the bytes returned with it are the result's first MaxResultBytes.
// Give such tasks a retention (asynq.Retention) to read their whole result.
var ErrResultTruncated = errors.New("events: result truncated")

// TaskError is WaitResult's error for a task that failed for good.
type TaskError struct {
	Queue, ID string
	// Kind is Archived or Cancelled.
	Kind Kind
	// Err is the task's last error message.
	Err string
	// Attempts is how many times the task ran, when known (0 otherwise).
	Attempts int
}

// Error describes the failure: "events: task <queue>/<id> archived after
// 3 attempts: <err>".
func (e *TaskError) Error() string {
	after := ""
	if e.Attempts > 0 {
		after = fmt.Sprintf(" after %d attempts", e.Attempts)
		if e.Attempts == 1 {
			after = " after 1 attempt"
		}
	}
	return fmt.Sprintf("events: task %s/%s %s%s: %s", e.Queue, e.ID, e.Kind, after, e.Err)
}
