package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// dateLayout is the form of every date: a day, in UTC.
const dateLayout = time.DateOnly

// MaxDays is the longest report, in days.
const MaxDays = 92

var (
	idPattern      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	accountPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
)

// BuildArgs is the payload of a report:build task.
type BuildArgs struct {
	ReportID string `json:"report_id" help:"the report's id: 1 to 64 of A-Z a-z 0-9 _ -"`
	Account  string `json:"account" help:"the account: one the service knows"`
	From     string `json:"from" help:"first day, YYYY-MM-DD (UTC)"`
	To       string `json:"to" help:"last day, YYYY-MM-DD (UTC), over already; at most 92 days after from"`
}

// Validate checks the form of a's fields; the errors name the field. That
// the account is known and the days are over is checked by the handler.
func (a BuildArgs) Validate() error {
	if err := checkReportID(a.ReportID); err != nil {
		return err
	}
	if err := checkAccount(a.Account); err != nil {
		return err
	}
	_, err := a.days()
	return err
}

// days returns the dates from a.From to a.To.
func (a BuildArgs) days() ([]string, error) {
	from, err := parseDate("from", a.From)
	if err != nil {
		return nil, err
	}
	to, err := parseDate("to", a.To)
	if err != nil {
		return nil, err
	}
	if to.Before(from) {
		return nil, fmt.Errorf("field %q: %s is before from (%s)", "to", a.To, a.From)
	}
	n := int(to.Sub(from)/(24*time.Hour)) + 1
	if n > MaxDays {
		return nil, fmt.Errorf("field %q: %d days from %s, over the %d-day limit", "to", n, a.From, MaxDays)
	}
	days := make([]string, n)
	for i := range days {
		days[i] = from.AddDate(0, 0, i).Format(dateLayout)
	}
	return days, nil
}

func checkReportID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("field %q: %q is not 1 to 64 of A-Z a-z 0-9 _ -", "report_id", id)
	}
	return nil
}

func checkAccount(a string) error {
	if !accountPattern.MatchString(a) {
		return fmt.Errorf("field %q: %q is not 1 to 32 of a-z 0-9 - starting with a letter or digit", "account", a)
	}
	return nil
}

func parseDate(field, s string) (time.Time, error) {
	t, err := time.Parse(dateLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %q is not a date YYYY-MM-DD", field, s)
	}
	return t, nil
}

// Plan is a report as report:build planned it, stored under PlanKey.
type Plan struct {
	ReportID  string    `json:"report_id"`
	Account   string    `json:"account"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Days      []string  `json:"days"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at"`
	// Bucket groups the days of the reports expiring in the same hour
	// (DayKey).
	Bucket string `json:"bucket"`
}

// BuildResult is the result of a report:build task.
type BuildResult struct {
	ReportID  string    `json:"report_id"`
	Days      int       `json:"days"`
	ExpiresAt time.Time `json:"expires_at"`
}

// checkComputable returns why a report of a cannot be made, as an error
// naming the field, or nil: the account must be known and the last day
// over.
func (s *Service) checkComputable(a BuildArgs) error {
	if !s.knownAccount(a.Account) {
		return fmt.Errorf("field %q: unknown account %q", "account", a.Account)
	}
	if err := s.checkOver("to", a.To); err != nil {
		return err
	}
	return nil
}

// checkOver refuses a date whose day is not over yet.
func (s *Service) checkOver(field, date string) error {
	d, err := parseDate(field, date)
	if err != nil {
		return err
	}
	if now := s.o.Now(); d.Add(24 * time.Hour).After(now) {
		return fmt.Errorf("field %q: %s is not over yet (now %s)", field, date, now.UTC().Format(time.RFC3339))
	}
	return nil
}

