package workflow

import "errors"

var (
	// ErrInvalid is wrapped by every refusal of a workflow's shape, steps,
	// payloads or options (a *StepError names the step) and of a bad id:
	// nothing was written.
	ErrInvalid = errors.New("workflow: invalid workflow")
	// ErrExists is returned by Submit for an id another workflow has.
	ErrExists = errors.New("workflow: id taken")
	// ErrNotFound is returned for a workflow that does not exist, or
	// whose retention ran out.
	ErrNotFound = errors.New("workflow: not found")
	// ErrFinished is returned by Cancel for a workflow that has already
	// succeeded, failed or been cancelled.
	ErrFinished = errors.New("workflow: already finished")
	// ErrNotInWorkflow is returned by Previous and Results under a ctx
	// that is not a workflow step's.
	ErrNotInWorkflow = errors.New("workflow: not a workflow step")
	// ErrNoPrevious is returned by Previous for a step that has no step
	// before it (the first of the workflow).
	ErrNoPrevious = errors.New("workflow: no previous step")
	// ErrNoResult is returned by PreviousAs when the stage before returned
	// no result to decode.
	ErrNoResult = errors.New("workflow: the stage before returned no result")
	// ErrNotRecorded is wrapped by the error the middleware returns for a
	// step whose handler succeeded but whose record could not be written
	// (Redis failing): asynq runs the step again. worker.App tells asynq
	// that it is no failure (asynq.Config.IsFailure), so it uses up no
	// retry and is never archived for it.
	ErrNotRecorded = errors.New("workflow: step done but not recorded")
	// ErrTooManyResults is returned by Previous and Results when the
	// group holds more than MaxInlineResults members: page through them
	// with GroupResults.Each.
	ErrTooManyResults = errors.New("workflow: too many results to inline")
)
