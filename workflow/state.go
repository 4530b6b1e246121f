package workflow

import (
	"strconv"
	"time"
)

// Status is a workflow's state.
type Status string

// The states of a workflow. Pending becomes running when a first step
// starts; succeeded, failed and cancelled are final.
const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Final reports whether s is succeeded, failed or cancelled.
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// State is a workflow's state and progress.
type State struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Status Status `json:"status"`
	// Total is the number of task steps (members and callbacks
	// included); Done how many have finished, Failed how many of those
	// failed. A step that never runs (after a failed step, or in a
	// cancelled workflow) does not count as done.
	Total  int `json:"total"`
	Done   int `json:"done"`
	Failed int `json:"failed"`
	// FailedStep and Error say which step failed the workflow and why
	// (status failed); Error holds the reason of a cancellation.
	FailedStep string    `json:"failed_step,omitempty"`
	Error      string    `json:"error,omitempty"`
	Created    time.Time `json:"created"`
	Started    time.Time `json:"started,omitzero"`
	// Updated is when steps last started, a step failed, or the status
	// changed.
	Updated  time.Time `json:"updated"`
	Finished time.Time `json:"finished,omitzero"`
	// Retention is how long the workflow stays readable once final;
	// RetentionSeconds is the same in whole seconds, for JSON.
	Retention        time.Duration `json:"-"`
	RetentionSeconds int64         `json:"retention_seconds"`
}

// Percent returns Done as a percentage of Total.
func (s *State) Percent() float64 {
	if s.Total == 0 {
		return 0
	}
	return 100 * float64(s.Done) / float64(s.Total)
}

func stateOf(id string, h map[string]string) *State {
	ms := func(f string) time.Time {
		n, err := strconv.ParseInt(h[f], 10, 64)
		if err != nil || n == 0 {
			return time.Time{}
		}
		return time.UnixMilli(n).UTC()
	}
	num := func(f string) int { n, _ := strconv.Atoi(h[f]); return n }
	return &State{
		ID: id, Name: h["name"], Status: Status(h["status"]),
		Total: num("total"), Done: num("done"), Failed: num("failed"),
		FailedStep: h["failed_step"], Error: h["error"],
		Created: ms("created"), Started: ms("started"), Updated: ms("updated"), Finished: ms("finished"),
		Retention:        time.Duration(num("retention")) * time.Second,
		RetentionSeconds: int64(num("retention")),
	}
}

// StepStatus is the state of one task step.
type StepStatus string

// The states of a step: waiting (its turn has not come, or never will),
// active (enqueued: pending, running or retrying in asynq), succeeded,
// failed (its retries used up), cancelled (active when the workflow was
// cancelled).
const (
	StepWaiting   StepStatus = "waiting"
	StepActive    StepStatus = "active"
	StepSucceeded StepStatus = "succeeded"
	StepFailed    StepStatus = "failed"
	StepCancelled StepStatus = "cancelled"
)

// Step is one task step of a workflow, as Client.Steps lists it.
type Step struct {
	// Path names the step: "2" is the third step of the workflow's
	// chain, "2.m5" the sixth member of the group there, "2.cb" its
	// callback, "2.m5.0" the first step of a chain that member is.
	Path   string     `json:"path"`
	Type   string     `json:"type"`
	Queue  string     `json:"queue"`
	TaskID string     `json:"task_id"`
	Status StepStatus `json:"status"`
	// Error is why the step failed.
	Error string `json:"error,omitempty"`
	// Progress is the step's last progress report (tasks.ReadProgress),
	// while it is active; nil when it made none or when the Client has
	// no Cache.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is a step's own progress report.
type Progress struct {
	Percent float64   `json:"percent"`
	Message string    `json:"message,omitempty"`
	Updated time.Time `json:"updated"`
}
