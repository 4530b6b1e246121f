package schedule

import "errors"

var (
	// ErrInvalid is wrapped by every refusal of an entry: a bad name,
	// spec, queue or payload, or an unknown task type. Nothing was
	// written.
	ErrInvalid = errors.New("schedule: invalid entry")
	// ErrNotFound is returned for a name no stored entry has.
	ErrNotFound = errors.New("schedule: no such entry")
)
