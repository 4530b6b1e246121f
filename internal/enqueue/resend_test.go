package enqueue

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// fakeRedis is a fake enqueuer and taskLookup: a write of a task whose key
// is in timeout fails as a timeout would, having landed when landed has the
// key too; a look-up fails while down is set.
type fakeRedis struct {
	mu      sync.Mutex
	tasks   map[string]*asynq.TaskInfo // by id
	timeout map[string]bool            // by payload key
	landed  map[string]bool            // by payload key
	ids     map[string]string          // by payload key: the task's id
	down    bool
}

var errFakeTimeout = errors.New("i/o timeout")

func (f *fakeRedis) EnqueueContext(_ context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := string(task.Payload())
	id := f.ids[key]
	if f.timeout[key] {
		if f.landed[key] {
			f.tasks[id] = &asynq.TaskInfo{ID: id, Type: task.Type(), Payload: task.Payload(), State: asynq.TaskStatePending}
		}
		return nil, errFakeTimeout
	}
	if _, ok := f.tasks[id]; ok {
		return nil, asynq.ErrTaskIDConflict
	}
	ti := &asynq.TaskInfo{ID: id, Type: task.Type(), Payload: task.Payload(), State: asynq.TaskStatePending}
	f.tasks[id] = ti
	return ti, nil
}

// batch enqueues items one at a time as EnqueueContext does, stopping at
// the first conflict (as a *tasks.BatchError) or failure.
func (f *fakeRedis) batch(ctx context.Context, items []tasks.BatchItem) ([]tasks.BatchResult, error) {
	res := make([]tasks.BatchResult, len(items))
	for i, it := range items {
		ti, err := f.EnqueueContext(ctx, asynq.NewTask(it.Type, it.Payload))
		switch {
		case isConflict(err):
			return res, &tasks.BatchError{Index: i, Err: err}
		case err != nil:
			return res, err
		}
		res[i] = tasks.BatchResult{ID: ti.ID, Type: ti.Type, State: ti.State}
	}
	return res, nil
}

func (f *fakeRedis) GetTaskInfo(_, id string) (*asynq.TaskInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errFakeTimeout
	}
	if ti, ok := f.tasks[id]; ok {
		return ti, nil
	}
	return nil, asynq.ErrTaskNotFound
}

