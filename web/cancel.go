package web

import (
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/control"
)

// cancelledBody is the answer of DELETE /api/tasks/{queue}/{id}: what
// control.Cancel did, and where to read the task.
type cancelledBody struct {
	control.Result
	StatusURL string `json:"status_url"`
}

// cancelTask cancels task {id} of queue {queue} (control.Cancel) on behalf
// of the request's user ("an HTTP request" without credentials): 200 with
// the task's final state ("cancelled": removed before it ran; "archived":
// stopped while it ran), 202 when it was running and its handler had not
// returned by the end of the wait (its worker archives it as cancelled
// after its grace period), 404 for an unknown task, 409 already_finished
// for a completed, archived or already cancelled one.
func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	queue, id := r.PathValue("queue"), r.PathValue("id")
	for _, v := range [...]struct{ field, value string }{{"queue", queue}, {"id", id}} {
		if err := checkRef(v.field, v.value); err != nil {
			fail(w, r, http.StatusBadRequest, codeInvalidTaskRef, err.Error())
			return
		}
	}
	by := stateOf(r).user
	if by == "" {
		by = "an HTTP request"
	}
	// Not bounded by the socket timeout: a running task is waited for,
	// up to control.Wait, and the request's ctx ends the wait sooner.
	res, err := control.Cancel(r.Context(), s.m.Client(), queue, id, by)
	switch {
	case errors.Is(err, control.ErrNotFound):
		fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("no task %q in queue %q", id, queue))
		return
	case errors.Is(err, control.ErrFinished):
		msg := fmt.Sprintf("task %q in queue %q has already finished: it is %s", id, queue, res.State)
		if res.Reason != "" {
			msg += " (" + res.Reason + ")"
		}
		fail(w, r, http.StatusConflict, codeAlreadyFinished, msg)
		return
	case err != nil:
		s.unavailable(w, r, "task queue", err)
		return
	}
	s.log.Info("task cancelled", zap.String("request_id", stateOf(r).id), zap.String("task_id", id),
		zap.String("queue", queue), zap.String("was", res.Was), zap.String("state", res.State),
		zap.String("cancelled_by", res.By))
	status := http.StatusOK
	if res.State == "active" {
		status = http.StatusAccepted
	}
	writeJSON(w, status, cancelledBody{Result: res,
		StatusURL: statusURL(queue, id)})
}
