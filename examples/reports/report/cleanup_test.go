package report_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/examples/reports/report"
	"github.com/forgeq/forgeq/forgeqtest"
)

// computeDays runs every recorded report:day task, then forgets them.
func computeDays(tb testing.TB, h *forgeqtest.Harness, s *report.Service) {
	tb.Helper()
	for _, d := range forgeqtest.Payloads(tb, h.Enqueuer(), s.Day) {
		if res := forgeqtest.Run(h, s.Day, d); res.Err != nil {
			tb.Fatalf("day %+v: %v", d, res.Err)
		}
	}
	h.Enqueuer().Reset()
}

func TestCleanupDeletesExpiredReports(t *testing.T) {
	t.Parallel()
	s, c := newService(t, report.Options{})
	h := forgeqtest.New(t)
	ctx := t.Context()

	// r1 expires 2026-03-11 12:30, r2 two hours later.
	plan(t, h, s, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-03-01", To: "2026-03-03"})
	computeDays(t, h, s)
	c.add(2 * time.Hour)
	plan(t, h, s, report.BuildArgs{ReportID: "r2", Account: "acme", From: "2026-03-01", To: "2026-03-02"})
	computeDays(t, h, s)

	// Within r1's expiry hour: nothing is deleted yet.
	c.set(time.Date(2026, 3, 11, 12, 45, 0, 0, time.UTC))
	early := forgeqtest.DecodeResult[report.CleanupResult](t, forgeqtest.Run(h, s.Cleanup, report.CleanupArgs{}))
	if early.Deleted != 0 {
		t.Errorf("cleanup at 12:45 deleted %d keys, want none (the hour is under way)", early.Deleted)
	}

	c.set(time.Date(2026, 3, 11, 13, 5, 0, 0, time.UTC))
	res := forgeqtest.Run(h, s.Cleanup, report.CleanupArgs{})

	want := report.CleanupResult{Buckets: []string{"2026031110", "2026031111", "2026031112"}, Deleted: 3}
	if diff := cmp.Diff(want, forgeqtest.DecodeResult[report.CleanupResult](t, res)); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	for _, date := range []string{"2026-03-01", "2026-03-02", "2026-03-03"} {
		if _, err := h.Manager().Get(ctx, report.DayKey("2026031112", "r1", date)); !errors.Is(err, cachemgr.ErrMiss) {
			t.Errorf("r1's day %s: %v, want it deleted", date, err)
		}
	}
	for _, date := range []string{"2026-03-01", "2026-03-02"} {
		if _, err := h.Manager().Get(ctx, report.DayKey("2026031114", "r2", date)); err != nil {
			t.Errorf("r2's day %s: %v, want it kept", date, err)
		}
	}
	if n := h.Logs().FilterMessage("expired reports deleted").Len(); n != 1 {
		t.Errorf("%d \"expired reports deleted\" log lines, want 1", n)
	}
}

func TestCleanupLookback(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{})
	h := forgeqtest.New(t)

	res := forgeqtest.Run(h, s.Cleanup, report.CleanupArgs{LookbackHours: 1})
	got := forgeqtest.DecodeResult[report.CleanupResult](t, res)
	if diff := cmp.Diff([]string{"2026031011"}, got.Buckets); diff != "" {
		t.Errorf("buckets (-want +got):\n%s", diff)
	}
	if bad := forgeqtest.Run(h, s.Cleanup, report.CleanupArgs{LookbackHours: 169}); !bad.Permanent() {
		t.Errorf("lookback 169: %v, want a permanent failure", bad.Err)
	}
}
