package report

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// maxBody bounds the body of POST /reports.
const maxBody = 4 << 10

// The values of Report.Status.
const (
	StatusRunning  = "running"  // some days are not computed yet
	StatusComplete = "complete" // every day is
	// StatusPartial is a report published (POST /reports/publish) with
	// days that failed: its workflow has finished, and
	// Summary.FailedDays says which days are missing and why.
	StatusPartial = "partial"
)

// Report is the body of GET /reports/{id}: the plan and the days computed
// so far.
type Report struct {
	ReportID  string    `json:"report_id"`
	Account   string    `json:"account"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Status    string    `json:"status"`
	DaysDone  int       `json:"days_done"`
	DaysTotal int       `json:"days_total"`
	Days      []Day     `json:"days"` // the computed days, in date order
	Totals    Totals    `json:"totals"`
	ExpiresAt time.Time `json:"expires_at"`
	// Summary is what report:publish stored, for a report made by POST
	// /reports/publish once its workflow has run; nil before, and for a
	// report made by POST /reports.
	Summary *Summary `json:"summary,omitempty"`
}

// Totals add up a report's computed days.
type Totals struct {
	Orders       int   `json:"orders"`
	RevenueCents int64 `json:"revenue_cents"`
	Refunds      int   `json:"refunds"`
}

// CreateRequest is the body of POST /reports. ReportID is optional: a
// random one is made when it is empty.
type CreateRequest struct {
	ReportID string `json:"report_id"`
	Account  string `json:"account"`
	From     string `json:"from"`
	To       string `json:"to"`
}

// Created is the 202 body of POST /reports.
type Created struct {
	ReportID string `json:"report_id"`
	TaskID   string `json:"task_id"`
	Queue    string `json:"queue"`
	// ReportURL is the path of GET /reports/{id}.
	ReportURL string `json:"report_url"`
}

// errorBody is the body of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// GetReport is the route GET /reports/{id}, for worker.App.Handle: the
// report as far as it is computed (200), or 404 for a report that does not
// exist or expired. It reads the plan, then every day and the published
// summary at once (one pipeline of futures on the cache manager's async
// side).
func (s *Service) GetReport(sv worker.Services) http.Handler {
	return s.getReport(sv.Manager, sv.Logger)
}

func (s *Service) getReport(m *cachemgr.Manager, log *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		id := r.PathValue("id")
		if !idPattern.MatchString(id) {
			writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no report %q", id)})
			return
		}
		plan, err := cachemgr.GetJSONAsync[Plan](ctx, m, PlanKey(id)).Wait()
		switch {
		case errors.Is(err, cachemgr.ErrMiss) || err == nil && !plan.ExpiresAt.After(s.o.Now()):
			writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no report %q (never planned, or expired)", id)})
			return
		case err != nil:
			unavailable(w, log, err)
			return
		}
		futures := make([]*cachemgr.Future[Day], len(plan.Days))
		for i, date := range plan.Days {
			futures[i] = cachemgr.GetJSONAsync[Day](ctx, m, DayKey(plan.Bucket, id, date))
		}
		summary := cachemgr.GetJSONAsync[Summary](ctx, m, SummaryKey(plan.Bucket, id))
		rep := Report{
			ReportID: id, Account: plan.Account, From: plan.From, To: plan.To,
			DaysTotal: len(plan.Days), Days: []Day{}, ExpiresAt: plan.ExpiresAt,
		}
		for _, f := range futures {
			d, err := f.Wait()
			if errors.Is(err, cachemgr.ErrMiss) {
				continue // not computed yet
			}
			if err != nil {
				unavailable(w, log, err)
				return
			}
			rep.Days = append(rep.Days, d)
			rep.Totals.Orders += d.Orders
			rep.Totals.RevenueCents += d.RevenueCents
			rep.Totals.Refunds += d.Refunds
		}
		rep.DaysDone = len(rep.Days)
		rep.Status = StatusRunning
		if rep.DaysDone == rep.DaysTotal {
			rep.Status = StatusComplete
		}
		switch sum, err := summary.Wait(); {
		case errors.Is(err, cachemgr.ErrMiss): // not published (yet)
		case err != nil:
			unavailable(w, log, err)
			return
		default:
			rep.Summary = &sum
			if sum.DaysFailed > 0 {
				rep.Status = StatusPartial
			}
		}
		writeJSON(w, http.StatusOK, rep)
	})
}

// PostReport is the route POST /reports, for worker.App.Handle: it checks
// a CreateRequest as report:build will and enqueues the report:build task
// (202 with a Created), or answers 400 naming the bad field, 409 when the
// report id is taken, or 415 for a body not sent as application/json.
func (s *Service) PostReport(sv worker.Services) http.Handler {
	return s.postReport(sv.Enqueuer, sv.Manager, sv.Logger)
}

func (s *Service) postReport(enq tasks.Enqueuer, m *cachemgr.Manager, log *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		args, ok := s.readCreate(w, r, m, log)
		if !ok {
			return
		}
		info, err := s.Build.Enqueue(ctx, enq, args, asynq.TaskID("report-"+args.ReportID))
		switch {
		case errors.Is(err, asynq.ErrTaskIDConflict):
			writeJSON(w, http.StatusConflict, errorBody{fmt.Sprintf("report id %q is taken", args.ReportID)})
			return
		case err != nil:
			unavailable(w, log, err)
			return
		}
		url := "/reports/" + args.ReportID
		w.Header().Set("Location", url)
		writeJSON(w, http.StatusAccepted, Created{ReportID: args.ReportID, TaskID: info.ID, Queue: info.Queue, ReportURL: url})
	})
}

// readCreate reads the CreateRequest of a POST route and checks it as
// report:build and report:plan will, and that the report id is free. On
// failure it answers (400 naming the bad field, 409 for a taken id, 415
// for a body not sent as JSON, 503 when Redis fails) and returns false.
func (s *Service) readCreate(w http.ResponseWriter, r *http.Request, m *cachemgr.Manager, log *zap.Logger) (BuildArgs, bool) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, errorBody{"send the body as JSON, with Content-Type: application/json"})
		return BuildArgs{}, false
	}
	var req CreateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"body: " + err.Error()})
		return BuildArgs{}, false
	}
	if req.ReportID == "" {
		req.ReportID = newReportID()
	}
	args := BuildArgs(req)
	if err := args.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		return BuildArgs{}, false
	}
	if err := s.checkComputable(args); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		return BuildArgs{}, false
	}
	switch _, err := m.Get(r.Context(), PlanKey(args.ReportID)); {
	case err == nil:
		writeJSON(w, http.StatusConflict, errorBody{fmt.Sprintf("report id %q is taken", args.ReportID)})
		return BuildArgs{}, false
	case !errors.Is(err, cachemgr.ErrMiss):
		unavailable(w, log, err)
		return BuildArgs{}, false
	}
	return args, true
}

// newReportID returns a random report id, "r" and 12 hex digits.
func newReportID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails
	return "r" + hex.EncodeToString(b[:])
}

// unavailable answers 503 for a Redis failure, and logs it.
func unavailable(w http.ResponseWriter, log *zap.Logger, err error) {
	if log != nil {
		log.Warn("report route: redis unavailable", zap.Error(err))
	}
	writeJSON(w, http.StatusServiceUnavailable, errorBody{"the report store is unavailable; retry later"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away
}
