// Package control cancels tasks by id, wherever they are: waiting in
// their queue or running on any worker.
//
// # Cancelling
//
// [Cancel] looks the task up with asynq's Inspector:
//
//   - a pending, scheduled, retry or aggregating task is deleted from its
//     queue, and the cancellation is recorded in Redis for [RecordTTL], so
//     that cancelling it again answers [ErrFinished] rather than
//     [ErrNotFound];
//   - a running task is told to stop over Redis Pub/Sub ([Channel]): the
//     worker running it (package worker's middleware) cancels its
//     handler's context at once, and when the handler returns, the task is
//     archived with the reason "cancelled by <by>" (a
//     *tasks.CancelledError, which wraps asynq.SkipRetry) and is not
//     retried. Its log line and the outcome label of
//     forgeq_tasks_failed_total say "cancelled". A handler that does not
//     return within a second is reported (a warning and
//     forgeq_tasks_cancel_ignored_total); after the worker's grace period
//     the task is archived all the same and the handler is left to finish
//     on its own.
//
// Cancelling a task that does not exist answers [ErrNotFound]; one that has
// completed, has been archived or was cancelled before answers
// [ErrFinished].
//
// asynq's own Inspector.CancelProcessing is not used: it cancels the
// handler's context, after which asynq retries the task.
//
// # Usage
//
//	res, err := control.Cancel(ctx, rdb, "default", id, "alice")
//	switch {
//	case errors.Is(err, control.ErrNotFound): // 404
//	case errors.Is(err, control.ErrFinished): // 409; res has its state
//	case err != nil:                          // Redis failed
//	default:                                  // res.State: cancelled, archived or active
//	}
//
// The same is available as `enqueue --cancel ID` and as
// DELETE /api/tasks/{queue}/{id} in the web process.
package control
