package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// SummarizeArgs is the payload of a report:summarize task.
type SummarizeArgs struct {
	ReportID string `json:"report_id" help:"the report whose days the group computed; report:plan planned it"`
}

// Validate checks the form of ReportID; the error names the field.
func (a SummarizeArgs) Validate() error { return checkReportID(a.ReportID) }

// PublishArgs is the payload of a report:publish task.
type PublishArgs struct {
	ReportID string `json:"report_id" help:"the report whose summary the step before returned"`
}

// Validate checks the form of ReportID; the error names the field.
func (a PublishArgs) Validate() error { return checkReportID(a.ReportID) }

// Summary is the result of report:summarize: how a report's days went,
// and the totals of those computed. report:publish stores it under
// SummaryKey, and GET /reports/{id} shows it.
type Summary struct {
	ReportID      string `json:"report_id"`
	Account       string `json:"account"`
	From          string `json:"from"`
	To            string `json:"to"`
	DaysTotal     int    `json:"days_total"`
	DaysSucceeded int    `json:"days_succeeded"`
	DaysFailed    int    `json:"days_failed"`
	// FailedDays lists every day that failed, in date order (a report has
	// at most MaxDays days, under workflow.MaxListedFailures).
	FailedDays []FailedDay `json:"failed_days"`
	// Totals add up the days computed.
	Totals Totals `json:"totals"`
}

// FailedDay is a day of a report whose report:day step failed.
type FailedDay struct {
	Date string `json:"date"`
	// Step is the workflow step that failed ("1.m3": the fourth day).
	Step  string `json:"step"`
	Error string `json:"error"`
}

// Published is the result of report:publish, the report workflow's
// result.
type Published struct {
	ReportID string `json:"report_id"`
	// Status is StatusComplete, or StatusPartial when days failed.
	Status     string `json:"status"`
	DaysFailed int    `json:"days_failed"`
	// ReportURL is the path of GET /reports/{id}, which shows the
	// summary.
	ReportURL string `json:"report_url"`
}

// summarize is the handler of report:summarize, the callback of the report
// workflow's group. The group has one report:day member per day of the
// plan, in date order, and its policy is workflow.Always: the callback
// runs once every day has succeeded or failed for good, adds up the days
// computed and lists the failed ones.
func (s *Service) summarize(ctx context.Context, deps tasks.Deps, a SummarizeArgs) ([]byte, error) {
	g, err := workflow.Results(ctx)
	if errors.Is(err, workflow.ErrNotInWorkflow) || errors.Is(err, workflow.ErrNoPrevious) {
		return nil, fmt.Errorf("report %s: summarize: %w (it is the callback of a report workflow's group of days): %w", a.ReportID, err, asynq.SkipRetry)
	}
	if err != nil {
		return nil, fmt.Errorf("report %s: summarize: %w", a.ReportID, err)
	}
	plan, err := readPlan(ctx, deps.Cache, a.ReportID)
	if errors.Is(err, cachemgr.ErrMiss) {
		return nil, fmt.Errorf("report %s: summarize: no such report (never planned, or expired): %w", a.ReportID, asynq.SkipRetry)
	}
	if err != nil {
		return nil, fmt.Errorf("report %s: summarize: %w", a.ReportID, err)
	}
	if g.Total != len(plan.Days) {
		return nil, fmt.Errorf("report %s: summarize: the group has %d members for the report's %d days: %w",
			a.ReportID, g.Total, len(plan.Days), asynq.SkipRetry)
	}

	sum := Summary{
		ReportID: a.ReportID, Account: plan.Account, From: plan.From, To: plan.To,
		DaysTotal: g.Total, DaysSucceeded: g.Succeeded, DaysFailed: g.Failed, FailedDays: []FailedDay{},
	}
	for _, f := range g.Failures {
		sum.FailedDays = append(sum.FailedDays, FailedDay{Date: plan.Days[f.Member], Step: f.Step, Error: f.Error})
	}
	err = g.Each(ctx, func(member int, result []byte, failure string) error {
		if failure != "" {
			return nil
		}
		var d Day
		if err := json.Unmarshal(result, &d); err != nil {
			return fmt.Errorf("day %s: %w", plan.Days[member], err)
		}
		sum.Totals.Orders += d.Orders
		sum.Totals.RevenueCents += d.RevenueCents
		sum.Totals.Refunds += d.Refunds
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("report %s: summarize: %w", a.ReportID, err)
	}
	return json.Marshal(sum)
}

// publish is the handler of report:publish, the report workflow's last
// step: it reads the summary report:summarize returned (the stage before
// it), stores it beside the report's days for as long as they are kept,
// and logs that the report is out.
func (s *Service) publish(ctx context.Context, deps tasks.Deps, a PublishArgs) ([]byte, error) {
	sum, err := workflow.PreviousAs[Summary](ctx)
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, workflow.ErrNotInWorkflow) || errors.Is(err, workflow.ErrNoPrevious):
		return nil, fmt.Errorf("report %s: publish: %w (it follows report:summarize in a report workflow): %w", a.ReportID, err, asynq.SkipRetry)
	case errors.As(err, &syntaxErr) || errors.As(err, &typeErr):
		return nil, fmt.Errorf("report %s: publish: the previous result is not a summary: %w: %w", a.ReportID, err, asynq.SkipRetry)
	case err != nil:
		return nil, fmt.Errorf("report %s: publish: %w", a.ReportID, err)
	}
	if sum.ReportID != a.ReportID {
		return nil, fmt.Errorf("report %s: publish: the previous result is the summary of report %q: %w", a.ReportID, sum.ReportID, asynq.SkipRetry)
	}
	plan, err := readPlan(ctx, deps.Cache, a.ReportID)
	if errors.Is(err, cachemgr.ErrMiss) {
		return nil, fmt.Errorf("report %s: publish: no such report (never planned, or expired): %w", a.ReportID, asynq.SkipRetry)
	}
	if err != nil {
		return nil, fmt.Errorf("report %s: publish: %w", a.ReportID, err)
	}
	ttl := plan.ExpiresAt.Sub(s.o.Now()) + grace
	if ttl <= 0 {
		return nil, fmt.Errorf("report %s: publish: the report expired at %s: %w", a.ReportID, plan.ExpiresAt.Format(time.RFC3339), asynq.SkipRetry)
	}
	b, err := json.Marshal(sum)
	if err != nil {
		return nil, fmt.Errorf("report %s: publish: %w", a.ReportID, err)
	}
	if err := deps.Cache.Set(ctx, SummaryKey(plan.Bucket, a.ReportID), b, ttl); err != nil {
		return nil, fmt.Errorf("report %s: publish: store summary: %w", a.ReportID, err)
	}
	res := Published{ReportID: a.ReportID, Status: StatusComplete, DaysFailed: sum.DaysFailed, ReportURL: "/reports/" + a.ReportID}
	if sum.DaysFailed > 0 {
		res.Status = StatusPartial
	}
	if deps.Logger != nil {
		deps.Logger.Info("report published", zap.String("report_id", a.ReportID), zap.String("account", sum.Account),
			zap.String("status", res.Status), zap.Int("days", sum.DaysTotal), zap.Int("days_failed", sum.DaysFailed))
	}
	return json.Marshal(res)
}
