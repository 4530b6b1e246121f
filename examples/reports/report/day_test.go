package report_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/examples/reports/report"
	"github.com/forgeq/forgeq/forgeqtest"
)

// plan runs report:build for args and fails the test if it fails.
func plan(tb testing.TB, h *forgeqtest.Harness, s *report.Service, args report.BuildArgs) report.BuildResult {
	tb.Helper()
	return forgeqtest.DecodeResult[report.BuildResult](tb, forgeqtest.Run(h, s.Build, args))
}

func TestDayComputesAndStoresItsFigures(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{Work: 1000})
	h := forgeqtest.New(t)
	plan(t, h, s, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-03"})

	res := forgeqtest.Run(h, s.Day, report.DayArgs{ReportID: "r1", Account: "acme", Date: "2026-03-02"})

	want, err := report.Figures(context.Background(), "acme", "2026-03-02", 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, forgeqtest.DecodeResult[report.Day](t, res)); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	key := report.DayKey("2026031112", "r1", "2026-03-02")
	stored, err := cachemgr.GetJSON[report.Day](t.Context(), h.Manager(), key)
	if err != nil {
		t.Fatalf("stored day: %v", err)
	}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("stored day (-want +got):\n%s", diff)
	}
	if ttl := h.Miniredis().TTL(h.Manager().Key(key)); ttl < 24*time.Hour || ttl > 31*time.Hour {
		t.Errorf("day TTL %v, want the report's remaining time and a few hours' grace", ttl)
	}

	var pcts []float64
	for _, p := range res.Progress {
		pcts = append(pcts, p.Percent)
	}
	if len(pcts) < 3 || pcts[0] != 0 || pcts[len(pcts)-1] != 100 || res.Progress[len(pcts)-1].Message != "stored" {
		t.Errorf("progress %v, want 0 first, 100 \"stored\" last and steps between", res.Progress)
	}
	for i := 1; i < len(pcts); i++ {
		if pcts[i] < pcts[i-1] {
			t.Errorf("progress goes back: %v", pcts)
		}
	}
}

func TestFiguresAreDeterministic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// The wants were computed apart from Figures, with Python's hashlib.
	tests := []struct {
		name     string
		giveAcct string
		giveDate string
		giveWork int
		want     report.Day
	}{
		{name: "acme", giveAcct: "acme", giveDate: "2026-03-01", giveWork: 1, want: report.Day{Date: "2026-03-01", Orders: 83, RevenueCents: 231570, Refunds: 3}},
		{name: "globex", giveAcct: "globex", giveDate: "2026-03-01", giveWork: 100, want: report.Day{Date: "2026-03-01", Orders: 485, RevenueCents: 1394375, Refunds: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := report.Figures(ctx, tt.giveAcct, tt.giveDate, tt.giveWork, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Figures (-want +got):\n%s", diff)
			}
		})
	}
	a, _ := report.Figures(ctx, "acme", "2026-03-01", 100, nil)
	b, _ := report.Figures(ctx, "acme", "2026-03-02", 100, nil)
	if a.Orders == b.Orders && a.RevenueCents == b.RevenueCents {
		t.Errorf("two days with the same figures: %+v, %+v", a, b)
	}
}

func TestDayRefusesForGood(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		give     report.DayArgs
		wantText string
	}{
		{name: "unknown account", give: report.DayArgs{ReportID: "r1", Account: "umbrella", Date: "2026-03-01"}, wantText: `unknown account "umbrella"`},
		{name: "day not over", give: report.DayArgs{ReportID: "r1", Account: "acme", Date: "2026-03-10"}, wantText: "not over yet"},
		{name: "no such report", give: report.DayArgs{ReportID: "r9", Account: "acme", Date: "2026-03-01"}, wantText: "no such report"},
		{name: "not the report's day", give: report.DayArgs{ReportID: "r1", Account: "acme", Date: "2026-03-05"}, wantText: "is not one of the report's"},
		{name: "not the report's account", give: report.DayArgs{ReportID: "r1", Account: "globex", Date: "2026-03-01"}, wantText: "is not one of the report's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newService(t, report.Options{})
			h := forgeqtest.New(t)
			plan(t, h, s, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-02"})

			res := forgeqtest.Run(h, s.Day, tt.give)

			if !res.Permanent() || !strings.Contains(res.Err.Error(), tt.wantText) {
				t.Errorf("error %v, want a permanent one with %q", res.Err, tt.wantText)
			}
		})
	}
}

func TestDayOfAnExpiredReportFailsForGood(t *testing.T) {
	t.Parallel()
	s, c := newService(t, report.Options{})
	h := forgeqtest.New(t)
	plan(t, h, s, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-01"})

	c.add(report.DefaultRetention + 7*time.Hour) // past the plan's grace too
	res := forgeqtest.Run(h, s.Day, report.DayArgs{ReportID: "r1", Account: "acme", Date: "2026-03-01"})

	if !res.Permanent() || !strings.Contains(res.Err.Error(), "expired") {
		t.Errorf("error %v, want a permanent one saying the report expired", res.Err)
	}
}
