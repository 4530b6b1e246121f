package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// enqueuedBody mirrors the 202 body of POST /api/tasks/{type}.
type enqueuedBody struct {
	ID        string     `json:"id"`
	Queue     string     `json:"queue"`
	Type      string     `json:"type"`
	State     string     `json:"state"`
	ProcessAt *time.Time `json:"process_at"`
	StatusURL string     `json:"status_url"`
}

// enqueue posts body to POST /api/tasks/{typ} and wants 202.
func (b *testBundle) enqueue(tb testing.TB, typ, body string) enqueuedBody {
	tb.Helper()
	resp := b.send(tb, req{Method: http.MethodPost, Path: "/api/tasks/" + typ, Header: jsonHeader, Body: body})
	if resp.Status != http.StatusAccepted {
		tb.Fatalf("POST /api/tasks/%s: status %d, want 202: %s", typ, resp.Status, resp.Body)
	}
	got := decode[enqueuedBody](tb, resp)
	if loc := resp.Header.Get("Location"); loc != got.StatusURL {
		tb.Errorf("Location = %q, want the status URL %q", loc, got.StatusURL)
	}
	return got
}

// TestEnqueueAndComplete enqueues over HTTP, lets a real asynq server
// process the task on miniredis, and reads its state and result.
func TestEnqueueAndComplete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.rdb, b.m)
	testEnqueueAndComplete(t, b)
}

// testEnqueueAndComplete is the enqueue, process, status flow, on
// miniredis and on real Redis.
func testEnqueueAndComplete(t *testing.T, b *testBundle) {
	t.Helper()
	got := b.enqueue(t, tasks.TypeProcessData, `{"payload":{"key":"report:7","work":1000}}`)
	if got.ID == "" || got.Queue != "default" || got.Type != tasks.TypeProcessData || got.StatusURL != "/api/tasks/default/"+got.ID {
		t.Errorf("enqueued = %+v, want an id on queue default with its status URL", got)
	}

	st := waitState(t, b.ts.URL, got.StatusURL, "completed")
	var result tasks.ProcessDataResult
	if err := json.Unmarshal(st.Result, &result); err != nil {
		t.Fatalf("result %s is not a data:process result: %v", st.Result, err)
	}
	want := tasks.ProcessDataResult{Key: "report:7", Value: tasks.Digest("report:7", 1000), Source: tasks.SourceComputed}
	if diff := cmp.Diff(want, result, cmpIgnoreTook); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if st.ID != got.ID || st.Type != tasks.TypeProcessData || st.CompletedAt == nil || st.LastError != "" {
		t.Errorf("status = %+v, want completed without error", st)
	}
	if string(st.Payload) != `{"key":"report:7","work":1000}` {
		t.Errorf("payload = %s, want the one enqueued", st.Payload)
	}
	if st.Progress == nil || st.Progress.Percent != 100 || st.Progress.TaskID != got.ID {
		t.Errorf("progress = %+v, want 100%% of task %s", st.Progress, got.ID)
	}

	// The web's cache-aside route now finds the value the task cached.
	resp := b.send(t, req{Path: "/api/cache/report:7"})
	if c := decode[cachedBody](t, resp); c.Source != "cache" || c.Data != want.Value {
		t.Errorf("GET /api/cache/report:7 = %+v, want the task's value from the cache", c)
	}
}

var cmpIgnoreTook = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".TookMS" }, cmp.Ignore())

