package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/internal/metrics"
)

// withSpan returns ctx holding a span context of trace id tid, sampled or
// not.
func withSpan(ctx context.Context, tid byte, sampled bool) context.Context {
	cfg := trace.SpanContextConfig{TraceID: trace.TraceID{tid}, SpanID: trace.SpanID{1}}
	if sampled {
		cfg.TraceFlags = trace.FlagsSampled
	}
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
}

// scrapeAs returns the body of x's /metrics in the format accept asks for,
// and its content type.
func scrapeAs(tb testing.TB, x *metrics.Metrics, accept string) (string, string) {
	tb.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	x.Handler().ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	return string(body), rec.Header().Get("Content-Type")
}

// TestExemplars checks that task and HTTP durations observed in a sampled
// span carry its trace id as an exemplar, shown in the OpenMetrics format
// only, and that an unsampled span gives none.
func TestExemplars(t *testing.T) {
	t.Parallel()
	b := setup(t, metrics.Options{})

	sampled := "01000000000000000000000000000000"
	task := b.x.TaskMiddleware()(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	if err := task.ProcessTask(withSpan(t.Context(), 1, true), asynq.NewTask("test:sampled", nil)); err != nil {
		t.Fatal(err)
	}
	if err := task.ProcessTask(withSpan(t.Context(), 2, false), asynq.NewTask("test:unsampled", nil)); err != nil {
		t.Fatal(err)
	}
	h := b.x.HTTPMiddleware(nil)(testMux())
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(withSpan(t.Context(), 1, true), http.MethodGet, "/items/7", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(withSpan(t.Context(), 2, false), http.MethodPost, "/items", nil))

	body, ct := scrapeAs(t, b.x, "application/openmetrics-text; version=1.0.0; charset=utf-8")
	if !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("Content-Type %q, want OpenMetrics", ct)
	}
	for _, re := range []string{
		`(?m)^forgeq_task_duration_seconds_bucket\{[^}]*task_type="test:sampled"[^}]*\} 1 # \{trace_id="` + sampled + `"\}`,
		`(?m)^forgeq_http_request_duration_seconds_bucket\{[^}]*route="GET /items/\{id\}"[^}]*\} 1 # \{trace_id="` + sampled + `"\}`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("no exemplar matching %s", re)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if (strings.Contains(line, "test:unsampled") || strings.Contains(line, `route="POST /items"`)) && strings.Contains(line, "#") {
			t.Errorf("an unsampled observation has an exemplar: %s", line)
		}
	}

	text, ct := scrapeAs(t, b.x, "")
	if !strings.HasPrefix(ct, "text/plain") || strings.Contains(text, "trace_id") {
		t.Errorf("the text format (%s) shows exemplars", ct)
	}
}
