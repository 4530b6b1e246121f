package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// workflowDB is the database of the test Redis that the end-to-end
// workflow test owns.
const workflowDB = 41

// submitted mirrors the 202 body of POST /api/workflows.
type submitted struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Total     int    `json:"total"`
	Started   int    `json:"started"`
	StatusURL string `json:"status_url"`
}

// workflowState mirrors the state in the bodies of the workflow routes,
// with the steps and paging of GET /api/workflows/{id}.
type workflowState struct {
	ID               string     `json:"id"`
	Name             string     `json:"name"`
	Status           string     `json:"status"`
	Total            int        `json:"total"`
	Done             int        `json:"done"`
	Failed           int        `json:"failed"`
	Percent          float64    `json:"percent"`
	FailedStep       string     `json:"failed_step"`
	Error            string     `json:"error"`
	Created          time.Time  `json:"created"`
	Started          *time.Time `json:"started"`
	Updated          time.Time  `json:"updated"`
	Finished         *time.Time `json:"finished"`
	RetentionSeconds int64      `json:"retention_seconds"`
	StatusURL        string     `json:"status_url"`

	Steps      []workflowStep `json:"steps"`
	StepsTotal int            `json:"steps_total"`
	Offset     int            `json:"offset"`
	Limit      int            `json:"limit"`
}

type workflowStep struct {
	Path     string             `json:"path"`
	Type     string             `json:"type"`
	Queue    string             `json:"queue"`
	TaskID   string             `json:"task_id"`
	Status   string             `json:"status"`
	Error    string             `json:"error"`
	Progress *workflow.Progress `json:"progress"`
}

// pathsAndStatuses returns "path status" of each step.
func (s workflowState) pathsAndStatuses() []string {
	out := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		out[i] = st.Path + " " + st.Status
	}
	return out
}

// submitWorkflow posts body to POST /api/workflows of base with the
// credentials of q (its Method, Path and Body are set here) and wants 202.
func submitWorkflow(tb testing.TB, base string, q req, body string) submitted {
	tb.Helper()
	q.Method, q.Path, q.Body = http.MethodPost, "/api/workflows", body
	if q.Header == nil {
		q.Header = jsonHeader
	}
	resp := send(tb, base, q)
	if resp.Status != http.StatusAccepted {
		tb.Fatalf("POST /api/workflows: status %d, want 202: %s", resp.Status, resp.Body)
	}
	got := decode[submitted](tb, resp)
	if loc := resp.Header.Get("Location"); loc != got.StatusURL || got.StatusURL != "/api/workflows/"+got.ID {
		tb.Errorf("Location = %q, status_url = %q; want both /api/workflows/%s", loc, got.StatusURL, got.ID)
	}
	return got
}

// getWorkflow reads GET path (a status URL, maybe with a query) and
// wants 200.
func getWorkflow(tb testing.TB, base string, q req, path string) workflowState {
	tb.Helper()
	q.Path = path
	resp := send(tb, base, q)
	if resp.Status != http.StatusOK {
		tb.Fatalf("GET %s: status %d: %s", path, resp.Status, resp.Body)
	}
	return decode[workflowState](tb, resp)
}

// workflowKeys returns the keys of workflows and of asynq in b's Redis.
func (b *testBundle) workflowKeys(tb testing.TB) []string {
	tb.Helper()
	var out []string
	for _, k := range b.mr.Keys() {
		if strings.HasPrefix(k, workflow.KeyPrefix) || strings.HasPrefix(k, "asynq:") {
			out = append(out, k)
		}
	}
	return out
}

// A chain of a data:process step and a group of two with a callback:
// steps 0, 1.m0, 1.m1 and 1.cb. The payloads carry a marker that must
// never reach the log.
const (
	payloadMarker  = "payload-marker-7d1f"
	chainWithGroup = `{"id":"nightly-1","name":"nightly","workflow":{"chain":[
		{"type":"data:process","payload":{"key":"` + payloadMarker + `","work":1}},
		{"group":[{"type":"data:process","payload":{"key":"a","work":1}},{"type":"data:process","payload":{"key":"b","work":1}}],
		 "callback":{"type":"cache:warm","payload":{"keys":["a","b"],"work":1}}}]}}`
)

