package forgeqtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/tasks"
)

// noteArgs is the payload of the test type note.
type noteArgs struct {
	Text string `json:"text"`
}

// note does nothing; the recorder tests enqueue it. Its defaults are queue
// "low" and 3 retries.
var note = tasks.Define("test:note", "a note", func(context.Context, tasks.Deps, noteArgs) ([]byte, error) {
	return nil, nil
}, asynq.Queue("low"), asynq.MaxRetry(3))

// fanArgs is the payload of the test type fan.
type fanArgs struct {
	Texts []string `json:"texts"`
}

// fan enqueues one note per text, the last one on queue "critical".
var fan = tasks.Define("test:fan", "enqueues notes", func(ctx context.Context, deps tasks.Deps, a fanArgs) ([]byte, error) {
	for i, text := range a.Texts {
		var opts []asynq.Option
		if i == len(a.Texts)-1 {
			opts = append(opts, asynq.Queue("critical"))
		}
		if _, err := note.Enqueue(ctx, deps.Enqueuer, noteArgs{Text: text}, opts...); err != nil {
			return nil, err
		}
	}
	return nil, nil
})

// recorded is what the recorder tests compare of a TaskInfo.
type recorded struct {
	Type      string
	Queue     string
	MaxRetry  int
	Timeout   time.Duration
	Retention time.Duration
	State     asynq.TaskState
}

func TestRecorderResolvesOptions(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		give []asynq.Option
		want recorded
	}{
		{
			name: "type defaults",
			// asynq's own default timeout is 30 minutes.
			want: recorded{Type: "test:note", Queue: "low", MaxRetry: 3, Timeout: 30 * time.Minute, State: asynq.TaskStatePending},
		},
		{
			name: "overrides",
			give: []asynq.Option{asynq.Queue("critical"), asynq.MaxRetry(0), asynq.Timeout(time.Minute), asynq.Retention(2 * time.Hour)},
			want: recorded{Type: "test:note", Queue: "critical", MaxRetry: 0, Timeout: time.Minute, Retention: 2 * time.Hour, State: asynq.TaskStatePending},
		},
		{
			name: "delayed",
			give: []asynq.Option{asynq.ProcessIn(time.Hour)},
			want: recorded{Type: "test:note", Queue: "low", MaxRetry: 3, Timeout: 30 * time.Minute, State: asynq.TaskStateScheduled},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := forgeqtest.NewRecorder(t)

			info, err := note.Enqueue(t.Context(), rec, noteArgs{Text: "hi"}, tt.give...)
			if err != nil {
				t.Fatal(err)
			}

			all := rec.Enqueued()
			if len(all) != 1 || all[0] != info {
				t.Fatalf("Enqueued() = %v, want the one TaskInfo Enqueue returned", all)
			}
			got := recorded{info.Type, info.Queue, info.MaxRetry, info.Timeout, info.Retention, info.State}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("TaskInfo (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRecorderDeadlineAndProcessAt(t *testing.T) {
	t.Parallel()
	rec := forgeqtest.NewRecorder(t)
	at := time.Now().Add(time.Hour).Truncate(time.Second)
	deadline := at.Add(time.Hour)

	info, err := note.Enqueue(t.Context(), rec, noteArgs{Text: "later"}, asynq.ProcessAt(at), asynq.Deadline(deadline))
	if err != nil {
		t.Fatal(err)
	}

	if !info.NextProcessAt.Equal(at) || !info.Deadline.Equal(deadline) {
		t.Errorf("process at %v, deadline %v; want %v and %v", info.NextProcessAt, info.Deadline, at, deadline)
	}
	// With a deadline and no timeout, asynq sets no timeout.
	if info.Timeout != 0 {
		t.Errorf("timeout %v, want 0 (the deadline bounds the task)", info.Timeout)
	}
}

func TestRecorderRecordsFollowUps(t *testing.T) {
	t.Parallel()
	h := forgeqtest.New(t)

	res := forgeqtest.Run(h, fan, fanArgs{Texts: []string{"a", "b", "c"}})
	if res.Err != nil {
		t.Fatal(res.Err)
	}

	rec := h.Enqueuer()
	if diff := cmp.Diff([]noteArgs{{"a"}, {"b"}, {"c"}}, forgeqtest.Payloads(t, rec, note)); diff != "" {
		t.Errorf("note payloads (-want +got):\n%s", diff)
	}
	var queues []string
	for _, ti := range rec.OfType(note.Name()) {
		queues = append(queues, ti.Queue)
	}
	if diff := cmp.Diff([]string{"low", "low", "critical"}, queues); diff != "" {
		t.Errorf("queues (-want +got):\n%s", diff)
	}
	if n := len(rec.OfType(fan.Name())); n != 0 {
		t.Errorf("%d fan tasks recorded, want none", n)
	}

	rec.Reset()
	if n := len(rec.Enqueued()); n != 0 {
		t.Errorf("%d tasks after Reset, want none", n)
	}
}

func TestRecorderReturnsAsynqErrors(t *testing.T) {
	t.Parallel()
	rec := forgeqtest.NewRecorder(t)
	ctx := t.Context()

	if _, err := note.Enqueue(ctx, rec, noteArgs{Text: "once"}, asynq.TaskID("n-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := note.Enqueue(ctx, rec, noteArgs{Text: "twice"}, asynq.TaskID("n-1")); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("second task with id n-1: %v, want asynq.ErrTaskIDConflict", err)
	}
	if _, err := note.Enqueue(ctx, rec, noteArgs{Text: "u"}, asynq.Unique(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := note.Enqueue(ctx, rec, noteArgs{Text: "u"}, asynq.Unique(time.Hour)); !errors.Is(err, asynq.ErrDuplicateTask) {
		t.Errorf("second unique task: %v, want asynq.ErrDuplicateTask", err)
	}
	if n := len(rec.Enqueued()); n != 2 {
		t.Errorf("%d tasks recorded, want the 2 asynq took:\n%s", n, rec)
	}

	// Reset empties the Redis too: the id is free again.
	rec.Reset()
	if _, err := note.Enqueue(ctx, rec, noteArgs{Text: "again"}, asynq.TaskID("n-1")); err != nil {
		t.Errorf("id n-1 after Reset: %v", err)
	}
}
