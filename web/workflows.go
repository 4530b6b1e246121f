package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// Pages of the workflow routes: GET /api/workflows/{id} and the
// /workflows/{id} page list a workflow's steps DefaultStepPage at a time
// (?limit= up to MaxStepPage); GET /api/workflows lists
// DefaultWorkflowList workflows (?limit= up to MaxWorkflowList).
const (
	DefaultStepPage     = 100
	MaxStepPage         = 1000
	DefaultWorkflowList = 50
	MaxWorkflowList     = 1000
)

// workflowsPath is where the workflow API lives; a workflow's status is
// at workflowsPath/{id}.
const workflowsPath = "/api/workflows"

// workflowSubmitted is the 202 body of POST /api/workflows.
type workflowSubmitted struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	Total     int    `json:"total"`   // task steps, members and callbacks included
	Started   int    `json:"started"` // steps enqueued at once
	StatusURL string `json:"status_url"`
}

// workflowBody is a workflow's state in the answers of the workflow
// routes.
type workflowBody struct {
	ID               string          `json:"id"`
	Name             string          `json:"name,omitempty"`
	Status           workflow.Status `json:"status"` // pending, running, succeeded, failed, cancelled
	Total            int             `json:"total"`
	Done             int             `json:"done"`
	Failed           int             `json:"failed"`
	Percent          float64         `json:"percent"` // done of total
	FailedStep       string          `json:"failed_step,omitempty"`
	Error            string          `json:"error,omitempty"` // why it failed, or was cancelled
	Created          time.Time       `json:"created"`
	Started          *time.Time      `json:"started,omitempty"`
	Updated          time.Time       `json:"updated"`
	Finished         *time.Time      `json:"finished,omitempty"`
	RetentionSeconds int64           `json:"retention_seconds"` // how long it stays readable once final
	StatusURL        string          `json:"status_url"`
}

// workflowDetail is the body of GET /api/workflows/{id}: the state and a
// page of the steps.
type workflowDetail struct {
	workflowBody
	Steps      []workflow.Step `json:"steps"`
	StepsTotal int             `json:"steps_total"`
	Offset     int             `json:"offset"`
	Limit      int             `json:"limit"`
}

// bodyOf converts st.
func bodyOf(st *workflow.State) workflowBody {
	return workflowBody{
		ID:               st.ID,
		Name:             st.Name,
		Status:           st.Status,
		Total:            st.Total,
		Done:             st.Done,
		Failed:           st.Failed,
		Percent:          st.Percent(),
		FailedStep:       st.FailedStep,
		Error:            st.Error,
		Created:          st.Created.UTC(),
		Started:          timeOrNil(st.Started),
		Updated:          st.Updated.UTC(),
		Finished:         timeOrNil(st.Finished),
		RetentionSeconds: int64(st.Retention / time.Second),
		StatusURL:        workflowURL(st.ID),
	}
}

// workflowURL is the path of GET /api/workflows/{id}.
func workflowURL(id string) string { return workflowsPath + "/" + url.PathEscape(id) }

