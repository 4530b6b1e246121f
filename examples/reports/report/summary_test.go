package report_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/examples/reports/report"
	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// publish runs report:publish for id the way its workflow step does, with
// previous as the result of the step before it (report:summarize's).
func publish(tb testing.TB, h *forgeqtest.Harness, s *report.Service, id string, previous []byte) ([]byte, error) {
	tb.Helper()
	return s.Publish.Handle(workflow.WithPrevious(tb.Context(), previous), h.Deps(), report.PublishArgs{ReportID: id})
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestPlanStoresThePlanWithoutFanningOut(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{})
	h := forgeqtest.New(t)

	res := forgeqtest.Run(h, s.Plan, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-02"})

	want := report.BuildResult{ReportID: "r1", Days: 2, ExpiresAt: t0.Add(report.DefaultRetention)}
	if diff := cmp.Diff(want, forgeqtest.DecodeResult[report.BuildResult](t, res)); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	plan, err := cachemgr.GetJSON[report.Plan](t.Context(), h.Manager(), report.PlanKey("r1"))
	if err != nil {
		t.Fatalf("stored plan: %v", err)
	}
	if diff := cmp.Diff([]string{"2026-03-01", "2026-03-02"}, plan.Days); diff != "" {
		t.Errorf("plan days (-want +got):\n%s", diff)
	}
	if n := len(h.Enqueuer().Enqueued()); n != 0 {
		t.Errorf("%d tasks enqueued, want none (the workflow runs the days):\n%s", n, h.Enqueuer())
	}

	bad := forgeqtest.Run(h, s.Plan, report.BuildArgs{ReportID: "r2", Account: "umbrella", From: "2026-03-01", To: "2026-03-02"})
	if !bad.Permanent() || !strings.Contains(bad.Err.Error(), `unknown account "umbrella"`) {
		t.Errorf("unknown account: %v, want a permanent error naming it", bad.Err)
	}
}

func TestPublishStoresTheSummary(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		give       report.Summary
		wantStatus string
	}{
		{
			name: "every day computed",
			give: report.Summary{
				ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-02",
				DaysTotal: 2, DaysSucceeded: 2, FailedDays: []report.FailedDay{},
				Totals: report.Totals{Orders: 10, RevenueCents: 12345, Refunds: 1},
			},
			wantStatus: report.StatusComplete,
		},
		{
			name: "a day failed",
			give: report.Summary{
				ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-02",
				DaysTotal: 2, DaysSucceeded: 1, DaysFailed: 1,
				FailedDays: []report.FailedDay{{Date: "2026-03-02", Step: "1.m1", Error: "source down"}},
				Totals:     report.Totals{Orders: 4, RevenueCents: 400, Refunds: 0},
			},
			wantStatus: report.StatusPartial,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newService(t, report.Options{})
			h := forgeqtest.New(t)
			plan(t, h, s, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-02"})

			b, err := publish(t, h, s, "r1", mustJSON(t, tt.give))
			if err != nil {
				t.Fatal(err)
			}

			var got report.Published
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := report.Published{ReportID: "r1", Status: tt.wantStatus, DaysFailed: tt.give.DaysFailed, ReportURL: "/reports/r1"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			key := report.SummaryKey("2026031112", "r1")
			stored, err := cachemgr.GetJSON[report.Summary](t.Context(), h.Manager(), key)
			if err != nil {
				t.Fatalf("stored summary: %v", err)
			}
			if diff := cmp.Diff(tt.give, stored); diff != "" {
				t.Errorf("stored summary (-want +got):\n%s", diff)
			}
			if ttl := h.Miniredis().TTL(h.Manager().Key(key)); ttl < 24*time.Hour || ttl > 31*time.Hour {
				t.Errorf("summary TTL %v, want the report's remaining time and a few hours' grace", ttl)
			}
			if n := h.Logs().FilterMessage("report published").Len(); n != 1 {
				t.Errorf("%d \"report published\" log entries, want 1", n)
			}
		})
	}
}

func TestPublishRefusesForGood(t *testing.T) {
	t.Parallel()
	summary := report.Summary{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-01", DaysTotal: 1, DaysSucceeded: 1}

	tests := []struct {
		name     string
		giveCtx  func(context.Context) context.Context
		giveID   string
		wantText string
	}{
		{
			name:     "not in a workflow",
			giveCtx:  func(ctx context.Context) context.Context { return ctx },
			giveID:   "r1",
			wantText: "not a workflow step",
		},
		{
			name:     "previous is not a summary",
			giveCtx:  func(ctx context.Context) context.Context { return workflow.WithPrevious(ctx, []byte(`[1,2]`)) },
			giveID:   "r1",
			wantText: "not a summary",
		},
		{
			name:     "summary of another report",
			giveCtx:  func(ctx context.Context) context.Context { return workflow.WithPrevious(ctx, mustJSON(t, summary)) },
			giveID:   "r2",
			wantText: `the summary of report "r1"`,
		},
		{
			name: "no such report",
			giveCtx: func(ctx context.Context) context.Context {
				other := summary
				other.ReportID = "r9"
				return workflow.WithPrevious(ctx, mustJSON(t, other))
			},
			giveID:   "r9",
			wantText: "no such report",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newService(t, report.Options{})
			h := forgeqtest.New(t)
			plan(t, h, s, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-01"})
			plan(t, h, s, report.BuildArgs{ReportID: "r2", Account: "acme", From: "2026-03-01", To: "2026-03-01"})

			_, err := s.Publish.Handle(tt.giveCtx(t.Context()), h.Deps(), report.PublishArgs{ReportID: tt.giveID})

			if !isPermanent(err) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %v, want a permanent one with %q", err, tt.wantText)
			}
			for _, k := range h.Miniredis().Keys() {
				if strings.HasSuffix(k, ":summary") {
					t.Errorf("summary %s stored", k)
				}
			}
		})
	}
}

func TestSummarizeOutsideAWorkflowFailsForGood(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{})
	h := forgeqtest.New(t)

	res := forgeqtest.Run(h, s.Summarize, report.SummarizeArgs{ReportID: "r1"})

	if !res.Permanent() || !strings.Contains(res.Err.Error(), "callback of a report workflow") {
		t.Errorf("error %v, want a permanent one saying where report:summarize runs", res.Err)
	}
}

func TestOnlyTheWorkflowsLaterStepsTakePrevious(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{})

	tests := []struct {
		give *tasks.Definition
		want bool
	}{
		{give: s.Build.Definition()},
		{give: s.Day.Definition()},
		{give: s.Cleanup.Definition()},
		{give: s.Plan.Definition()},
		{give: s.Summarize.Definition(), want: true},
		{give: s.Publish.Definition(), want: true},
	}
	for _, tt := range tests {
		if got := tt.give.TakesPrevious(); (got != "") != tt.want {
			t.Errorf("%s: TakesPrevious %q, want it declared: %v", tt.give.Type(), got, tt.want)
		}
	}
}

// isPermanent reports whether err is one asynq would not retry.
func isPermanent(err error) bool { return errors.Is(err, asynq.SkipRetry) }
