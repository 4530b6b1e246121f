package events

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Kind is what happened to a task.
type Kind string

// The kinds of events, in the order a task can go through them.
const (
	// Enqueued: the task was put on its queue. The enqueuing process
	// publishes it once the enqueue has returned, so a worker that takes
	// the task at once may publish Started, or even the end, before it:
	// order the task's life by the other kinds.
	Enqueued Kind = "enqueued"
	// Started: a worker began an attempt.
	Started Kind = "started"
	// Progress: the handler reported progress (Percent, Message).
	Progress Kind = "progress"
	// Failed: an attempt failed (Error); a Retried or an Archived event
	// follows.
	Failed Kind = "failed"
	// Retried: the failed task will run again, not before NextAt when
	// known.
	Retried Kind = "retried"
	// Succeeded: the task completed (final), with its Result.
	Succeeded Kind = "succeeded"
	// Archived: the task failed for good (final): no retry left, or a
	// handler error wrapping asynq.SkipRetry.
	Archived Kind = "archived"
	// Cancelled: the task was cancelled while it ran (final); asynq
	// archives it with the error "cancelled by <who>".
	Cancelled Kind = "cancelled"
)

// MaxResultBytes bounds the result an event carries: a longer result is
// cut to its first MaxResultBytes bytes and the event's ResultTruncated is
// set (the whole result stays readable from asynq while the task is
// retained, and WaitResult reads it there). It bounds a stream's memory:
// at most about MaxLen x (entry overhead + MaxResultBytes), 80 MiB for a
// stream of the default 10,000 entries that all carry a long result.
const MaxResultBytes = 8 << 10

// Event is one event of a task's life, as stored in its queue's stream
// (StreamKey) and sent by the web's event stream as JSON.
//
// Its JSON form has lower-case snake_case keys and leaves out empty fields
// (percent is always present in a progress event):
//
//	{"id":"1733571234567-0:3","kind":"progress","queue":"default",
//	 "task_id":"…","type":"report:build","time":"2026-12-07T11:00:00.123Z",
//	 "attempt":1,"percent":40,"message":"rendering"}
//
// A result that is valid JSON is embedded as is under "result"; any other
// result is a JSON string under "result_text" when it is valid UTF-8, and
// base64 under "result_base64" otherwise.
type Event struct {
	// ID is "<entry id>:<index>": the id of the stream entry that holds
	// the event and the event's index in it (a Publisher writes the
	// events of a queue that it writes together in one entry), "" before
	// the event is published. Watch and HasNewer take it as after.
	ID     string
	Kind   Kind
	Queue  string
	TaskID string
	Type   string // the task's type; may be "" on events written without it
	// Time is when the event was published (Publish sets it), to the
	// millisecond.
	Time time.Time
	// Attempt is the 1-based number of the attempt (0 for Enqueued).
	Attempt int
	// Percent (0 to 100) and Message are a Progress event's.
	Percent float64
	Message string
	// Error is the handler's error of Failed, Retried, Archived and
	// Cancelled events.
	Error string
	// NextAt is when a Retried task runs again, when known.
	NextAt time.Time
	// Result is a Succeeded event's result (what the handler wrote with
	// asynq's ResultWriter or returned through forgeq's result helpers),
	// up to MaxResultBytes.
	Result          []byte
	ResultTruncated bool
	// TraceID is the hex trace id of the trace the task ran in, when
	// traced.
	TraceID string
}

// Final reports whether e ends its task's life: Succeeded, Archived or
// Cancelled.
func (e Event) Final() bool {
	switch e.Kind {
	case Succeeded, Archived, Cancelled:
		return true
	}
	return false
}

// StreamKey returns the key of queue's event stream:
// "forgeq:events:{<queue>}", in the Redis Cluster hash slot of asynq's own
// keys of queue.
func StreamKey(queue string) string { return "forgeq:events:{" + queue + "}" }

// eventJSON is Event's JSON form.
type eventJSON struct {
	ID              string          `json:"id,omitempty"`
	Kind            Kind            `json:"kind"`
	Queue           string          `json:"queue,omitempty"`
	TaskID          string          `json:"task_id,omitempty"`
	Type            string          `json:"type,omitempty"`
	Time            time.Time       `json:"time,omitzero"`
	Attempt         int             `json:"attempt,omitempty"`
	Percent         *float64        `json:"percent,omitempty"`
	Message         string          `json:"message,omitempty"`
	Error           string          `json:"error,omitempty"`
	NextAt          time.Time       `json:"next_at,omitzero"`
	Result          json.RawMessage `json:"result,omitempty"`
	ResultText      *string         `json:"result_text,omitempty"`
	ResultBase64    []byte          `json:"result_base64,omitempty"`
	ResultTruncated bool            `json:"result_truncated,omitempty"`
	TraceID         string          `json:"trace_id,omitempty"`
}

// MarshalJSON returns e's JSON form (see Event).
func (e Event) MarshalJSON() ([]byte, error) {
	j := eventJSON{
		ID: e.ID, Kind: e.Kind, Queue: e.Queue, TaskID: e.TaskID, Type: e.Type, Time: e.Time,
		Attempt: e.Attempt, Message: e.Message, Error: e.Error, NextAt: e.NextAt,
		ResultTruncated: e.ResultTruncated, TraceID: e.TraceID,
	}
	if e.Kind == Progress || e.Percent != 0 {
		p := e.Percent
		j.Percent = &p
	}
	switch {
	case len(e.Result) == 0:
	case !e.ResultTruncated && json.Valid(e.Result):
		j.Result = e.Result
	case utf8.Valid(e.Result):
		s := string(e.Result)
		j.ResultText = &s
	default:
		j.ResultBase64 = e.Result
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the JSON form MarshalJSON writes.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j eventJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Event{
		ID: j.ID, Kind: j.Kind, Queue: j.Queue, TaskID: j.TaskID, Type: j.Type, Time: j.Time,
		Attempt: j.Attempt, Message: j.Message, Error: j.Error, NextAt: j.NextAt,
		ResultTruncated: j.ResultTruncated, TraceID: j.TraceID,
	}
	if j.Percent != nil {
		e.Percent = *j.Percent
	}
	switch {
	case len(j.Result) > 0:
		e.Result = []byte(j.Result)
	case j.ResultText != nil:
		e.Result = []byte(*j.ResultText)
	case len(j.ResultBase64) > 0:
		e.Result = j.ResultBase64
	}
	return nil
}
