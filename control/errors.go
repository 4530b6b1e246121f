package control

import "errors"

// ErrNotFound is Cancel's error for a task that does not exist: no queue
// holds it and no cancellation of it is recorded.
var ErrNotFound = errors.New("control: no such task")

// ErrFinished is Cancel's error for a task that is over: it completed, was
// archived, or was cancelled before.
var ErrFinished = errors.New("control: task already finished")
