package report_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/examples/reports/report"
	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/worker"
)

// startReports runs the reports program as main.go builds it, in this
// process, on an embedded Redis, with the clock at t0. middleware, when
// given, goes inside the program's own (to inject failures).
func startReports(tb testing.TB, middleware ...asynq.MiddlewareFunc) (*forgeqtest.Worker, *report.Service) {
	tb.Helper()
	s, _ := newService(tb, report.Options{})
	app := worker.New("reports").
		Register(s.Types()...).
		Use(s.LimitDays()).
		Use(middleware...).
		Handle("GET /reports/{id}", s.GetReport).
		Handle("POST /reports", s.PostReport).
		Handle("POST /reports/publish", s.PostPublishReport).
		Schedule(worker.Periodic{Name: "report-cleanup", Spec: "@every 1h", Type: report.TypeCleanup})
	return forgeqtest.StartWorker(tb, app, forgeqtest.WorkerOptions{}), s
}

// call sends a request to w and returns the status and the body.
func call(tb testing.TB, w *forgeqtest.Worker, method, path, body string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, w.URL(path), strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestReportOverHTTP(t *testing.T) {
	t.Parallel()
	w, _ := startReports(t)

	code, body := call(t, w, http.MethodPost, "/reports", `{"account":"acme","from":"2026-03-01","to":"2026-03-07"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /reports: %d %s", code, body)
	}
	var created report.Created
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	if created.ReportURL != "/reports/"+created.ReportID || created.Queue != "default" {
		t.Errorf("POST /reports answered %+v", created)
	}

	var got report.Report
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := call(t, w, http.MethodGet, created.ReportURL, "")
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Status == report.StatusComplete {
				break
			}
		} else if code != http.StatusNotFound { // 404 until report:build has run
			t.Fatalf("GET %s: %d %s", created.ReportURL, code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s after 30s: %d %s", created.ReportURL, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	want := report.Report{
		ReportID: created.ReportID, Account: "acme", From: "2026-03-01", To: "2026-03-07",
		Status: report.StatusComplete, DaysDone: 7, DaysTotal: 7, ExpiresAt: t0.Add(report.DefaultRetention),
	}
	for i := range 7 {
		d, err := report.Figures(context.Background(), "acme", time.Date(2026, 3, 1+i, 0, 0, 0, 0, time.UTC).Format(time.DateOnly), 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		want.Days = append(want.Days, d)
		want.Totals.Orders += d.Orders
		want.Totals.RevenueCents += d.RevenueCents
		want.Totals.Refunds += d.Refunds
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET %s (-want +got):\n%s", created.ReportURL, diff)
	}

	// The id is now taken.
	code, body = call(t, w, http.MethodPost, "/reports", `{"report_id":"`+created.ReportID+`","account":"acme","from":"2026-03-01","to":"2026-03-01"}`)
	if code != http.StatusConflict {
		t.Errorf("POST /reports with a taken id: %d %s, want 409", code, body)
	}
}

func TestPostReportRefusesBadRequests(t *testing.T) {
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
		{name: "bad date", give: `{"account":"acme","from":"1 March","to":"2026-03-02"}`, wantCode: 400, wantText: `field \"from\"`},
		{name: "unknown field", give: `{"account":"acme","from":"2026-03-01","to":"2026-03-02","format":"pdf"}`, wantCode: 400, wantText: `unknown field \"format\"`},
		{name: "not JSON", give: `account=acme`, wantCode: 400, wantText: "body:"},
	}
	t.Run("not sent as JSON", func(t *testing.T) {
		resp, err := http.Post(w.URL("/reports"), "text/plain", strings.NewReader(`{"account":"acme","from":"2026-03-01","to":"2026-03-02"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("POST /reports as text/plain: %d, want 415", resp.StatusCode)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, w, http.MethodPost, "/reports", tt.give)
			if code != tt.wantCode || !strings.Contains(string(body), tt.wantText) {
				t.Errorf("POST /reports %s: %d %s; want %d with %s", tt.give, code, body, tt.wantCode, tt.wantText)
			}
		})
	}
	if q, err := w.Inspector().GetQueueInfo("default"); err == nil && q.Size > 0 {
		t.Errorf("%d tasks enqueued, want none", q.Size)
	}
}

func TestGetReportUnknown(t *testing.T) {
	t.Parallel()
	w, _ := startReports(t)

	for _, path := range []string{"/reports/nope", "/reports/bad%20id"} {
		if code, body := call(t, w, http.MethodGet, path, ""); code != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", path, code, body)
		}
	}
}