func TestEnqueueOptions(t *testing.T) {
	t.Parallel()
	processAt := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	tests := []struct {
		name  string
		give  string
		check func(t *testing.T, got enqueuedBody, info *asynq.TaskInfo)
	}{
		{
			name: "defaults of the type",
			give: `{"payload":{"keys":["a"],"work":1}}`,
			check: func(t *testing.T, got enqueuedBody, info *asynq.TaskInfo) {
				if got.Queue != "low" || got.State != "pending" || info.MaxRetry != 3 || info.Timeout != 30*time.Minute {
					t.Errorf("got %+v, info %+v: want cache:warm's defaults (low, 3 retries, 30m)", got, info)
				}
				if info.Retention != web.DefaultTaskRetention {
					t.Errorf("retention = %v, want the default %v", info.Retention, web.DefaultTaskRetention)
				}
			},
		},
		{
			name: "every option",
			give: `{"payload":{"keys":["a"],"work":1},"queue":"default","id":"warm-1","delay":"1h","max_retry":0,` +
				`"timeout":"90s","retention":"10m","unique":"5m"}`,
			check: func(t *testing.T, got enqueuedBody, info *asynq.TaskInfo) {
				if got.ID != "warm-1" || got.Queue != "default" || got.State != "scheduled" || got.ProcessAt == nil {
					t.Errorf("got %+v, want warm-1 scheduled on default", got)
				}
				if d := time.Until(*got.ProcessAt); d < 59*time.Minute || d > time.Hour {
					t.Errorf("process_at is %v away, want about 1h", d)
				}
				if info.MaxRetry != 0 || info.Timeout != 90*time.Second || info.Retention != 10*time.Minute {
					t.Errorf("info %+v: want 0 retries, 90s timeout, 10m retention", info)
				}
			},
		},
		{
			name: "process_at and deadline",
			give: `{"payload":{"keys":["a"],"work":1},"process_at":"` + processAt.Format(time.RFC3339) +
				`","deadline":"` + processAt.Add(time.Hour).Format(time.RFC3339) + `"}`,
			check: func(t *testing.T, got enqueuedBody, info *asynq.TaskInfo) {
				if got.State != "scheduled" || got.ProcessAt == nil || !got.ProcessAt.Equal(processAt) {
					t.Errorf("got %+v, want scheduled at %v", got, processAt)
				}
				if !info.Deadline.Equal(processAt.Add(time.Hour)) {
					t.Errorf("deadline = %v, want %v", info.Deadline, processAt.Add(time.Hour))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			got := b.enqueue(t, tasks.TypeWarm, tt.give)
			info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo(got.Queue, got.ID)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got, info)

			resp := b.send(t, req{Path: got.StatusURL})
			st := decode[taskStatus](t, resp)
			if st.State != got.State || st.ID != got.ID {
				t.Errorf("status %+v, want state %s", st, got.State)
			}
		})
	}
}

func TestTaskTypes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp := b.send(t, req{Path: "/api/task-types"})
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.Status, resp.Body)
	}
	type taskType struct {
		Type        string        `json:"type"`
		Description string        `json:"description"`
		Queue       string        `json:"queue"`
		Fields      []tasks.Field `json:"fields"`
	}
	got := decode[struct {
		TaskTypes []taskType `json:"task_types"`
	}](t, resp)

	reg := tasks.Default()
	if len(got.TaskTypes) != len(reg.Types()) {
		t.Fatalf("%d task types, want %d", len(got.TaskTypes), len(reg.Types()))
	}
	for _, tt := range got.TaskTypes {
		def, ok := reg.Lookup(tt.Type)
		if !ok {
			t.Errorf("unknown type %q listed", tt.Type)
			continue
		}
		if tt.Description != def.Description() || tt.Queue != def.Queue() {
			t.Errorf("%s: description %q, queue %q; want the definition's", tt.Type, tt.Description, tt.Queue)
		}
		if diff := cmp.Diff(def.Fields(), tt.Fields); diff != "" {
			t.Errorf("%s fields (-want +got):\n%s", tt.Type, diff)
		}
	}
}

func TestTaskStatusOfFailedTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A task the worker cannot parse fails for good (SkipRetry): its
	// status says why.
	task := asynq.NewTask(tasks.TypeProcessData, []byte(`{"key":"k"}`), asynq.Retention(time.Hour))
	info, err := asynq.NewClientFromRedisClient(b.rdb).EnqueueContext(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	startWorker(t, b.rdb, b.m)
	st := waitState(t, b.ts.URL, "/api/tasks/default/"+info.ID, "archived")
	if !strings.Contains(st.LastError, `missing required field "work"`) {
		t.Errorf("last_error = %q, want the payload error", st.LastError)
	}
	if st.Result != nil {
		t.Errorf("result = %s, want none", st.Result)
	}
}

// echoText is the payload of the test task type echo:text.
type echoText struct {
	Text string `json:"text"`
}

func TestTaskStatusOfTextResult(t *testing.T) {
	t.Parallel()
	echo := tasks.Define("echo:text", "Return the text as the result",
		func(_ context.Context, _ tasks.Deps, p echoText) ([]byte, error) { return []byte(p.Text), nil },
		asynq.Queue("default"))
	reg, err := tasks.NewRegistry(echo)
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, func(o *web.Options) { o.Registry = reg })
	startWorkerFor(t, reg, b.rdb, b.m)

	// Only the types of Options.Registry may be enqueued.
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader, Body: `{"payload":{"key":"k","work":1}}`})
	wantError(t, resp, http.StatusBadRequest, "unknown_task_type")

	for _, tt := range []struct {
		give, want string
	}{
		{give: "plain words", want: `"plain words"`},
		{give: `{\"a\": [1, 2]}`, want: `{"a":[1,2]}`},
	} {
		got := b.enqueue(t, "echo:text", `{"payload":{"text":"`+tt.give+`"}}`)
		st := waitState(t, b.ts.URL, got.StatusURL, "completed")
		if string(st.Result) != tt.want {
			t.Errorf("result of %q = %s, want %s", tt.give, st.Result, tt.want)
		}
	}
}
