package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/tasks/taskstest"
)

// countingEnqueuer counts the tasks it is asked to enqueue.
type countingEnqueuer struct{ n int }

func (e *countingEnqueuer) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	e.n++
	return &asynq.TaskInfo{}, nil
}

// TestBadEnqueues builds every case of the shared table of bad enqueues
// (taskstest.BadEnqueues, which the CLI and HTTP are tested with too)
// every way Go can: the registry, the definition, the published type of
// the catalogue, and, for the option cases, the typed handle's NewTask
// and Enqueue and the New...Task constructor. Each is refused with the
// case's rule text, and nothing reaches the enqueuer.
func TestBadEnqueues(t *testing.T) {
	t.Parallel()
	def := tasks.DataProcess.Definition()
	published := tasks.PublishedType{Type: tasks.TypeProcessData, Queue: "default", Schema: def.Schema()}
	for _, tt := range taskstest.BadEnqueues(time.Now()) {
		t.Run(tt.Name, func(t *testing.T) {
			t.Parallel()
			var opts []asynq.Option
			wantErr := tasks.ErrInvalidPayload
			if tt.Option != "" {
				wantErr = tasks.ErrInvalidOption
				switch tt.Option {
				case "queue":
					opts = append(opts, asynq.Queue(tt.Value))
				case "id":
					opts = append(opts, asynq.TaskID(tt.Value))
				case "process_at":
					at, err := time.Parse(time.RFC3339, tt.Value)
					if err != nil {
						t.Fatal(err)
					}
					opts = append(opts, asynq.ProcessAt(at))
				default:
					t.Fatalf("no Go option for %q", tt.Option)
				}
			}
			enq := &countingEnqueuer{}
			builders := map[string]func() (*asynq.Task, error){
				"registry": func() (*asynq.Task, error) {
					return tasks.Default().NewTask(tasks.TypeProcessData, []byte(tt.Payload), opts...)
				},
				"definition": func() (*asynq.Task, error) { return def.NewTask([]byte(tt.Payload), opts...) },
				"published":  func() (*asynq.Task, error) { return published.NewTask([]byte(tt.Payload), opts...) },
			}
			if tt.Option != "" {
				p := tasks.ProcessData{Key: "k", Work: 1}
				builders["typed"] = func() (*asynq.Task, error) { return tasks.DataProcess.NewTask(p, opts...) }
				builders["constructor"] = func() (*asynq.Task, error) { return tasks.NewProcessDataTask(p, opts...) }
				builders["typed enqueue"] = func() (*asynq.Task, error) {
					_, err := tasks.DataProcess.Enqueue(context.Background(), enq, p, opts...)
					return nil, err
				}
			} else if err := def.Validate([]byte(tt.Payload)); !errors.Is(err, wantErr) || !strings.Contains(err.Error(), tt.Want) {
				t.Errorf("Validate: %v, want %v with %q", err, wantErr, tt.Want)
			}
			for name, build := range builders {
				task, err := build()
				if task != nil || !errors.Is(err, wantErr) || !strings.Contains(err.Error(), tt.Want) {
					t.Errorf("%s: task %v, error %.300v; want %v with %q", name, task, err, wantErr, tt.Want)
				}
			}
			if enq.n != 0 {
				t.Errorf("%d tasks enqueued, want none", enq.n)
			}
		})
	}
}