// submitWorkflow checks and submits a workflow in its JSON form
// (workflow.Parse). Nothing is written unless the answer is 202.
func (s *Server) submitWorkflow(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if !decodeJSON(w, r, &raw) {
		return
	}
	root, so, err := workflow.Parse(raw)
	if err != nil {
		fail(w, r, http.StatusBadRequest, codeInvalidWorkflow, refusal(err))
		return
	}
	// Bounded like an enqueue: on a Redis that does not answer, the
	// client gets its 503 after one socket timeout. A timeout once the
	// workflow is written leaves its first steps to a worker's reconciler.
	ctx, cancel := s.redisCtx(r.Context())
	info, err := s.o.Workflows.Submit(ctx, root, so)
	cancel()
	switch {
	case err == nil:
	case info != nil:
		// Written, so it runs: a worker's reconciler enqueues the first
		// steps this submission could not.
		s.log.Warn("workflow first steps not enqueued", zap.String("request_id", stateOf(r).id),
			zap.String("workflow_id", info.ID), zap.Error(err))
	case errors.Is(err, tasks.ErrInvalidCatalogEntry):
		s.log.Warn("task catalogue entry unusable", zap.String("request_id", stateOf(r).id), zap.Error(err))
		fail(w, r, http.StatusInternalServerError, codeInternal,
			refusal(err)+"; a worker publishing the type again replaces its entry")
		return
	case errors.Is(err, workflow.ErrInvalid):
		fail(w, r, http.StatusBadRequest, codeInvalidWorkflow, refusal(err))
		return
	case errors.Is(err, workflow.ErrExists):
		fail(w, r, http.StatusConflict, codeConflict, fmt.Sprintf("workflow id %q is taken", so.ID))
		return
	default:
		s.unavailable(w, r, "workflow store", err)
		return
	}
	body := workflowSubmitted{ID: info.ID, Name: info.Name, Total: info.Total, Started: info.Started, StatusURL: workflowURL(info.ID)}
	w.Header().Set("Location", body.StatusURL)
	s.log.Info("workflow submitted", zap.String("request_id", stateOf(r).id),
		zap.String("workflow_id", info.ID), zap.Int("steps", info.Total), zap.Int("started", info.Started))
	writeJSON(w, http.StatusAccepted, body)
}

// refusal is the client's message for err, a refusal of workflow.Parse
// or Submit: the *workflow.StepError's text names the step ("step 1.m0
// (data:process): invalid payload: ..."), without the package prefixes.
func refusal(err error) string {
	msg := err.Error()
	for _, p := range []string{workflow.ErrInvalid.Error() + ": ", "workflow: ", "tasks: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// workflowStatus answers a workflow's state and a page of its steps
// (?offset=, ?limit=); 404 when it does not exist or its retention ran
// out.
func (s *Server) workflowStatus(w http.ResponseWriter, r *http.Request) {
	offset, limit, ok := stepPage(w, r)
	if !ok {
		return
	}
	d, err := s.readWorkflow(r.Context(), r.PathValue("id"), offset, limit)
	if err != nil {
		s.workflowFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// readWorkflow reads workflow id and the page of its steps from offset.
// Errors: workflow.ErrNotFound, or Redis's.
func (s *Server) readWorkflow(ctx context.Context, id string, offset, limit int) (workflowDetail, error) {
	ctx, cancel := s.redisCtx(ctx)
	defer cancel()
	st, err := s.o.Workflows.Get(ctx, id)
	if err != nil {
		return workflowDetail{}, err
	}
	steps, total, err := s.o.Workflows.Steps(ctx, id, offset, limit)
	if err != nil {
		return workflowDetail{}, err
	}
	if steps == nil {
		steps = []workflow.Step{}
	}
	return workflowDetail{workflowBody: bodyOf(st), Steps: steps, StepsTotal: total, Offset: offset, Limit: limit}, nil
}

// workflowFailed answers err, from reading or cancelling workflow id:
// 404 for workflow.ErrNotFound, else 503.
func (s *Server) workflowFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, workflow.ErrNotFound) {
		fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("no workflow %q (it never existed, or its retention ran out)", r.PathValue("id")))
		return
	}
	s.unavailable(w, r, "workflow store", err)
}

// listWorkflows answers the most recently created workflows (?limit=).
func (s *Server) listWorkflows(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r.URL.Query(), "limit", DefaultWorkflowList, 1, MaxWorkflowList)
	if err != nil {
		fail(w, r, http.StatusBadRequest, codeInvalidParameter, err.Error())
		return
	}
	list, err := s.recentWorkflows(r.Context(), limit)
	if err != nil {
		s.unavailable(w, r, "workflow store", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Workflows []workflowBody `json:"workflows"`
	}{list})
}

