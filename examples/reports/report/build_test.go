package report_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/examples/reports/report"
	"github.com/forgeq/forgeq/forgeqtest"
)

func TestBuildPlansAndFansOutTheDays(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{})
	h := forgeqtest.New(t)

	res := forgeqtest.Run(h, s.Build, report.BuildArgs{ReportID: "r1", Account: "acme", From: "2026-02-27", To: "2026-03-01"})

	got := forgeqtest.DecodeResult[report.BuildResult](t, res)
	want := report.BuildResult{ReportID: "r1", Days: 3, ExpiresAt: t0.Add(report.DefaultRetention)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	wantDays := []report.DayArgs{
		{ReportID: "r1", Account: "acme", Date: "2026-02-27"},
		{ReportID: "r1", Account: "acme", Date: "2026-02-28"},
		{ReportID: "r1", Account: "acme", Date: "2026-03-01"},
	}
	if diff := cmp.Diff(wantDays, forgeqtest.Payloads(t, h.Enqueuer(), s.Day)); diff != "" {
		t.Errorf("report:day tasks (-want +got):\n%s", diff)
	}
	var ids, queues []string
	for _, ti := range h.Enqueuer().OfType(report.TypeDay) {
		ids = append(ids, ti.ID)
		queues = append(queues, ti.Queue)
		if ti.MaxRetry != 5 || ti.Timeout != time.Minute {
			t.Errorf("task %s: max retry %d, timeout %v; want the type's 5 and 1m", ti.ID, ti.MaxRetry, ti.Timeout)
		}
	}
	if diff := cmp.Diff([]string{"report-r1-2026-02-27", "report-r1-2026-02-28", "report-r1-2026-03-01"}, ids); diff != "" {
		t.Errorf("task ids (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"default", "default", "default"}, queues); diff != "" {
		t.Errorf("queues (-want +got):\n%s", diff)
	}
	if n := len(res.Progress); n != 3 || res.Progress[n-1].Percent != 100 {
		t.Errorf("progress %+v, want 3 reports ending at 100%%", res.Progress)
	}

	plan, err := cachemgr.GetJSON[report.Plan](t.Context(), h.Manager(), report.PlanKey("r1"))
	if err != nil {
		t.Fatal(err)
	}
	wantPlan := report.Plan{
		ReportID: "r1", Account: "acme", From: "2026-02-27", To: "2026-03-01",
		Days:    []string{"2026-02-27", "2026-02-28", "2026-03-01"},
		Created: t0, ExpiresAt: t0.Add(24 * time.Hour), Bucket: "2026031112",
	}
	if diff := cmp.Diff(wantPlan, plan); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	if ttl := h.Miniredis().TTL(h.Manager().Key(report.PlanKey("r1"))); ttl < 24*time.Hour || ttl > 31*time.Hour {
		t.Errorf("plan TTL %v, want the retention and a few hours' grace", ttl)
	}
}

func TestBuildRetryEnqueuesNoDayTwice(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{})
	h := forgeqtest.New(t)
	args := report.BuildArgs{ReportID: "r2", Account: "globex", From: "2026-03-01", To: "2026-03-02"}

	first := forgeqtest.Run(h, s.Build, args)
	again := forgeqtest.Run(h, s.Build, args) // a retry after, say, a lost connection

	if first.Err != nil || again.Err != nil {
		t.Fatalf("runs: %v, %v; want both to succeed", first.Err, again.Err)
	}
	if n := len(h.Enqueuer().OfType(report.TypeDay)); n != 2 {
		t.Errorf("%d report:day tasks, want 2:\n%s", n, h.Enqueuer())
	}
}

func TestBuildRefusesForGood(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name      string
		give      report.BuildArgs
		wantField string
	}{
		{name: "unknown account", give: report.BuildArgs{ReportID: "x", Account: "umbrella", From: "2026-03-01", To: "2026-03-02"}, wantField: `"account"`},
		{name: "day not over", give: report.BuildArgs{ReportID: "x", Account: "acme", From: "2026-03-09", To: "2026-03-10"}, wantField: `"to"`},
		{name: "to before from", give: report.BuildArgs{ReportID: "x", Account: "acme", From: "2026-03-02", To: "2026-03-01"}, wantField: `"to"`},
		{name: "too long", give: report.BuildArgs{ReportID: "x", Account: "acme", From: "2025-01-01", To: "2026-01-01"}, wantField: `"to"`},
		{name: "bad date", give: report.BuildArgs{ReportID: "x", Account: "acme", From: "2026-02-30", To: "2026-03-01"}, wantField: `"from"`},
		{name: "bad id", give: report.BuildArgs{ReportID: "x/y", Account: "acme", From: "2026-03-01", To: "2026-03-01"}, wantField: `"report_id"`},
		{name: "id taken", give: report.BuildArgs{ReportID: "taken", Account: "acme", From: "2026-03-01", To: "2026-03-01"}, wantField: `"report_id"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newService(t, report.Options{})
			h := forgeqtest.New(t)
			taken := report.BuildArgs{ReportID: "taken", Account: "globex", From: "2026-03-01", To: "2026-03-01"}
			if res := forgeqtest.Run(h, s.Build, taken); res.Err != nil {
				t.Fatal(res.Err)
			}
			h.Enqueuer().Reset()

			res := forgeqtest.Run(h, s.Build, tt.give)

			if !res.Permanent() || !strings.Contains(res.Err.Error(), tt.wantField) {
				t.Errorf("error %v, want a permanent one naming the field %s", res.Err, tt.wantField)
			}
			if n := len(h.Enqueuer().Enqueued()); n != 0 {
				t.Errorf("%d tasks enqueued, want none:\n%s", n, h.Enqueuer())
			}
		})
	}
}

func TestBuildRefusesBadJSON(t *testing.T) {
	t.Parallel()
	s, _ := newService(t, report.Options{})
	h := forgeqtest.New(t)

	res := forgeqtest.RunJSON(h, s.Build.Definition(), []byte(`{"report_id":"r","account":"acme","from":"2026-03-01"}`))

	if !res.Permanent() || !strings.Contains(res.Err.Error(), `missing required field "to"`) {
		t.Errorf("error %v, want a permanent one naming the missing field to", res.Err)
	}
}
