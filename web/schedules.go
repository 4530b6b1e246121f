package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/schedule"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// schedulesPath is the root of the routes of the entries stored in Redis
// (package schedule).
const schedulesPath = "/api/schedules"

// codeInvalidSchedule refuses a schedule entry: its name, spec, type,
// payload or queue (the message says which).
const codeInvalidSchedule = "invalid_schedule"

// handleSchedules registers the schedule routes on mux, each behind api
// (the rate limit, then authentication when credentials are configured).
func (s *Server) handleSchedules(mux *http.ServeMux) {
	mux.Handle("GET "+schedulesPath, s.api(http.HandlerFunc(s.listSchedules)))
	mux.Handle("GET "+schedulesPath+"/{name}", s.api(http.HandlerFunc(s.getSchedule)))
	mux.Handle("PUT "+schedulesPath+"/{name}", s.api(http.HandlerFunc(s.putSchedule)))
	mux.Handle("DELETE "+schedulesPath+"/{name}", s.api(http.HandlerFunc(s.removeSchedule)))
	mux.Handle("POST "+schedulesPath+"/{name}/pause", s.api(http.HandlerFunc(s.pauseSchedule)))
	mux.Handle("POST "+schedulesPath+"/{name}/resume", s.api(http.HandlerFunc(s.resumeSchedule)))
}

// schedules returns the store of the entries, checking them against the
// server's types and the task catalogue.
func (s *Server) schedules() *schedule.Store {
	return schedule.NewStore(s.m.Client(), workflow.CatalogTypes(s.reg, s.o.Catalog))
}

// scheduleURL is the route of the entry named name.
func scheduleURL(name string) string { return schedulesPath + "/" + url.PathEscape(name) }

// listSchedules answers every stored entry with its next and previous
// tick: 200 {"schedules": [...]}.
func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.redisCtx(r.Context())
	defer cancel()
	list, err := s.schedules().List(ctx)
	if err != nil {
		s.unavailable(w, r, "schedule store", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Schedules []schedule.Info `json:"schedules"`
	}{list})
}

// getSchedule answers one entry with its ticks; 404 when there is none.
func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.redisCtx(r.Context())
	defer cancel()
	name := r.PathValue("name")
	list, err := s.schedules().List(ctx)
	if err != nil {
		s.unavailable(w, r, "schedule store", err)
		return
	}
	for _, in := range list {
		if in.Name == name {
			writeJSON(w, http.StatusOK, in)
			return
		}
	}
	s.scheduleFailed(w, r, fmt.Errorf("%w: %q", schedule.ErrNotFound, name))
}

// scheduleBody is the body of PUT /api/schedules/{name}.
type scheduleBody struct {
	Spec    string          `json:"spec"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	Queue   string          `json:"queue"`
	Paused  bool            `json:"paused"`
}

// putSchedule adds or replaces an entry: 201 when new, 200 when it
// replaced one, with the entry; 400 invalid_schedule, nothing written.
func (s *Server) putSchedule(w http.ResponseWriter, r *http.Request) {
	var b scheduleBody
	if !decodeJSON(w, r, &b) {
		return
	}
	ctx, cancel := s.redisCtx(r.Context())
	defer cancel()
	name := r.PathValue("name")
	e, created, err := s.schedules().Put(ctx, schedule.Entry{
		Name: name, Spec: b.Spec, Type: b.Type, Payload: b.Payload, Queue: b.Queue, Paused: b.Paused,
	})
	switch {
	case errors.Is(err, tasks.ErrInvalidCatalogEntry):
		s.log.Warn("task catalogue entry unusable", zap.String("request_id", stateOf(r).id), zap.Error(err))
		fail(w, r, http.StatusInternalServerError, codeInternal, scheduleRefusal(err)+"; a worker publishing the type again replaces its entry")
		return
	case err != nil:
		s.scheduleFailed(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", scheduleURL(e.Name))
	}
	s.log.Info("schedule entry put", zap.String("request_id", stateOf(r).id), zap.String("schedule", e.Name),
		zap.String("spec", e.Spec), zap.String("task_type", e.Type), zap.Bool("paused", e.Paused), zap.Bool("created", created))
	writeJSON(w, status, e)
}

// removeSchedule deletes an entry: 204; 404 when there is none.
func (s *Server) removeSchedule(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.redisCtx(r.Context())
	defer cancel()
	name := r.PathValue("name")
	if err := s.schedules().Remove(ctx, name); err != nil {
		s.scheduleFailed(w, r, err)
		return
	}
	s.log.Info("schedule entry removed", zap.String("request_id", stateOf(r).id), zap.String("schedule", name))
	w.WriteHeader(http.StatusNoContent)
}

// pauseSchedule pauses an entry: 200 with it; 404 when there is none.
func (s *Server) pauseSchedule(w http.ResponseWriter, r *http.Request) { s.setPaused(w, r, true) }

// resumeSchedule resumes an entry: 200 with it; 404 when there is none.
func (s *Server) resumeSchedule(w http.ResponseWriter, r *http.Request) { s.setPaused(w, r, false) }

func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	ctx, cancel := s.redisCtx(r.Context())
	defer cancel()
	name := r.PathValue("name")
	st := s.schedules()
	op, e, err := "resumed", schedule.Entry{}, error(nil)
	if paused {
		op = "paused"
		e, err = st.Pause(ctx, name)
	} else {
		e, err = st.Resume(ctx, name)
	}
	if err != nil {
		s.scheduleFailed(w, r, err)
		return
	}
	s.log.Info("schedule entry "+op, zap.String("request_id", stateOf(r).id), zap.String("schedule", name))
	writeJSON(w, http.StatusOK, e)
}

// scheduleFailed answers err: 400 for a refused entry, 404 for an
// unknown name, else 503.
func (s *Server) scheduleFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, schedule.ErrInvalid):
		fail(w, r, http.StatusBadRequest, codeInvalidSchedule, scheduleRefusal(err))
	case errors.Is(err, schedule.ErrNotFound):
		fail(w, r, http.StatusNotFound, codeNotFound, fmt.Sprintf("no schedule entry %q in Redis", r.PathValue("name")))
	default:
		s.unavailable(w, r, "schedule store", err)
	}
}

// scheduleRefusal is the client's message for a refused entry, without
// the package prefixes.
func scheduleRefusal(err error) string {
	msg := err.Error()
	for _, p := range []string{schedule.ErrInvalid.Error() + ": ", "tasks: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}
