package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/tasks/taskstest"
	"github.com/forgeq/forgeq/web"
)

// greetType is test:greet, a type the server is built without.
var greetType = taskstest.GreetType

// greet is its payload.
type greet = taskstest.Greet

// publishTypes publishes defs to b's task catalogue as worker id.
func (b *testBundle) publishTypes(tb testing.TB, id string, defs ...tasks.Declared) {
	tb.Helper()
	reg, err := tasks.NewRegistry(defs...)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tasks.NewCatalog(b.rdb).Publish(context.Background(), reg, tasks.WorkerInfo{ID: id}); err != nil {
		tb.Fatal(err)
	}
}

// TestEnqueuePublished enqueues a type that only the task catalogue has,
// with its published defaults.
func TestEnqueuePublished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publishTypes(t, "host/1/abcdef", greetType)
	got := b.enqueue(t, "test:greet", `{"payload":{"name":"Ada","times":2}}`)
	info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo(got.Queue, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	type task struct {
		Type, Queue, Payload string
		MaxRetry             int
		Timeout, Retention   time.Duration
	}
	want := task{"test:greet", "low", `{"name":"Ada","times":2}`, 2, 90 * time.Second, web.DefaultTaskRetention}
	if diff := cmp.Diff(want, task{info.Type, info.Queue, string(info.Payload), info.MaxRetry, info.Timeout, info.Retention}); diff != "" {
		t.Errorf("task (-want +got):\n%s", diff)
	}

	// The request's options override the published defaults.
	got = b.enqueue(t, "test:greet", `{"payload":{"name":"Bob"},"queue":"default","max_retry":0}`)
	if info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo(got.Queue, got.ID); err != nil || info.Queue != "default" || info.MaxRetry != 0 {
		t.Errorf("with options: %+v (%v), want queue default, 0 retries", info, err)
	}
}

// TestEnqueuePublishedRefused: a bad payload for a published type, an
// unknown type and a catalogue that cannot be read are refused, and
// nothing is enqueued.
func TestEnqueuePublishedRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		givePublish bool
		giveType    string
		giveBody    string
		wantStatus  int
		wantCode    string
		wantInMsg   []string
	}{
		{
			name: "field out of range", givePublish: true, giveType: "test:greet",
			giveBody:   `{"payload":{"name":"Ada","times":11}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_payload",
			wantInMsg: []string{`invalid payload: test:greet: field "times": maximum: got 11, want 10`},
		},
		{
			name: "missing field", givePublish: true, giveType: "test:greet",
			giveBody:   `{"payload":{}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_payload",
			wantInMsg: []string{`missing required field "name"`},
		},
		{
			name: "unknown type", givePublish: true, giveType: "test:gret",
			giveBody:   `{"payload":{"name":"Ada"}}`,
			wantStatus: http.StatusBadRequest, wantCode: "unknown_task_type",
			wantInMsg: []string{`unknown task type "test:gret" (known: cache:invalidate, cache:warm, data:process)`,
				"no worker has ever published it to the task catalogue (published: test:greet)", `did you mean "test:greet"?`},
		},
		{
			name: "never published", giveType: "test:greet",
			giveBody:   `{"payload":{"name":"Ada"}}`,
			wantStatus: http.StatusBadRequest, wantCode: "unknown_task_type",
			wantInMsg: []string{"no worker has ever published it to the task catalogue (published: none)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if tt.givePublish {
				b.publishTypes(t, "w1", greetType)
			}
			resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tt.giveType, Header: jsonHeader, Body: tt.giveBody})
			msg := wantError(t, resp, tt.wantStatus, tt.wantCode)
			for _, want := range tt.wantInMsg {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			queues, err := asynq.NewInspectorFromRedisClient(b.rdb).Queues()
			if err != nil || len(queues) != 0 {
				t.Errorf("queues %v (%v): something was enqueued", queues, err)
			}
		})
	}
}

// TestEnqueuePublishedRedisDown: a type not registered needs the
// catalogue; with Redis down the answer is 503, not a 400.
func TestEnqueuePublishedRedisDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mr.Close()
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/test:greet", Header: jsonHeader, Body: `{"payload":{"name":"Ada"}}`})
	if msg := wantError(t, resp, http.StatusServiceUnavailable, "unavailable"); msg != "task catalogue unavailable" {
		t.Errorf("message %q, want the task catalogue unavailable", msg)
	}
}

// taskTypesBody mirrors GET /api/task-types.
type taskTypesBody struct {
	TaskTypes []struct {
		Type      string        `json:"type"`
		Queue     string        `json:"queue"`
		Fields    []tasks.Field `json:"fields"`
		Local     bool          `json:"local"`
		Published bool          `json:"published"`
		Workers   []struct {
			ID       string    `json:"id"`
			LastSeen time.Time `json:"last_seen"`
		} `json:"workers"`
		Schema map[string]any `json:"schema"`
	} `json:"task_types"`
	CatalogError string `json:"catalog_error"`
}

// TestTaskTypesPublished lists the registered types and those only the
// catalogue has, with their workers; without the catalogue, the
// registered ones.
func TestTaskTypesPublished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publishTypes(t, "w1", tasks.DataProcess, greetType)

	got := decode[taskTypesBody](t, b.send(t, req{Path: "/api/task-types"}))
	type summary struct {
		Type             string
		Queue            string
		Local, Published bool
		Workers          []string
		Fields           int
		Title            any
	}
	var sums []summary
	for _, tt := range got.TaskTypes {
		s := summary{tt.Type, tt.Queue, tt.Local, tt.Published, nil, len(tt.Fields), tt.Schema["title"]}
		for _, w := range tt.Workers {
			s.Workers = append(s.Workers, w.ID)
		}
		sums = append(sums, s)
	}
	want := []summary{
		{"cache:invalidate", "default", true, false, nil, 2, "cache:invalidate"},
		{"cache:warm", "low", true, false, nil, 3, "cache:warm"},
		{"data:process", "default", true, true, []string{"w1"}, 3, "data:process"},
		{"test:greet", "low", false, true, []string{"w1"}, 2, "test:greet"},
	}
	if diff := cmp.Diff(want, sums); diff != "" || got.CatalogError != "" {
		t.Errorf("task types (catalog_error %q) (-want +got):\n%s", got.CatalogError, diff)
	}

	b.mr.Close()
	resp := b.send(t, req{Path: "/api/task-types"})
	if resp.Status != http.StatusOK {
		t.Fatalf("Redis down: status %d: %s", resp.Status, resp.Body)
	}
	got = decode[taskTypesBody](t, resp)
	if len(got.TaskTypes) != 3 || got.CatalogError == "" {
		t.Errorf("Redis down: %d types, catalog_error %q; want the 3 registered and an error", len(got.TaskTypes), got.CatalogError)
	}
}
