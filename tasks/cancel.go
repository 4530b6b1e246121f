package tasks

import (
	"errors"

	"github.com/hibiken/asynq"
)

// OutcomeCancelled is the outcome of a handler call stopped by a
// cancellation (package control): the task is archived with the reason
// "cancelled by <who>" and is not retried. Unlike OutcomeCanceled (a
// shutdown or a lost lease, after which asynq requeues the task), it is
// terminal.
const OutcomeCancelled = "cancelled"

// CancelledError is the error a worker returns to asynq for a task that
// was cancelled while it ran. Its message, "cancelled by <By>", becomes
// the archived task's last error; it wraps asynq.SkipRetry, so asynq
// archives the task at once.
type CancelledError struct {
	// By names who cancelled the task, as given to control.Cancel.
	By string
}

// Error returns "cancelled by <By>".
func (e *CancelledError) Error() string { return "cancelled by " + e.By }

// Unwrap returns asynq.SkipRetry.
func (e *CancelledError) Unwrap() error { return asynq.SkipRetry }

// IsCancelled reports whether err is, or wraps, a *CancelledError.
func IsCancelled(err error) bool {
	var ce *CancelledError
	return errors.As(err, &ce)
}
