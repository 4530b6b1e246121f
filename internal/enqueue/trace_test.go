package enqueue

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
)

// consoleSpan is the part of a span the console exporter writes that the
// tests read.
type consoleSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
}

// consoleSpans returns the spans of trace (any trace when "") in the
// console exporter's output among the other lines of stderr.
func consoleSpans(tb testing.TB, stderr, trace string) map[string]consoleSpan {
	tb.Helper()
	spans := map[string]consoleSpan{}
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var s consoleSpan
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			tb.Fatalf("console span %q: %v", line, err)
		}
		if trace == "" || s.SpanContext.TraceID == trace {
			spans[s.Name] = s
		}
	}
	return spans
}

// TestEnqueueTrace checks the command's root span: it continues the trace
// of TRACEPARENT when set, starts one otherwise, and the enqueue span of
// the task is its child.
func TestEnqueueTrace(t *testing.T) {
	t.Parallel()
	const (
		traceID  = "0af7651916cd43dd8448eb211c80319c"
		callerID = "b7ad6b7169203331"
	)
	for _, tt := range []struct {
		name        string
		giveEnv     map[string]string
		wantTrace   string // "" for a new one
		wantParent  string
		wantService string
	}{
		{"TRACEPARENT", map[string]string{"TRACEPARENT": "00-" + traceID + "-" + callerID + "-01"}, traceID, callerID, "enqueue"},
		{"new trace", map[string]string{"OTEL_SERVICE_NAME": "nightly"}, "", "0000000000000000", "nightly"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				"REDIS_CONNECTION_URL": "redis://" + miniredis.RunT(t).Addr(),
				"OTEL_TRACES_EXPORTER": "console",
			}
			for k, v := range tt.giveEnv {
				env[k] = v
			}
			r := runCmd(t, env, "", "data:process", `{"key": "k", "work": 1}`, "--id", "traced-"+strings.ReplaceAll(tt.name, " ", "-"))
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			spans := consoleSpans(t, r.stderr, tt.wantTrace)
			root, ok := spans["enqueue"]
			if !ok {
				t.Fatalf("no enqueue span in stderr:\n%s", r.stderr)
			}
			if tt.wantTrace == "" {
				spans = consoleSpans(t, r.stderr, root.SpanContext.TraceID)
			}
			if root.Parent.SpanID != tt.wantParent {
				t.Errorf("the root span's parent is %q, want %q", root.Parent.SpanID, tt.wantParent)
			}
			pub, ok := spans["data:process publish"]
			if !ok || pub.Parent.SpanID != root.SpanContext.SpanID {
				t.Errorf("publish span %+v, want one under the root span %s", pub, root.SpanContext.SpanID)
			}
			if !strings.Contains(r.stderr, `"Value":"`+tt.wantService+`"`) {
				t.Errorf("service.name %s not in the spans:\n%s", tt.wantService, r.stderr)
			}
		})
	}
}

// TestEnqueueTraceBadEnv checks that a bad OTEL_* variable is a usage
// error naming it, before anything is enqueued.
func TestEnqueueTraceBadEnv(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	env := map[string]string{
		"REDIS_CONNECTION_URL":        "redis://" + mr.Addr(),
		"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
	}
	r := runCmd(t, env, "", "data:process", `{"key": "k", "work": 1}`)
	if r.code != exitUsage {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
	}
	if !strings.Contains(r.stderr, `OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318"`) {
		t.Errorf("stderr %q does not name the variable and its value", r.stderr)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Errorf("something was written to Redis: %v", keys)
	}
}

// TestEnqueueTraceExportFailure checks that spans the collector refuses
// are reported on stderr (the SDK reports a failed export to its error
// handler, which Setup routes to the logger the command gives it).
//
// Setup routes OpenTelemetry's errors process-wide, so the test does not
// run in parallel with the others.
func TestEnqueueTraceExportFailure(t *testing.T) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "refused", http.StatusBadRequest)
	}))
	t.Cleanup(collector.Close)
	env := map[string]string{
		"REDIS_CONNECTION_URL":               "redis://" + miniredis.RunT(t).Addr(),
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.URL + "/v1/traces",
	}
	r := runCmd(t, env, "", "data:process", `{"key": "k", "work": 1}`)
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "opentelemetry error") || !strings.Contains(r.stderr, "400") {
		t.Errorf("stderr does not report the refused export:\n%s", r.stderr)
	}
}