// build is the handler of report:build: it stores the plan, then enqueues
// the days. A retry finds its own plan and enqueues the days again; each
// day's task id is the report's id and the date, so a day already queued
// is not queued twice.
func (s *Service) build(ctx context.Context, deps tasks.Deps, a BuildArgs) ([]byte, error) {
	if err := s.checkComputable(a); err != nil {
		return nil, fmt.Errorf("report %s: %w: %w", a.ReportID, err, asynq.SkipRetry)
	}
	days, _ := a.days() // Validate checked them
	plan, err := s.storePlan(ctx, deps.Cache, a, days)
	if err != nil {
		return nil, err
	}
	for i, date := range days {
		_, err := s.Day.Enqueue(ctx, deps.Enqueuer, DayArgs{ReportID: a.ReportID, Account: a.Account, Date: date},
			asynq.TaskID(dayTaskID(a.ReportID, date)))
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return nil, fmt.Errorf("report %s: enqueue %s: %w", a.ReportID, date, err)
		}
		deps.ReportBestEffort(ctx, float64(100*(i+1))/float64(len(days)), fmt.Sprintf("%d of %d days enqueued", i+1, len(days)))
	}
	if deps.Logger != nil {
		deps.Logger.Info("report planned", zap.String("report_id", a.ReportID), zap.String("account", a.Account),
			zap.Int("days", len(days)), zap.Time("expires_at", plan.ExpiresAt))
	}
	return json.Marshal(BuildResult{ReportID: a.ReportID, Days: len(days), ExpiresAt: plan.ExpiresAt})
}

// plan is the handler of report:plan, the first step of the report
// workflow: report:build without the fan-out, since the workflow's group
// runs the days. A retry finds its own plan.
func (s *Service) plan(ctx context.Context, deps tasks.Deps, a BuildArgs) ([]byte, error) {
	if err := s.checkComputable(a); err != nil {
		return nil, fmt.Errorf("report %s: %w: %w", a.ReportID, err, asynq.SkipRetry)
	}
	days, _ := a.days() // Validate checked them
	plan, err := s.storePlan(ctx, deps.Cache, a, days)
	if err != nil {
		return nil, err
	}
	return json.Marshal(BuildResult{ReportID: a.ReportID, Days: len(days), ExpiresAt: plan.ExpiresAt})
}

// storePlan stores the plan of a, or returns the one a retry of the same
// task stored. Another report with a's id fails for good.
func (s *Service) storePlan(ctx context.Context, cache tasks.Cache, a BuildArgs, days []string) (Plan, error) {
	var plan Plan
	switch raw, err := cache.Get(ctx, PlanKey(a.ReportID)); {
	case err == nil:
		if err := json.Unmarshal([]byte(raw), &plan); err != nil {
			return plan, fmt.Errorf("report %s: plan: %w", a.ReportID, err)
		}
		if plan.Account != a.Account || plan.From != a.From || plan.To != a.To {
			return plan, fmt.Errorf("report %s: field %q: the id is taken by a report of %s from %s to %s: %w",
				a.ReportID, "report_id", plan.Account, plan.From, plan.To, asynq.SkipRetry)
		}
		return plan, nil
	case !errors.Is(err, cachemgr.ErrMiss):
		return plan, fmt.Errorf("report %s: read plan: %w", a.ReportID, err)
	}
	now := s.o.Now().UTC()
	plan = Plan{
		ReportID:  a.ReportID,
		Account:   a.Account,
		From:      a.From,
		To:        a.To,
		Days:      days,
		Created:   now,
		ExpiresAt: now.Add(s.o.Retention),
		Bucket:    bucketOf(now.Add(s.o.Retention)),
	}
	b, err := json.Marshal(plan)
	if err != nil {
		return plan, fmt.Errorf("report %s: plan: %w", a.ReportID, err)
	}
	if err := cache.Set(ctx, PlanKey(a.ReportID), b, s.o.Retention+grace); err != nil {
		return plan, fmt.Errorf("report %s: store plan: %w", a.ReportID, err)
	}
	return plan, nil
}

// dayTaskID is the task id of a report's day.
func dayTaskID(reportID, date string) string { return "report-" + reportID + "-" + date }