func TestCheckOption(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		give    asynq.Option
		wantErr string // "": accepted
	}{
		{"queue", asynq.Queue("critical:mail.v2-x_y"), ""},
		{"queue of 128 bytes", asynq.Queue(strings.Repeat("q", 128)), ""},
		{"queue of 129 bytes", asynq.Queue(strings.Repeat("q", 129)), `queue "` + strings.Repeat("q", 64) + `"... (129 bytes): is 129 bytes, over the 128-byte limit`},
		{"empty queue", asynq.Queue(""), `queue "": is empty; want 1 to 128 of A-Z a-z 0-9 . _ : -`},
		{"queue with a slash", asynq.Queue("a/b"), `queue "a/b": has a character outside A-Z a-z 0-9 . _ : -`},
		{"queue not ASCII", asynq.Queue("äb"), `queue "äb": has a character outside`},
		{"id", asynq.TaskID("report-1:2026-01-01"), ""},
		{"id with a tab", asynq.TaskID("a\tb"), `id "a\tb": has a character outside`},
		{"id not UTF-8", asynq.TaskID("a\xffb"), `id "a\xffb": has a character outside`},
		{"delay", asynq.ProcessIn(time.Hour), ""},
		{"negative delay", asynq.ProcessIn(-time.Second), `delay "-1s": must not be negative`},
		{"delay over the limit", asynq.ProcessIn(367 * 24 * time.Hour), `delay "8808h0m0s": want at most 366 days`},
		{"process_at now", asynq.ProcessAt(now), ""},
		{"process_at a moment ago", asynq.ProcessAt(now.Add(-tasks.ProcessAtSkew)), ""},
		{"process_at in the past", asynq.ProcessAt(now.Add(-tasks.ProcessAtSkew - time.Second)), `process_at "2030-01-02T03:03:04Z": is in the past (now is 2030-01-02T03:04:05Z)`},
		{"process_at too far", asynq.ProcessAt(now.Add(367 * 24 * time.Hour)), `is more than 366 days ahead`},
		{"deadline", asynq.Deadline(now.Add(time.Second)), ""},
		{"deadline now", asynq.Deadline(now), `deadline "2030-01-02T03:04:05Z": is in the past`},
		{"timeout", asynq.Timeout(time.Second), ""},
		{"timeout under a second", asynq.Timeout(999 * time.Millisecond), `timeout "999ms": want at least 1s`},
		{"timeout over the limit", asynq.Timeout(9000 * time.Hour), `timeout "9000h0m0s": want at most 366 days`},
		{"unique", asynq.Unique(time.Second), ""},
		{"unique under a second", asynq.Unique(time.Millisecond), `unique "1ms": want at least 1s (asynq's minimum)`},
		{"max retry", asynq.MaxRetry(1000), ""},
		{"max retry over the limit", asynq.MaxRetry(1001), `max_retry "1001": want at most 1000`},
		{"retention", asynq.Retention(0), ""},
		{"negative retention", asynq.Retention(-time.Minute), `retention "-1m0s": must not be negative`},
		{"group", asynq.Group("g"), `group "g": task groups are not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tasks.CheckOption(tt.give, now)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("CheckOption(%v) = %v, want nil", tt.give, err)
				}
				return
			}
			var oe *tasks.OptionError
			if !errors.As(err, &oe) || !errors.Is(err, tasks.ErrInvalidOption) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CheckOption(%v) = %v, want an *OptionError with %q", tt.give, err, tt.wantErr)
			}
		})
	}
	if err := tasks.CheckMaxRetry(-1); err == nil || err.Error() != `max_retry "-1": must not be negative` {
		t.Errorf("CheckMaxRetry(-1) = %v", err)
	}
}

// Named renders an OptionError the entry point's way, keeping the rule
// and the error chain.
func TestOptionErrorNamed(t *testing.T) {
	t.Parallel()
	err := tasks.CheckQueueName("bad queue!")
	var oe *tasks.OptionError
	if !errors.As(err, &oe) {
		t.Fatalf("CheckQueueName: %v, want an *OptionError", err)
	}
	got := []string{err.Error(), oe.Named("--queue", "bad queue!").Error(), oe.Named(`field "queue"`, "bad queue!").Error()}
	want := []string{
		`queue "bad queue!": has a character outside A-Z a-z 0-9 . _ : -`,
		`--queue "bad queue!": has a character outside A-Z a-z 0-9 . _ : -`,
		`field "queue" "bad queue!": has a character outside A-Z a-z 0-9 . _ : -`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if named := oe.Named("x", "y"); !errors.Is(named, tasks.ErrInvalidOption) || !errors.As(named, new(*tasks.OptionError)) {
		t.Errorf("Named(...) = %v does not wrap the OptionError", named)
	}
	long := tasks.CheckTaskID(strings.Repeat("é", 100)).Error()
	if want := `id "` + strings.Repeat("é", 32) + `"... (200 bytes): is 200 bytes, over the 128-byte limit`; long != want {
		t.Errorf("long id: %q, want %q", long, want)
	}
}

func TestCheckJSON(t *testing.T) {
	t.Parallel()
	many := func(dupAt int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range 40 {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		fmt.Fprintf(&b, `"k%d":0}`, dupAt)
		return b.String()
	}
	tests := []struct {
		give         string
		wantErr      string // "": accepted
		wantEnvelope string // CheckEnvelope's; "": accepted
	}{
		{give: `{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}`},
		{give: `{"a":"\ud83d\ude00 \u00e9 ü"}`},
		{give: `not JSON {"a":1,"a":1}`},
		{give: `{"a":1,"a":2}`, wantErr: `duplicate field "a"`, wantEnvelope: `duplicate field "a"`},
		{give: `{"a":1,"\u0061":2}`, wantErr: `duplicate field "a"`, wantEnvelope: `duplicate field "a"`},
		{give: `{"a":{"b":{"c":1,"c":2}}}`, wantErr: `duplicate field "a.b.c"`},
		{give: `{"rows":[{"x":1},{"x":1,"x":2}]}`, wantErr: `duplicate field "rows[1].x"`},
		{give: `[[{"x":1,"x":2}]]`, wantErr: `duplicate field "[0][0].x"`},
		{give: many(39), wantErr: `duplicate field "k39"`, wantEnvelope: `duplicate field "k39"`},
		{give: many(3), wantErr: `duplicate field "k3"`, wantEnvelope: `duplicate field "k3"`},
		{give: "{\"a\":{\"b\":\"\xff\"}}", wantErr: `field "a.b": is not valid UTF-8`},
		{give: "{\"a\":[\"ok\",\"\xed\xa0\x80\"]}", wantErr: `field "a[1]": is not valid UTF-8`},
		{give: `{"a":"\udc00"}`, wantErr: `field "a": has an unpaired surrogate escape \udc00`},
		{give: `{"a":"\ud800x"}`, wantErr: `field "a": has an unpaired surrogate escape \ud800`},
		{give: "{\"\xff\":1}", wantErr: `field "\xff": name is not valid UTF-8`, wantEnvelope: `field "\xff": name is not valid UTF-8`},
		{give: "\"\xff\"", wantErr: `a string is not valid UTF-8`},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			for _, c := range []struct {
				name  string
				check func([]byte) error
				want  string
			}{{"CheckJSON", tasks.CheckJSON, tt.wantErr}, {"CheckEnvelope", tasks.CheckEnvelope, tt.wantEnvelope}} {
				err := c.check([]byte(tt.give))
				got := ""
				if err != nil {
					got = err.Error()
				}
				if got != c.want {
					t.Errorf("%s = %q, want %q", c.name, got, c.want)
				}
			}
		})
	}
}