// TestBulkOutcomes runs enqueueAll on a fake Redis whose writes time out on
// chosen lines, and checks each line's outcome, the counts and the resend
// file.
func TestBulkOutcomes(t *testing.T) {
	t.Parallel()
	const input = `{"type": "data:process", "payload": {"key": "a", "work": 1}}
{"type": "data:process", "payload": {"key": "b", "work": 1}, "id": "given-b"}
{"type": "data:process", "id": null, "payload": {"key": "c", "work": 1}}
{ "type": "data:process", "payload": {"key": "d", "work": 1}}
{"type": "data:process", "payload": {"key": "e", "work": 1}}
`
	payload := func(k string) string { return `{"key":"` + k + `","work":1}` }
	tests := []struct {
		name        string
		giveTimeout []string // payload keys whose write times out
		giveLanded  []string // ... and reaches Redis anyway
		giveDown    bool     // Redis does not answer the probe and look-ups
		giveSettle  error
		want        []outcome
		wantCounts  [4]int // enqueued, failed, unknown, not attempted
		wantResend  []int  // lines, by index of the input
	}{
		{
			name: "all enqueued",
			want: []outcome{enqueued, enqueued, enqueued, enqueued, enqueued}, wantCounts: [4]int{5, 0, 0, 0},
		},
		{
			name:        "timeout, landed",
			giveTimeout: []string{"b"}, giveLanded: []string{"b"},
			want:       []outcome{enqueued, enqueued, notAttempted, notAttempted, notAttempted},
			wantCounts: [4]int{2, 0, 0, 3}, wantResend: []int{2, 3, 4},
		},
		{
			name:        "timeout, not landed",
			giveTimeout: []string{"c"},
			want:        []outcome{enqueued, enqueued, failed, notAttempted, notAttempted},
			wantCounts:  [4]int{2, 1, 0, 2}, wantResend: []int{2, 3, 4},
		},
		{
			name:        "redis down",
			giveTimeout: []string{"a"}, giveLanded: []string{"a"}, giveDown: true,
			want:       []outcome{unknown, notAttempted, notAttempted, notAttempted, notAttempted},
			wantCounts: [4]int{0, 0, 1, 4}, wantResend: []int{0, 1, 2, 3, 4},
		},
		{
			name:        "not settled",
			giveTimeout: []string{"c"}, giveSettle: errors.New("still connected"),
			want:       []outcome{enqueued, enqueued, unknown, notAttempted, notAttempted},
			wantCounts: [4]int{2, 0, 1, 2}, wantResend: []int{2, 3, 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			c := &cli{reg: tasks.Default(), now: time.Now, stderr: io.Discard, stdout: io.Discard, prog: "enqueue"}
			c.f.concurrency, c.f.progress, c.f.batchSize = 1, "never", 1
			c.f.file = filepath.Join(dir, "in.jsonl")
			list, bad, err := c.checkLines(context.Background(), strings.NewReader(input), c.localTypes())
			if err != nil || len(bad) > 0 {
				t.Fatal(err, bad)
			}
			f := &fakeRedis{tasks: map[string]*asynq.TaskInfo{}, timeout: map[string]bool{}, landed: map[string]bool{}, down: tt.giveDown}
			for _, k := range tt.giveTimeout {
				f.timeout[payload(k)] = true
			}
			f.ids = map[string]string{}
			for _, tk := range list {
				f.ids[string(tk.task.Payload())] = tk.id
			}
			for _, k := range tt.giveLanded {
				f.landed[payload(k)] = true
			}
			probed := false
			bio := bulkIO{batch: f.batch, insp: f,
				probe: func(context.Context) error {
					probed = true
					if tt.giveDown {
						return errFakeTimeout
					}
					return nil
				},
				settle: func(context.Context) error { return tt.giveSettle },
			}
			res := c.enqueueAll(context.Background(), bio, list)
			if diff := cmp.Diff(tt.want, res.outcomes); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			got := [4]int{res.enqueued, res.failed, res.unknown, len(list) - res.enqueued - res.failed - res.unknown}
			if got != tt.wantCounts {
				t.Errorf("counts %v, want %v", got, tt.wantCounts)
			}
			if probed != (len(tt.giveTimeout) > 0) {
				t.Errorf("probed %v", probed)
			}
			var out bytes.Buffer
			c.stdout = &out
			rf := c.resend(res)
			err = c.report(res, rf)
			if (err == nil) != (tt.wantCounts[0] == len(list)) {
				t.Errorf("report: %v", err)
			}
			if len(tt.wantResend) == 0 {
				if rf.path != "" {
					t.Errorf("resend file %s written, want none", rf.path)
				}
				return
			}
			wantPath := filepath.Join(dir, "in.resend.jsonl")
			if rf.path != wantPath || rf.err != nil || !strings.Contains(out.String(), "enqueue --file "+wantPath) {
				t.Errorf("resend file %+v; stdout %q", rf, out.String())
			}
			data, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatal(err)
			}
			inLines := strings.Split(input, "\n")
			var want []string
			for _, i := range tt.wantResend {
				line := inLines[i]
				if id := list[i].id; list[i].ownID {
					if strings.Contains(line, `"id": null`) {
						line = strings.Replace(line, `"id": null`, `"id": "`+id+`"`, 1)
					} else {
						line = "{" + `"id":"` + id + `",` + line[1:]
					}
				}
				want = append(want, line)
			}
			gotLines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			if diff := cmp.Diff(want, gotLines); diff != "" {
				t.Errorf("resend file (-want +got):\n%s", diff)
			}

			// The resend lines parse, each with its task's id.
			rc := &cli{reg: tasks.Default(), now: time.Now, stderr: io.Discard, stdout: io.Discard}
			again, bad, err := rc.checkLines(context.Background(), bytes.NewReader(data), rc.localTypes())
			if err != nil || len(bad) > 0 {
				t.Fatal(err, bad)
			}
			for j, tk := range again {
				if i := tt.wantResend[j]; tk.ownID || tk.id != list[i].id || !bytes.Equal(tk.task.Payload(), list[i].task.Payload()) {
					t.Errorf("resend line %d: id %q (own %v), want %q", j+1, tk.id, tk.ownID, list[i].id)
				}
			}
		})
	}
}
