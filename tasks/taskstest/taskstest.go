// Package taskstest holds what the tests of every way of enqueueing share:
// the table of bad enqueues that each entry point (the enqueue CLI's
// argument and --file line, POST /api/tasks/{type}, Type.NewTask and
// Registry.NewTask) must refuse with the same rule text, enqueueing
// nothing.
package taskstest

import (
	"strings"
	"time"
)

// BadEnqueue is an enqueue of a data:process task that every entry point
// refuses.
type BadEnqueue struct {
	// Name names the case.
	Name string
	// Option is the option given, named as tasks.OptionError names it
	// ("queue", "id", "process_at"; the CLI's flag and --file field for
	// process_at is "at"), with its value Value; "" when the case is
	// about the payload.
	Option string
	Value  string
	// Payload is the payload, JSON text: a good one unless the case is
	// about the payload.
	Payload string
	// Want is the rule text each entry point's message contains.
	Want string
}

// GoodPayload is a data:process payload every entry point accepts.
const GoodPayload = `{"key":"k","work":1}`

// BadEnqueues returns the table, with process-at times relative to now.
func BadEnqueues(now time.Time) []BadEnqueue {
	past := now.Add(-time.Hour).UTC().Format(time.RFC3339)
	return []BadEnqueue{
		{Name: "queue with a space and a bang", Option: "queue", Value: "bad queue!", Payload: GoodPayload,
			Want: `"bad queue!": has a character outside A-Z a-z 0-9 . _ : -`},
		{Name: "queue with braces", Option: "queue", Value: "a{b}", Payload: GoodPayload,
			Want: `"a{b}": has a character outside A-Z a-z 0-9 . _ : -`},
		{Name: "queue of 5000 characters", Option: "queue", Value: strings.Repeat("q", 5000), Payload: GoodPayload,
			Want: `... (5000 bytes): is 5000 bytes, over the 128-byte limit`},
		{Name: "id of 100 KB", Option: "id", Value: strings.Repeat("i", 100<<10), Payload: GoodPayload,
			Want: `... (102400 bytes): is 102400 bytes, over the 128-byte limit`},
		{Name: "id with a newline", Option: "id", Value: "a\nb", Payload: GoodPayload,
			Want: `"a\nb": has a character outside A-Z a-z 0-9 . _ : -`},
		{Name: "process_at in the past", Option: "process_at", Value: past, Payload: GoodPayload,
			Want: `"` + past + `": is in the past (now is `},
		{Name: "payload string not UTF-8", Payload: "{\"key\":\"a\xffb\",\"work\":1}",
			Want: `field "key": is not valid UTF-8`},
		{Name: "payload field twice", Payload: `{"key":"k","work":1,"work":2}`,
			Want: `duplicate field "work"`},
		{Name: "payload field twice, nested", Payload: `{"key":"k","work":1,"x":{"a":1,"a":2}}`,
			Want: `duplicate field "x.a"`},
	}
}