func TestSubmitWorkflow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got := submitWorkflow(t, b.ts.URL, req{}, chainWithGroup)
	want := submitted{ID: "nightly-1", Name: "nightly", Total: 4, Started: 1, StatusURL: "/api/workflows/nightly-1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("202 body (-want +got):\n%s", diff)
	}

	// The first step waits in its queue under its workflow task id.
	info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo("default", workflow.TaskID("nightly-1", "0"))
	if err != nil {
		t.Fatalf("the first step's task: %v", err)
	}
	if info.Type != tasks.TypeProcessData || info.State != asynq.TaskStatePending {
		t.Errorf("first step's task: %s %s, want a pending %s", info.Type, info.State, tasks.TypeProcessData)
	}

	st := getWorkflow(t, b.ts.URL, req{}, got.StatusURL)
	if st.ID != "nightly-1" || st.Name != "nightly" || st.Status != "pending" || st.Total != 4 || st.Done != 0 ||
		st.StepsTotal != 4 || st.Offset != 0 || st.Limit != web.DefaultStepPage || st.StatusURL != got.StatusURL {
		t.Errorf("GET %s = %+v", got.StatusURL, st)
	}
	if st.RetentionSeconds != int64(workflow.DefaultRetention/time.Second) {
		t.Errorf("retention_seconds = %d, want %d", st.RetentionSeconds, int64(workflow.DefaultRetention/time.Second))
	}
	wantSteps := []string{"0 active", "1.m0 waiting", "1.m1 waiting", "1.cb waiting"}
	if diff := cmp.Diff(wantSteps, st.pathsAndStatuses()); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if s := st.Steps[3]; s.Type != tasks.TypeWarm || s.Queue != "low" || s.TaskID != "wf:nightly-1:1.cb" {
		t.Errorf("callback step %+v, want cache:warm on low with its task id", s)
	}

	// The submission is logged with its request id, never its payloads.
	logged := b.logs.FilterMessage("workflow submitted").All()
	if len(logged) != 1 {
		t.Fatalf("%d \"workflow submitted\" log entries, want 1", len(logged))
	}
	fields := logged[0].ContextMap()
	if fields["workflow_id"] != "nightly-1" || fields["request_id"] == "" {
		t.Errorf("log fields %v, want workflow_id and request_id", fields)
	}
	for _, e := range b.logs.All() {
		for k, v := range e.ContextMap() {
			if strings.Contains(e.Message+k+toString(v), payloadMarker) {
				t.Errorf("log entry %q has a payload in %s: %v", e.Message, k, v)
			}
		}
	}

	// The same id again: 409, and nothing more is enqueued.
	queued := b.workflowKeys(t)
	resp := b.send(t, req{Method: http.MethodPost, Path: "/api/workflows", Header: jsonHeader, Body: chainWithGroup})
	if msg := wantError(t, resp, http.StatusConflict, "conflict"); !strings.Contains(msg, `"nightly-1"`) {
		t.Errorf("409 message %q, want it to name the id", msg)
	}
	if diff := cmp.Diff(queued, b.workflowKeys(t)); diff != "" {
		t.Errorf("the refused duplicate changed the keys (-before +after):\n%s", diff)
	}
	if n, err := asynq.NewInspectorFromRedisClient(b.rdb).GetQueueInfo("default"); err != nil || n.Size != 1 {
		t.Errorf("queue default after the duplicate: %+v, %v; want the one task", n, err)
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestBadWorkflows checks that every refused workflow is a 4xx naming
// what is wrong (the step, for a step), and writes nothing: no workflow
// key, no asynq queue or task.
func TestBadWorkflows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		give        string
		giveType    string // Content-Type; default JSON
		wantStatus  int
		wantCode    string
		wantMessage []string
	}{
		{
			name: "unknown nested type",
			give: `{"workflow":{"chain":[{"type":"data:process","payload":{"key":"k","work":1}},
				{"group":[{"type":"data:process","payload":{"key":"a","work":1}},{"type":"report:nope","payload":{}}],
				 "callback":{"type":"cache:warm","payload":{"keys":["a"],"work":1}}}]}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{"step 1.m1", `"report:nope"`, "unknown task type"},
		},
		{
			name:       "bad payload",
			give:       `{"workflow":{"chain":[{"type":"data:process","payload":{"key":"k","work":1}},{"type":"data:process","payload":{"key":"k"}}]}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{"step 1 (data:process)", `"work"`},
		},
		{
			name:       "refused step option",
			give:       `{"workflow":{"chain":[{"type":"data:process","payload":{"key":"k","work":1},"queue":"bad queue!"}]}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{"step 0", "bad queue!"},
		},
		{
			name:       "unknown field in a step",
			give:       `{"workflow":{"group":[{"type":"data:process","payload":{"key":"k","work":1},"priority":3}]}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{"0.m0", `"priority"`},
		},
		{
			name:       "wrong JSON type in a step",
			give:       `{"workflow":{"chain":[{"type":"data:process","payload":{"key":"k","work":1}},{"type":5}]}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{"step 1", `field "type": want a string, got number`},
		},
		{
			name:       "not an object",
			give:       `[{"type":"data:process"}]`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{"want an object, got array"},
		},
		{
			name:       "unknown top-level field",
			give:       `{"workflow":{"chain":[{"type":"data:process","payload":{"key":"k","work":1}}]},"colour":"red"}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{`"colour"`},
		},
		{
			name:       "no workflow",
			give:       `{"name":"empty"}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{`"workflow"`},
		},
		{
			name:       "bad id",
			give:       `{"id":"a b","workflow":{"chain":[{"type":"data:process","payload":{"key":"k","work":1}}]}}`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_workflow",
			wantMessage: []string{`"a b"`},
		},
		{
			name:       "malformed JSON",
			give:       `{"workflow":{"chain":[`,
			wantStatus: http.StatusBadRequest, wantCode: "malformed_json",
			wantMessage: []string{"malformed JSON"},
		},
		{
			name:       "not JSON",
			give:       `workflow=chain`,
			giveType:   "application/x-www-form-urlencoded",
			wantStatus: http.StatusUnsupportedMediaType, wantCode: "unsupported_media_type",
			wantMessage: []string{"application/json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			h := jsonHeader
			if tt.giveType != "" {
				h = map[string]string{"Content-Type": tt.giveType}
			}
			resp := b.send(t, req{Method: http.MethodPost, Path: "/api/workflows", Header: h, Body: tt.give})
			msg := wantError(t, resp, tt.wantStatus, tt.wantCode)
			for _, want := range tt.wantMessage {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %s", msg, want)
				}
			}
			if strings.HasPrefix(msg, "workflow: ") {
				t.Errorf("message %q begins with the Go package's prefix", msg)
			}
			if keys := b.workflowKeys(t); len(keys) != 0 {
				t.Errorf("a refused workflow wrote %v", keys)
			}
		})
	}
}

// TestWorkflowNotFound checks the 404s of the routes of one workflow.
func TestWorkflowNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, q := range []req{
		{Path: "/api/workflows/no-such-workflow"},
		{Path: "/api/workflows/not%20an%20id"},
		{Method: http.MethodDelete, Path: "/api/workflows/no-such-workflow"},
	} {
		resp := b.send(t, q)
		if msg := wantError(t, resp, http.StatusNotFound, "not_found"); !strings.Contains(msg, "no workflow") {
			t.Errorf("%s %s: message %q, want it to say there is no such workflow", q.Method, q.Path, msg)
		}
	}
}

func TestCancelWorkflow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got := submitWorkflow(t, b.ts.URL, req{}, chainWithGroup)
	resp := b.send(t, req{Method: http.MethodDelete, Path: got.StatusURL})
	if resp.Status != http.StatusOK {
		t.Fatalf("DELETE %s: status %d: %s", got.StatusURL, resp.Status, resp.Body)
	}
	st := decode[workflowState](t, resp)
	if st.Status != "cancelled" || st.Error != "cancelled over HTTP" || st.Finished == nil {
		t.Errorf("DELETE answered %+v, want the cancelled state", st)
	}
	// The waiting first step is gone from its queue.
	_, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo("default", workflow.TaskID(got.ID, "0"))
	if !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("the first step's task after the cancel: %v, want it deleted", err)
	}
	st = getWorkflow(t, b.ts.URL, req{}, got.StatusURL)
	wantSteps := []string{"0 cancelled", "1.m0 waiting", "1.m1 waiting", "1.cb waiting"}
	if diff := cmp.Diff(wantSteps, st.pathsAndStatuses()); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if logged := b.logs.FilterMessage("workflow cancelled").FilterField(zap.String("workflow_id", got.ID)).Len(); logged != 1 {
		t.Errorf("%d \"workflow cancelled\" log entries for %s, want 1", logged, got.ID)
	}

	resp = b.send(t, req{Method: http.MethodDelete, Path: got.StatusURL})
	if msg := wantError(t, resp, http.StatusConflict, "already_finished"); !strings.Contains(msg, "cancelled") {
		t.Errorf("second DELETE: message %q, want it to say the workflow is cancelled", msg)
	}
}

func TestListWorkflows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, id := range []string{"wf-a", "wf-b", "wf-c"} {
		submitWorkflow(t, b.ts.URL, req{}, `{"id":"`+id+`","workflow":{"type":"data:process","payload":{"key":"k","work":1}}}`)
	}
	resp := b.send(t, req{Path: "/api/workflows?limit=2"})
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /api/workflows?limit=2: status %d: %s", resp.Status, resp.Body)
	}
	got := decode[struct {
		Workflows []workflowState `json:"workflows"`
	}](t, resp)
	var ids []string
	for _, w := range got.Workflows {
		ids = append(ids, w.ID+" "+w.Status+" "+w.StatusURL)
	}
	want := []string{"wf-c pending /api/workflows/wf-c", "wf-b pending /api/workflows/wf-b"}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("listed (-want +got):\n%s", diff)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=ten"} {
		resp := b.send(t, req{Path: "/api/workflows?" + q})
		if msg := wantError(t, resp, http.StatusBadRequest, "invalid_parameter"); !strings.Contains(msg, "limit") {
			t.Errorf("?%s: message %q, want it to name limit", q, msg)
		}
	}
}

func TestWorkflowStepPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	members := make([]string, 5)
	for i := range members {
		members[i] = `{"type":"data:process","payload":{"key":"k","work":1}}`
	}
	got := submitWorkflow(t, b.ts.URL, req{}, `{"workflow":{"group":[`+strings.Join(members, ",")+
		`],"callback":{"type":"cache:warm","payload":{"keys":["k"],"work":1}}}}`)
	if got.Total != 6 || got.Started != 5 {
		t.Errorf("submitted %+v, want 6 steps of which 5 started", got)
	}
	st := getWorkflow(t, b.ts.URL, req{}, got.StatusURL+"?offset=4&limit=2")
	if diff := cmp.Diff([]string{"0.m4 active", "0.cb waiting"}, st.pathsAndStatuses()); diff != "" {
		t.Errorf("steps 4-5 (-want +got):\n%s", diff)
	}
	if st.StepsTotal != 6 || st.Offset != 4 || st.Limit != 2 {
		t.Errorf("page: total %d offset %d limit %d, want 6 4 2", st.StepsTotal, st.Offset, st.Limit)
	}
	if st := getWorkflow(t, b.ts.URL, req{}, got.StatusURL+"?offset=6"); len(st.Steps) != 0 || st.Steps == nil {
		t.Errorf("past the last step: steps %v, want []", st.Steps)
	}
	for _, q := range []string{"offset=-1", "limit=0", "limit=1001", "offset=x"} {
		resp := b.send(t, req{Path: got.StatusURL + "?" + q})
		wantError(t, resp, http.StatusBadRequest, "invalid_parameter")
	}
}

// TestWorkflowRoutesNeedCredentials checks that with credentials (which
// New requires beyond loopback) every workflow route and page needs them,
// that refused requests write nothing, and that the state-changing ones
// refuse cross-origin browser requests even with a session.
func TestWorkflowRoutesNeedCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)
	basic := req{User: testUser, Pass: testPass}
	got := submitWorkflow(t, b.ts.URL, basic, chainWithGroup)
	cookie := b.login(t)

	routes := []struct {
		name       string
		give       req
		wantStatus int
	}{
		{"submit", req{Method: http.MethodPost, Path: "/api/workflows", Header: jsonHeader,
			Body: `{"workflow":{"type":"data:process","payload":{"key":"k","work":1}}}`}, http.StatusAccepted},
		{"list", req{Path: "/api/workflows"}, http.StatusOK},
		{"status", req{Path: got.StatusURL}, http.StatusOK},
		{"cancel", req{Method: http.MethodDelete, Path: "/api/workflows/" + got.ID}, http.StatusOK},
	}
	for _, tt := range routes {
		before := b.state(t)
		resp := b.send(t, tt.give)
		wantError(t, resp, http.StatusUnauthorized, "unauthorized")
		if diff := cmp.Diff(before, b.state(t)); diff != "" {
			t.Errorf("%s without credentials changed Redis (-before +after):\n%s", tt.name, diff)
		}
		withSession := tt.give
		withSession.Cookie = cookie
		if tt.give.Method != "" {
			// What a page of another site would send with the browser's
			// cookie: refused, nothing written.
			cross := withSession
			cross.Header = map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}
			wantError(t, b.send(t, cross), http.StatusForbidden, "cross_origin")
			if diff := cmp.Diff(before, b.state(t)); diff != "" {
				t.Errorf("%s cross-origin changed Redis (-before +after):\n%s", tt.name, diff)
			}
		}
		if resp := b.send(t, withSession); resp.Status != tt.wantStatus {
			t.Errorf("%s with a session: status %d, want %d: %s", tt.name, resp.Status, tt.wantStatus, resp.Body)
		}
	}

	// The pages send a browser to the login page, and come back.
	for _, path := range []string{"/workflows", "/workflows/" + got.ID} {
		resp := b.send(t, req{Path: path})
		if want := "/login?next=" + strings.ReplaceAll(path, "/", "%2F"); resp.Status != http.StatusSeeOther || resp.Header.Get("Location") != want {
			t.Errorf("GET %s without a session: %d to %q, want 303 to %q", path, resp.Status, resp.Header.Get("Location"), want)
		}
		if resp := b.send(t, req{Path: path, Cookie: cookie}); resp.Status != http.StatusOK {
			t.Errorf("GET %s with a session: status %d", path, resp.Status)
		}
	}
	other := submitWorkflow(t, b.ts.URL, basic, `{"workflow":{"type":"data:process","payload":{"key":"k","work":1}}}`)
	cancelPath := "/workflows/" + other.ID + "/cancel"
	before := b.state(t)
	wantError(t, b.send(t, req{Method: http.MethodPost, Path: cancelPath}), http.StatusUnauthorized, "unauthorized")
	wantError(t, b.send(t, req{Method: http.MethodPost, Path: cancelPath, Cookie: cookie,
		Header: map[string]string{"Sec-Fetch-Site": "cross-site"}}), http.StatusForbidden, "cross_origin")
	if diff := cmp.Diff(before, b.state(t)); diff != "" {
		t.Errorf("refused cancels changed Redis (-before +after):\n%s", diff)
	}
	resp := b.send(t, req{Method: http.MethodPost, Path: cancelPath, Cookie: cookie,
		Header: map[string]string{"Sec-Fetch-Site": "same-origin"}})
	if resp.Status != http.StatusSeeOther || resp.Header.Get("Location") != "/workflows/"+other.ID {
		t.Errorf("the page's cancel with a session: %d to %q, want 303 to its page", resp.Status, resp.Header.Get("Location"))
	}
	if st := getWorkflow(t, b.ts.URL, basic, other.StatusURL); st.Status != "cancelled" || st.Error != "cancelled over HTTP by "+testUser {
		t.Errorf("after the page's cancel: %s %q, want cancelled by %s", st.Status, st.Error, testUser)
	}
}

// TestWorkflowRoutesWhenRedisIsDown checks that the routes answer 503
// when Redis is down, a submission whose type is looked up in the task
// catalogue included (not a 400: the workflow may be fine).
func TestWorkflowRoutesWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	empty, err := tasks.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*web.Options){
		"registered types": func(*web.Options) {},
		"catalogue types":  func(o *web.Options) { o.Registry = empty },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// No retries: a refused connection is a 503 at once.
			mr := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
			t.Cleanup(func() { rdb.Close() })
			b := setupOn(t, mr, rdb, mod)
			mr.Close()
			for _, q := range []req{
				{Method: http.MethodPost, Path: "/api/workflows", Header: jsonHeader,
					Body: `{"workflow":{"type":"data:process","payload":{"key":"k","work":1}}}`},
				{Path: "/api/workflows"},
				{Path: "/api/workflows/some-id"},
				{Method: http.MethodDelete, Path: "/api/workflows/some-id"},
			} {
				resp := b.send(t, q)
				wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
			}
			resp := b.send(t, req{Path: "/workflows"})
			if resp.Status != http.StatusServiceUnavailable || !strings.Contains(string(resp.Body), "cannot be reached") {
				t.Errorf("GET /workflows: %d %s, want 503 saying Redis cannot be reached", resp.Status, resp.Body)
			}
		})
	}
}

// The task types of the end-to-end tests: wfe:add returns n plus the
// previous stage's result (0 for none); wfe:sum, a group's callback, adds
// its members' results.
type addN struct {
	N int `json:"n"`
}

var (
	wfAdd = tasks.Define("wfe:add", "Adds n to the previous result.",
		func(ctx context.Context, _ tasks.Deps, p addN) ([]byte, error) {
			prev, err := workflow.PreviousAs[int](ctx)
			if err != nil && !errors.Is(err, workflow.ErrNoPrevious) {
				return nil, err
			}
			return json.Marshal(prev + p.N)
		}, asynq.MaxRetry(0))
	wfSum = tasks.Define("wfe:sum", "Adds the results of its group's members.",
		func(ctx context.Context, _ tasks.Deps, _ struct{}) ([]byte, error) {
			prev, err := workflow.PreviousAs[[]int](ctx)
			if err != nil {
				return nil, err
			}
			sum := 0
			for _, n := range prev {
				sum += n
			}
			return json.Marshal(sum)
		}, asynq.MaxRetry(0))
)

// addThenGroup is a chain of wfe:add 1, then a group adding 10 and 20 to
// it whose callback sums them: 11 + 21 = 32.
const addThenGroup = `{"workflow":{"chain":[
	{"type":"wfe:add","payload":{"n":1}},
	{"group":[{"type":"wfe:add","payload":{"n":10}},{"type":"wfe:add","payload":{"n":20}}],
	 "callback":{"type":"wfe:sum","payload":{}},"policy":"all_succeeded"}]},"name":"add then group"}`

// startWorkflowWorker runs a worker serving wfe:add and wfe:sum on url
// ("": its embedded Redis); its web process is at Worker.URL.
func startWorkflowWorker(tb testing.TB, url string) *forgeqtest.Worker {
	tb.Helper()
	env := map[string]string{"WORKER_CONCURRENCY": "8"}
	if url != "" {
		env["REDIS_CONNECTION_URL"] = url
		env["REDIS_EMBEDDED"] = ""
	}
	return forgeqtest.StartWorker(tb, worker.New("wfweb").Register(wfAdd, wfSum), forgeqtest.WorkerOptions{Env: env})
}

// waitWorkflow reads GET statusURL of base until the workflow's status is
// final, and returns it.
func waitWorkflow(tb testing.TB, base, statusURL string) workflowState {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := getWorkflow(tb, base, req{}, statusURL)
		if workflow.Status(st.Status).Final() {
			return st
		}
		if time.Now().After(deadline) {
			tb.Fatalf("workflow %s is still %s: %+v", statusURL, st.Status, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWorkflowOverHTTP submits a workflow to a worker's web process and
// follows it over HTTP until it succeeds, on the worker's embedded Redis
// and on the test Redis.
func TestWorkflowOverHTTP(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"embedded", func(*testing.T) string { return "" }},
		{"redis", func(t *testing.T) string {
			realRedis(t, workflowDB) // flushed
			return redistest.URL(t, workflowDB)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := startWorkflowWorker(t, tt.url(t))
			base := strings.TrimSuffix(w.URL("/"), "/")
			got := submitWorkflow(t, base, req{}, addThenGroup)
			if got.Total != 4 || got.Started != 1 || got.Name != "add then group" {
				t.Errorf("submitted %+v, want 4 steps, 1 started", got)
			}
			st := waitWorkflow(t, base, got.StatusURL)
			if st.Status != "succeeded" || st.Done != 4 || st.Total != 4 || st.Failed != 0 || st.Percent != 100 || st.Finished == nil {
				t.Fatalf("final state %+v, want succeeded with 4 of 4 done", st)
			}
			want := []string{"0 succeeded", "1.m0 succeeded", "1.m1 succeeded", "1.cb succeeded"}
			if diff := cmp.Diff(want, st.pathsAndStatuses()); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			res, err := w.Services().Workflows.Result(context.Background(), got.ID, "1.cb")
			if err != nil || string(res) != "32" {
				t.Errorf("the callback's result: %s, %v; want 32", res, err)
			}
			resp := send(t, base, req{Method: http.MethodDelete, Path: got.StatusURL})
			wantError(t, resp, http.StatusConflict, "already_finished")

			list := decode[struct {
				Workflows []workflowState `json:"workflows"`
			}](t, send(t, base, req{Path: "/api/workflows"}))
			if !slices.ContainsFunc(list.Workflows, func(w workflowState) bool { return w.ID == got.ID && w.Status == "succeeded" }) {
				t.Errorf("GET /api/workflows = %+v, want %s succeeded", list.Workflows, got.ID)
			}
		})
	}
}
