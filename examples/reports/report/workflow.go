package report

import (
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

// The paths of the report workflow's steps (see PostPublishReport), to
// read their results with workflow.Client.Result: the plan, the day of
// index i ("1.m<i>"), the summary and the publication.
const (
	PlanStep    = "0"
	SummaryStep = "1.cb"
	PublishStep = "2"
)

// PublishCreated is the 202 body of POST /reports/publish.
type PublishCreated struct {
	ReportID string `json:"report_id"`
	// WorkflowID is the report's workflow: its id is the report's.
	WorkflowID string `json:"workflow_id"`
	// Steps counts the workflow's task steps: the plan, one per day, the
	// summary and the publication.
	Steps int `json:"steps"`
	// StatusURL is the path of the workflow's state in the web API.
	StatusURL string `json:"status_url"`
	// ReportURL is the path of GET /reports/{id}.
	ReportURL string `json:"report_url"`
}

// PostPublishReport is the route POST /reports/publish, for
// worker.App.Handle: it checks a CreateRequest as POST /reports does and
// submits the report as a workflow whose id is the report's:
//
//	Chain(
//	    report:plan,
//	    Group(report:day, one per day).Then(report:summarize, workflow.Always),
//	    report:publish,
//	)
//
// The days run in parallel; once each has succeeded or failed for good,
// report:summarize adds them up and lists the failed days, and
// report:publish stores that summary beside the report, where GET
// /reports/{id} shows it. It answers 202 with a PublishCreated (Location:
// its StatusURL), or 400 naming the bad field, 409 when the report id is
// taken (by a report of either route), 415 for a body not sent as
// application/json, 503 when Redis fails; nothing is submitted then.
func (s *Service) PostPublishReport(sv worker.Services) http.Handler {
	return s.postPublishReport(sv.Workflows, sv.Manager, sv.Logger)
}

func (s *Service) postPublishReport(flows *workflow.Client, m *cachemgr.Manager, log *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		args, ok := s.readCreate(w, r, m, log)
		if !ok {
			return
		}
		days, _ := args.days() // readCreate checked them
		info, err := flows.Submit(r.Context(), s.reportWorkflow(args, days), workflow.SubmitOptions{
			ID:        args.ReportID,
			Name:      fmt.Sprintf("report %s of %s, %s to %s", args.ReportID, args.Account, args.From, args.To),
			Retention: s.o.Retention,
		})
		switch {
		case errors.Is(err, workflow.ErrExists):
			writeJSON(w, http.StatusConflict, errorBody{fmt.Sprintf("report id %q is taken", args.ReportID)})
			return
		case errors.Is(err, workflow.ErrInvalid):
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		case err != nil && info == nil:
			unavailable(w, log, err)
			return
		case err != nil:
			// Written but its first step not enqueued: a worker's
			// reconciler enqueues it.
			if log != nil {
				log.Warn("report route: workflow submitted, first step left to the reconciler",
					zap.String("workflow_id", info.ID), zap.Error(err))
			}
		}
		status := "/api/workflows/" + info.ID
		w.Header().Set("Location", status)
		writeJSON(w, http.StatusAccepted, PublishCreated{
			ReportID: args.ReportID, WorkflowID: info.ID, Steps: info.Total,
			StatusURL: status, ReportURL: "/reports/" + args.ReportID,
		})
	})
}

// reportWorkflow returns the workflow of the report a over days (a's, in
// date order: the summary reads member i as days[i]).
func (s *Service) reportWorkflow(a BuildArgs, days []string) workflow.Node {
	members := make([]workflow.Node, len(days))
	for i, date := range days {
		members[i] = workflow.Task(s.Day, DayArgs{ReportID: a.ReportID, Account: a.Account, Date: date})
	}
	return workflow.Chain(
		workflow.Task(s.Plan, a),
		workflow.Group(members...).Then(workflow.Task(s.Summarize, SummarizeArgs{ReportID: a.ReportID}), workflow.Always),
		workflow.Task(s.Publish, PublishArgs{ReportID: a.ReportID}),
	)
}
