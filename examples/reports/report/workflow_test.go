package report_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/examples/reports/report"
	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/workflow"
)

// failDay returns a task middleware that fails the report:day of date for
// good, as a figures source down for that day would.
func failDay(date string) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			var a report.DayArgs
			if t.Type() == report.TypeDay && json.Unmarshal(t.Payload(), &a) == nil && a.Date == date {
				return fmt.Errorf("figures source: %s unavailable: %w", date, asynq.SkipRetry)
			}
			return next.ProcessTask(ctx, t)
		})
	}
}

// waitWorkflow waits up to 30s for workflow id to finish and returns its
// final state.
func waitWorkflow(tb testing.TB, w *forgeqtest.Worker, id string) *workflow.State {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	st, err := w.Services().Workflows.Wait(ctx, id, 10*time.Millisecond, nil)
	if err != nil {
		tb.Fatalf("wait for workflow %s: %v (last state %+v)", id, err, st)
	}
	return st
}

// stepResult decodes the result of the step at path of workflow id.
func stepResult[R any](tb testing.TB, w *forgeqtest.Worker, id, path string) R {
	tb.Helper()
	var r R
	b, err := w.Services().Workflows.Result(tb.Context(), id, path)
	if err != nil {
		tb.Fatalf("result of step %s: %v", path, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		tb.Fatalf("result of step %s: %v: %s", path, err, b)
	}
	return r
}

// matchErrors checks that each of got's errors holds the part of it want
// gives, then sets it to that part, so that the rest compares with
// cmp.Diff.
func matchErrors(tb testing.TB, want, got []report.FailedDay) {
	tb.Helper()
	for i := range min(len(want), len(got)) {
		if !strings.Contains(got[i].Error, want[i].Error) {
			tb.Errorf("failed day %s: error %q, want it to hold %q", got[i].Date, got[i].Error, want[i].Error)
			continue
		}
		got[i].Error = want[i].Error
	}
}

func TestPublishedReportOverHTTP(t *testing.T) {
	t.Parallel()

	days := []string{"2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"}
	tests := []struct {
		name       string
		giveFail   string // the day made to fail, if any
		wantStatus string
		wantFailed []report.FailedDay // Error: a part of it
	}{
		{name: "every day computed", wantStatus: report.StatusComplete, wantFailed: []report.FailedDay{}},
		{
			name:       "a day failed",
			giveFail:   "2026-03-03",
			wantStatus: report.StatusPartial,
			wantFailed: []report.FailedDay{{Date: "2026-03-03", Step: "1.m2", Error: "figures source: 2026-03-03 unavailable"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var w *forgeqtest.Worker
			if tt.giveFail != "" {
				w, _ = startReports(t, failDay(tt.giveFail))
			} else {
				w, _ = startReports(t)
			}

			code, body := call(t, w, http.MethodPost, "/reports/publish", `{"report_id":"p1","account":"acme","from":"2026-03-01","to":"2026-03-05"}`)
			if code != http.StatusAccepted {
				t.Fatalf("POST /reports/publish: %d %s", code, body)
			}
			var created report.PublishCreated
			if err := json.Unmarshal(body, &created); err != nil {
				t.Fatal(err)
			}
			wantCreated := report.PublishCreated{
				ReportID: "p1", WorkflowID: "p1", Steps: 1 + len(days) + 2,
				StatusURL: "/api/workflows/p1", ReportURL: "/reports/p1",
			}
			if diff := cmp.Diff(wantCreated, created); diff != "" {
				t.Errorf("POST /reports/publish (-want +got):\n%s", diff)
			}

			st := waitWorkflow(t, w, created.WorkflowID)
			if st.Status != workflow.StatusSucceeded || st.Done != created.Steps || st.Failed != len(tt.wantFailed) {
				t.Fatalf("workflow %+v, want succeeded (the summary runs whatever the days do) with %d of %d steps failed",
					st, len(tt.wantFailed), created.Steps)
			}

			// The status URL the route gave answers the same state.
			code, body = call(t, w, http.MethodGet, created.StatusURL, "")
			var status struct {
				ID     string          `json:"id"`
				Status workflow.Status `json:"status"`
				Total  int             `json:"total"`
				Done   int             `json:"done"`
				Failed int             `json:"failed"`
			}
			if err := json.Unmarshal(body, &status); code != http.StatusOK || err != nil {
				t.Fatalf("GET %s: %d %s (%v)", created.StatusURL, code, body, err)
			}
			if status.ID != "p1" || status.Status != st.Status || status.Total != st.Total || status.Done != st.Done || status.Failed != st.Failed {
				t.Errorf("GET %s: %s, want the state %+v", created.StatusURL, body, st)
			}

			want := report.Summary{
				ReportID: "p1", Account: "acme", From: "2026-03-01", To: "2026-03-05",
				DaysTotal: len(days), DaysSucceeded: len(days) - len(tt.wantFailed), DaysFailed: len(tt.wantFailed),
				FailedDays: tt.wantFailed,
			}
			var wantDays []report.Day
			for _, date := range days {
				if date == tt.giveFail {
					continue
				}
				d, err := report.Figures(t.Context(), "acme", date, 100, nil)
				if err != nil {
					t.Fatal(err)
				}
				wantDays = append(wantDays, d)
				want.Totals.Orders += d.Orders
				want.Totals.RevenueCents += d.RevenueCents
				want.Totals.Refunds += d.Refunds
			}
			summary := stepResult[report.Summary](t, w, created.WorkflowID, report.SummaryStep)
			matchErrors(t, want.FailedDays, summary.FailedDays)
			if diff := cmp.Diff(want, summary); diff != "" {
				t.Errorf("report:summarize's result (-want +got):\n%s", diff)
			}
			published := stepResult[report.Published](t, w, created.WorkflowID, report.PublishStep)
			wantPublished := report.Published{ReportID: "p1", Status: tt.wantStatus, DaysFailed: len(tt.wantFailed), ReportURL: "/reports/p1"}
			if diff := cmp.Diff(wantPublished, published); diff != "" {
				t.Errorf("report:publish's result (-want +got):\n%s", diff)
			}

			code, body = call(t, w, http.MethodGet, created.ReportURL, "")
			if code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", created.ReportURL, code, body)
			}
			var got report.Report
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			wantReport := report.Report{
				ReportID: "p1", Account: "acme", From: "2026-03-01", To: "2026-03-05",
				Status: tt.wantStatus, DaysDone: len(wantDays), DaysTotal: len(days), Days: wantDays,
				Totals: want.Totals, ExpiresAt: t0.Add(report.DefaultRetention), Summary: &want,
			}
			if got.Summary != nil {
				matchErrors(t, want.FailedDays, got.Summary.FailedDays)
			}
			if diff := cmp.Diff(wantReport, got); diff != "" {
				t.Errorf("GET %s (-want +got):\n%s", created.ReportURL, diff)
			}
		})
	}
}

func TestPostPublishReportRefusesBadRequests(t *testing.T) {
	t.Parallel()
	w, _ := startReports(t)

	tests := []struct {
		name     string
		give     string
		wantCode int
		wantText string
	}{
		{name: "unknown account", give: `{"account":"umbrella","from":"2026-03-01","to":"2026-03-02"}`, wantCode: 400, wantText: `field \"account\": unknown account`},
		{name: "day not over", give: `{"account":"acme","from":"2026-03-01","to":"2026-03-10"}`, wantCode: 400, wantText: `field \"to\"`},
		{name: "too long", give: `{"account":"acme","from":"2025-01-01","to":"2026-01-01"}`, wantCode: 400, wantText: `field \"to\"`},
		{name: "bad id", give: `{"report_id":"a/b","account":"acme","from":"2026-03-01","to":"2026-03-02"}`, wantCode: 400, wantText: `field \"report_id\"`},
		{name: "unknown field", give: `{"account":"acme","from":"2026-03-01","to":"2026-03-02","format":"pdf"}`, wantCode: 400, wantText: `unknown field \"format\"`},
		{name: "not JSON", give: `account=acme`, wantCode: 400, wantText: "body:"},
	}
	t.Run("not sent as JSON", func(t *testing.T) {
		resp, err := http.Post(w.URL("/reports/publish"), "text/plain", strings.NewReader(`{"account":"acme","from":"2026-03-01","to":"2026-03-02"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("POST /reports/publish as text/plain: %d, want 415", resp.StatusCode)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, w, http.MethodPost, "/reports/publish", tt.give)
			if code != tt.wantCode || !strings.Contains(string(body), tt.wantText) {
				t.Errorf("POST /reports/publish %s: %d %s; want %d with %s", tt.give, code, body, tt.wantCode, tt.wantText)
			}
		})
	}
	if flows, err := w.Services().Workflows.List(t.Context(), 10); err != nil || len(flows) != 0 {
		t.Errorf("workflows %+v (%v), want none", flows, err)
	}
	if q, err := w.Inspector().GetQueueInfo("default"); err == nil && q.Size > 0 {
		t.Errorf("%d tasks enqueued, want none", q.Size)
	}
}

func TestPostPublishReportRefusesATakenID(t *testing.T) {
	t.Parallel()
	w, _ := startReports(t)
	body := `{"report_id":"p2","account":"globex","from":"2026-03-01","to":"2026-03-02"}`

	if code, b := call(t, w, http.MethodPost, "/reports/publish", body); code != http.StatusAccepted {
		t.Fatalf("first POST /reports/publish: %d %s", code, b)
	}
	// Whether the first report's plan is stored yet or not: 409.
	if code, b := call(t, w, http.MethodPost, "/reports/publish", body); code != http.StatusConflict || !strings.Contains(string(b), `report id \"p2\" is taken`) {
		t.Errorf("second POST /reports/publish: %d %s, want 409 naming the id", code, b)
	}
	waitWorkflow(t, w, "p2")
	// Taken for POST /reports too, once planned.
	if code, b := call(t, w, http.MethodPost, "/reports", body); code != http.StatusConflict {
		t.Errorf("POST /reports with the published report's id: %d %s, want 409", code, b)
	}
	if flows, err := w.Services().Workflows.List(t.Context(), 10); err != nil || len(flows) != 1 {
		t.Errorf("workflows %+v (%v), want the first one only", flows, err)
	}
}
