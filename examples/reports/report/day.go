package report

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// DayArgs is the payload of a report:day task.
type DayArgs struct {
	ReportID string `json:"report_id" help:"the report the day belongs to; report:build or report:plan planned it"`
	Account  string `json:"account" help:"the report's account"`
	Date     string `json:"date" help:"the day, YYYY-MM-DD (UTC), one of the report's"`
}

// Validate checks the form of a's fields; the errors name the field.
func (a DayArgs) Validate() error {
	if err := checkReportID(a.ReportID); err != nil {
		return err
	}
	if err := checkAccount(a.Account); err != nil {
		return err
	}
	_, err := parseDate("date", a.Date)
	return err
}

// Day is one day's figures, the result of a report:day task and what it
// stores under DayKey.
type Day struct {
	Date         string `json:"date"`
	Orders       int    `json:"orders"`
	RevenueCents int64  `json:"revenue_cents"`
	Refunds      int    `json:"refunds"`
}

// progressSteps is how many progress reports a day's computation makes
// before the final one.
const progressSteps = 4

// day is the handler of report:day.
func (s *Service) day(ctx context.Context, deps tasks.Deps, a DayArgs) ([]byte, error) {
	if !s.knownAccount(a.Account) {
		return nil, fmt.Errorf("report %s: day %s: field %q: unknown account %q: %w", a.ReportID, a.Date, "account", a.Account, asynq.SkipRetry)
	}
	if err := s.checkOver("date", a.Date); err != nil {
		return nil, fmt.Errorf("report %s: day %s: %w: %w", a.ReportID, a.Date, err, asynq.SkipRetry)
	}
	plan, err := readPlan(ctx, deps.Cache, a.ReportID)
	if errors.Is(err, cachemgr.ErrMiss) {
		return nil, fmt.Errorf("report %s: day %s: no such report (never planned, or expired): %w", a.ReportID, a.Date, asynq.SkipRetry)
	}
	if err != nil {
		return nil, fmt.Errorf("report %s: day %s: %w", a.ReportID, a.Date, err)
	}
	if plan.Account != a.Account || a.Date < plan.From || a.Date > plan.To {
		return nil, fmt.Errorf("report %s: day %s of %s is not one of the report's (%s, %s to %s): %w",
			a.ReportID, a.Date, a.Account, plan.Account, plan.From, plan.To, asynq.SkipRetry)
	}

	deps.ReportBestEffort(ctx, 0, "computing")
	d, err := Figures(ctx, a.Account, a.Date, s.o.Work, func(done int) {
		pct := float64(100*done) / float64(s.o.Work)
		deps.ReportBestEffort(ctx, pct*0.9, fmt.Sprintf("computing: %d of %d rounds", done, s.o.Work))
	})
	if err != nil {
		return nil, fmt.Errorf("report %s: day %s: %w", a.ReportID, a.Date, err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("report %s: day %s: %w", a.ReportID, a.Date, err)
	}
	// Kept as long as the plan, past the report's expiry: the cleanup
	// deletes it on time.
	ttl := plan.ExpiresAt.Sub(s.o.Now()) + grace
	if ttl <= 0 {
		return nil, fmt.Errorf("report %s: day %s: the report expired at %s: %w", a.ReportID, a.Date, plan.ExpiresAt.Format(time.RFC3339), asynq.SkipRetry)
	}
	if err := deps.Cache.Set(ctx, DayKey(plan.Bucket, a.ReportID, a.Date), b, ttl); err != nil {
		return nil, fmt.Errorf("report %s: day %s: store: %w", a.ReportID, a.Date, err)
	}
	deps.ReportBestEffort(ctx, 100, "stored")
	return b, nil
}

// readPlan reads report id's plan; a missing one is cachemgr.ErrMiss.
func readPlan(ctx context.Context, cache tasks.Cache, id string) (Plan, error) {
	var plan Plan
	raw, err := cache.Get(ctx, PlanKey(id))
	if err != nil {
		return plan, err
	}
	if err := json.Unmarshal([]byte(raw), &plan); err != nil {
		return plan, fmt.Errorf("plan of %s: %w", id, err)
	}
	return plan, nil
}

// Figures returns the figures of account on date: SHA-256 of
// "account|date", then work-1 more rounds over each previous sum, read as
// numbers. The same inputs always give the same figures. progress, when not
// nil, is called with the rounds done about progressSteps times. It stops
// with ctx's error when ctx ends.
func Figures(ctx context.Context, account, date string, work int, progress func(done int)) (Day, error) {
	sum := sha256.Sum256([]byte(account + "|" + date))
	step := max(1, work/progressSteps)
	for done := 1; done < work; done++ {
		sum = sha256.Sum256(sum[:])
		if done%step == 0 {
			if err := ctx.Err(); err != nil {
				return Day{}, err
			}
			if progress != nil {
				progress(done)
			}
		}
	}
	orders := int(binary.BigEndian.Uint32(sum[0:4]) % 500)
	return Day{
		Date:         date,
		Orders:       orders,
		RevenueCents: int64(orders) * int64(1000+binary.BigEndian.Uint32(sum[4:8])%9000),
		Refunds:      int(binary.BigEndian.Uint32(sum[8:12]) % uint32(orders/20+1)),
	}, nil
}