// recentWorkflows reads up to limit workflows, the newest first.
func (s *Server) recentWorkflows(ctx context.Context, limit int) ([]workflowBody, error) {
	ctx, cancel := s.redisCtx(ctx)
	defer cancel()
	states, err := s.o.Workflows.List(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]workflowBody, len(states))
	for i, st := range states {
		out[i] = bodyOf(st)
	}
	return out, nil
}

// cancelWorkflow cancels a workflow: 200 with its state; 404 when it does
// not exist, 409 already_finished when it has finished.
func (s *Server) cancelWorkflow(w http.ResponseWriter, r *http.Request) {
	st, err := s.cancel(r)
	var finished *finishedError
	switch {
	case errors.As(err, &finished):
		fail(w, r, http.StatusConflict, codeAlreadyFinished, finished.Error())
	case err != nil:
		s.workflowFailed(w, r, err)
	default:
		writeJSON(w, http.StatusOK, bodyOf(st))
	}
}

// finishedError refuses to cancel a workflow that has finished; it wraps
// workflow.ErrFinished.
type finishedError struct {
	id     string
	status workflow.Status // "" when unknown
}

func (e *finishedError) Error() string {
	if e.status == "" {
		return fmt.Sprintf("workflow %q has already finished", e.id)
	}
	return fmt.Sprintf("workflow %q has already finished: it %s", e.id, e.status)
}

func (e *finishedError) Unwrap() error { return workflow.ErrFinished }

// cancel cancels the workflow of r's {id} and logs it. Errors:
// workflow.ErrNotFound, a *finishedError, or Redis's.
func (s *Server) cancel(r *http.Request) (*workflow.State, error) {
	id := r.PathValue("id")
	reason := "cancelled over HTTP"
	if user := stateOf(r).user; user != "" {
		reason += " by " + user
	}
	// Not bounded by the socket timeout as a read is: Cancel removes each
	// waiting step's task from its queue through asynq's inspector, which
	// takes no ctx, and the cancellation is done once its script has run.
	ctx := r.Context()
	st, err := s.o.Workflows.Cancel(ctx, id, reason)
	switch {
	case err == nil:
	case st != nil:
		// Cancelled; a step's task could not be removed from its queue,
		// and will be skipped when it runs.
		s.log.Warn("workflow cancelled; steps left in their queues", zap.String("request_id", stateOf(r).id),
			zap.String("workflow_id", id), zap.Error(err))
	case errors.Is(err, workflow.ErrFinished):
		fe := &finishedError{id: id}
		if st, gerr := s.o.Workflows.Get(ctx, id); gerr == nil {
			fe.status = st.Status
		}
		return nil, fe
	default:
		return nil, err
	}
	s.log.Info("workflow cancelled", zap.String("request_id", stateOf(r).id), zap.String("workflow_id", id))
	return st, nil
}

// stepPage reads ?offset= and ?limit= of a page of steps, answering the
// request itself (400) when one is bad.
func stepPage(w http.ResponseWriter, r *http.Request) (offset, limit int, ok bool) {
	q := r.URL.Query()
	offset, err := queryInt(q, "offset", 0, 0, workflow.MaxTasks)
	if err == nil {
		limit, err = queryInt(q, "limit", DefaultStepPage, 1, MaxStepPage)
	}
	if err != nil {
		fail(w, r, http.StatusBadRequest, codeInvalidParameter, err.Error())
		return 0, 0, false
	}
	return offset, limit, true
}

// queryInt returns the integer query parameter name of q, def when it is
// absent; the error names the parameter, the value given and the range.
func queryInt(q url.Values, name string, def, least, most int) (int, error) {
	if !q.Has(name) {
		return def, nil
	}
	v := q.Get(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < least || n > most {
		return 0, fmt.Errorf("%s %q: not an integer in [%d, %d]", name, v, least, most)
	}
	return n, nil
}
