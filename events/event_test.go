package events_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/events"
)

func TestEventJSON(t *testing.T) {
	t.Parallel()

	at := time.Date(2026, 12, 7, 11, 0, 0, 123e6, time.UTC)
	tests := []struct {
		name     string
		give     events.Event
		wantJSON string
	}{
		{
			name:     "progress at zero keeps its percent",
			give:     events.Event{ID: "1-0", Kind: events.Progress, Queue: "q", TaskID: "t", Type: "x:y", Time: at, Attempt: 1},
			wantJSON: `{"id":"1-0","kind":"progress","queue":"q","task_id":"t","type":"x:y","time":"2026-12-07T11:00:00.123Z","attempt":1,"percent":0}`,
		},
		{
			name:     "JSON result embedded",
			give:     events.Event{Kind: events.Succeeded, TaskID: "t", Result: []byte(`{"n":1}`), TraceID: "abc"},
			wantJSON: `{"kind":"succeeded","task_id":"t","result":{"n":1},"trace_id":"abc"}`,
		},
		{
			name:     "text result",
			give:     events.Event{Kind: events.Succeeded, TaskID: "t", Result: []byte("done, 3 rows")},
			wantJSON: `{"kind":"succeeded","task_id":"t","result_text":"done, 3 rows"}`,
		},
		{
			name:     "binary result",
			give:     events.Event{Kind: events.Succeeded, TaskID: "t", Result: []byte{0xff, 0x00}},
			wantJSON: `{"kind":"succeeded","task_id":"t","result_base64":"/wA="}`,
		},
		{
			name:     "truncated JSON result is text",
			give:     events.Event{Kind: events.Succeeded, TaskID: "t", Result: []byte(`{"n":`), ResultTruncated: true},
			wantJSON: `{"kind":"succeeded","task_id":"t","result_text":"{\"n\":","result_truncated":true}`,
		},
		{
			name:     "retried",
			give:     events.Event{Kind: events.Retried, TaskID: "t", Attempt: 2, Error: "boom", NextAt: at},
			wantJSON: `{"kind":"retried","task_id":"t","attempt":2,"error":"boom","next_at":"2026-12-07T11:00:00.123Z"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.wantJSON {
				t.Errorf("JSON:\n got %s\nwant %s", b, tt.wantJSON)
			}
			var back events.Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.give, back); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFinal(t *testing.T) {
	t.Parallel()
	final := map[events.Kind]bool{events.Succeeded: true, events.Archived: true, events.Cancelled: true}
	for _, k := range []events.Kind{events.Enqueued, events.Started, events.Progress, events.Failed,
		events.Retried, events.Succeeded, events.Archived, events.Cancelled} {
		if got := (events.Event{Kind: k}).Final(); got != final[k] {
			t.Errorf("Final() of %s = %v, want %v", k, got, final[k])
		}
	}
}

func TestStreamKey(t *testing.T) {
	t.Parallel()
	if got, want := events.StreamKey("default"), "forgeq:events:{default}"; got != want {
		t.Errorf("StreamKey = %q, want %q", got, want)
	}
}

func TestTaskErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give events.TaskError
		want string
	}{
		{events.TaskError{Queue: "q", ID: "1", Kind: events.Archived, Err: "boom", Attempts: 3}, "events: task q/1 archived after 3 attempts: boom"},
		{events.TaskError{Queue: "q", ID: "1", Kind: events.Cancelled, Err: "cancelled by ops", Attempts: 1}, "events: task q/1 cancelled after 1 attempt: cancelled by ops"},
		{events.TaskError{Queue: "q", ID: "1", Kind: events.Archived, Err: "boom"}, "events: task q/1 archived: boom"},
	}
	for _, tt := range tests {
		if got := tt.give.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}
