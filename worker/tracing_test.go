package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
	"github.com/forgeq/forgeq/workflow"
)

type tracedPayload struct {
	Key string `json:"key"`
}

// TestAppTrace follows one HTTP request through the worker: POST
// /api/tasks/{type} with a traceparent gives one trace holding the HTTP
// span (continuing the caller's), the enqueue span under it, the span of
// the task's run under that, and the Redis spans of the handler's cache
// calls under the task's; the task's log line carries trace_id, span_id
// and the request id; and an OpenMetrics scrape of /metrics shows the
// trace id as an exemplar of the task and HTTP durations.
//
// The runs set up tracing, which is process-wide (a task enqueued outside
// any span by another worker of the process would get an enqueue span
// and a traceparent): they run one after the other, not in parallel with
// the package's other tests, which run after them. Only the test's trace
// is looked at.
func TestAppTrace(t *testing.T) {
	for _, tt := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"miniredis", miniredisURL},
		{"redis", func(tb testing.TB) string { return realRedisURL(tb, 37) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const (
				traceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
				callerID  = "00f067aa0ba902b7"
				requestID = "req-trace-1"
			)
			typ := tasks.Define("test:traced", "Caches a value and reads it back.",
				func(ctx context.Context, deps tasks.Deps, p tracedPayload) ([]byte, error) {
					if err := deps.Cache.Set(ctx, p.Key, "v", time.Minute); err != nil {
						return nil, err
					}
					if _, err := deps.Cache.Get(ctx, p.Key); err != nil {
						return nil, err
					}
					return nil, nil
				})
			exp := tracetest.NewInMemoryExporter()
			app := worker.WithSpanExporter(worker.New("traced").Register(typ), exp)
			r := startApp(t, app, tt.url(t), nil)

			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, r.base+"/api/tasks/test:traced",
				strings.NewReader(`{"payload":{"key":"traced:`+tt.name+`"}}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("traceparent", "00-"+traceID+"-"+callerID+"-01")
			req.Header.Set("X-Request-ID", requestID)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("POST: %d %s", resp.StatusCode, body)
			}
			var enq struct{ ID, Queue string }
			if err := json.Unmarshal(body, &enq); err != nil {
				t.Fatal(err)
			}

			// The spans of the trace, once the task's has ended.
			var spans tracetest.SpanStubs
			deadline := time.Now().Add(15 * time.Second)
			for {
				spans = inTrace(exp.GetSpans(), traceID)
				if byName(spans, "test:traced process") != nil && len(r.logLines("task done")) > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("trace %s after 15s: %v", traceID, describe(spans))
				}
				time.Sleep(20 * time.Millisecond)
			}

			t.Logf("trace %s: %v", traceID, describe(spans))
			httpSpan := byName(spans, "POST /api/tasks/{type}")
			enqSpan := byName(spans, "test:traced publish")
			runSpan := byName(spans, "test:traced process")
			if httpSpan == nil || enqSpan == nil {
				t.Fatalf("trace %s lacks the HTTP or enqueue span: %v", traceID, describe(spans))
			}
			for _, c := range []struct {
				what         string
				span         *tracetest.SpanStub
				wantParent   string
				wantKind     trace.SpanKind
				wantAttr     string
				wantAttrName string
			}{
				{"HTTP span", httpSpan, callerID, trace.SpanKindServer, "", ""},
				{"enqueue span", enqSpan, httpSpan.SpanContext.SpanID().String(), trace.SpanKindProducer, enq.ID, "messaging.message.id"},
				{"task span", runSpan, enqSpan.SpanContext.SpanID().String(), trace.SpanKindConsumer, requestID, "forgeq.request_id"},
			} {
				if got := c.span.Parent.SpanID().String(); got != c.wantParent {
					t.Errorf("%s's parent is %s, want %s; trace: %v", c.what, got, c.wantParent, describe(spans))
				}
				if c.span.SpanKind != c.wantKind {
					t.Errorf("%s's kind is %v, want %v", c.what, c.span.SpanKind, c.wantKind)
				}
				if c.wantAttrName != "" && attr(c.span, c.wantAttrName) != c.wantAttr {
					t.Errorf("%s's %s = %q, want %q", c.what, c.wantAttrName, attr(c.span, c.wantAttrName), c.wantAttr)
				}
			}
			if got := attr(runSpan, "service.name"); got != "" {
				t.Errorf("service.name as a span attribute: %q", got)
			}
			if got := resourceAttr(runSpan, "service.name"); got != "traced" {
				t.Errorf("service.name = %q, want the program's name", got)
			}
			// The handler's cache calls.
			var redisSpans []string
			for _, s := range spans {
				if s.Parent.SpanID() == runSpan.SpanContext.SpanID() && attr(&s, "db.system") == "redis" {
					redisSpans = append(redisSpans, s.Name)
				}
			}
			if len(redisSpans) == 0 {
				t.Errorf("no Redis span under the task's span; trace: %v", describe(spans))
			}

			// The task's log line.
			var line map[string]any
			for _, l := range r.logLines("task done") {
				if l["task_id"] == enq.ID {
					line = l
				}
			}
			want := map[string]string{"trace_id": traceID, "span_id": runSpan.SpanContext.SpanID().String(), "request_id": requestID}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("task log line %s = %v, want %s; line: %v", k, line[k], v, line)
				}
			}
			// The access log line of the POST.
			found := false
			for _, l := range r.logLines("http request") {
				if l["request_id"] == requestID && l["trace_id"] == traceID && l["span_id"] == httpSpan.SpanContext.SpanID().String() {
					found = true
				}
			}
			if !found {
				t.Errorf("no access log line of the POST with its trace_id and span_id: %v", r.logLines("http request"))
			}

			// The exemplars.
			req, _ = http.NewRequestWithContext(t.Context(), http.MethodGet, r.base+"/metrics", nil)
			req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
				t.Errorf("/metrics Content-Type %q, want OpenMetrics", ct)
			}
			for _, re := range []string{
				`(?m)^forgeq_task_duration_seconds_bucket\{[^}]*task_type="test:traced"[^}]*\} \d+ # \{trace_id="` + traceID + `"\}`,
				`(?m)^forgeq_http_request_duration_seconds_bucket\{[^}]*route="POST /api/tasks/\{type\}"[^}]*\} \d+ # \{trace_id="` + traceID + `"\}`,
			} {
				if !regexp.MustCompile(re).Match(metrics) {
					t.Errorf("no exemplar matching %s in:\n%s", re, grepLines(string(metrics), "duration_seconds_bucket"))
				}
			}
			r.stop(t)
		})
	}
}

// TestAppTraceWorkflow checks that a workflow's steps are linked in one
// trace: the next step is enqueued from the step that finished, so its
// publish span is a child of that step's process span, and each process
// span names its workflow and step. Not parallel: see TestAppTrace.
func TestAppTraceWorkflow(t *testing.T) {
	first := tasks.Define("test:wf-first", "First step.",
		func(context.Context, tasks.Deps, tracedPayload) ([]byte, error) { return []byte(`1`), nil })
	second := tasks.Define("test:wf-second", "Second step.",
		func(context.Context, tasks.Deps, tracedPayload) ([]byte, error) { return []byte(`2`), nil })
	exp := tracetest.NewInMemoryExporter()
	app := worker.WithSpanExporter(worker.New("flows").Register(first, second), exp)
	r := startApp(t, app, miniredisURL(t), nil)

	info, err := r.Workflows.Submit(t.Context(), workflow.Chain(
		workflow.Task(first, tracedPayload{Key: "a"}),
		workflow.Task(second, tracedPayload{Key: "b"}),
	), workflow.SubmitOptions{Name: "traced"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Workflows.Wait(t.Context(), info.ID, 0, nil); err != nil {
		t.Fatal(err)
	}
	var spans tracetest.SpanStubs
	deadline := time.Now().Add(15 * time.Second)
	for {
		spans = exp.GetSpans()
		if p := byName(spans, "test:wf-second process"); p != nil {
			spans = inTrace(spans, p.SpanContext.TraceID().String())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no second step span after 15s: %v", describe(spans))
		}
		time.Sleep(20 * time.Millisecond)
	}
	chain := []string{"test:wf-first publish", "test:wf-first process", "test:wf-second publish", "test:wf-second process"}
	for i, name := range chain {
		s := byName(spans, name)
		if s == nil {
			t.Fatalf("no span %q in the second step's trace: %v", name, describe(spans))
		}
		if i > 0 {
			if parent := byName(spans, chain[i-1]); s.Parent.SpanID() != parent.SpanContext.SpanID() {
				t.Errorf("%s is under %s, want %s; trace: %v", name, s.Parent.SpanID(), chain[i-1], describe(spans))
			}
		}
	}
	for path, name := range map[string]string{"0": "test:wf-first process", "1": "test:wf-second process"} {
		s := byName(spans, name)
		if attr(s, "forgeq.workflow.id") != info.ID || attr(s, "forgeq.workflow.step") != path {
			t.Errorf("%s: workflow %q step %q, want %q %q", name, attr(s, "forgeq.workflow.id"), attr(s, "forgeq.workflow.step"), info.ID, path)
		}
	}
	r.stop(t)
}

// TestAppRequestIDOff checks that with tracing off the request id of the
// HTTP request that enqueued a task still travels into the task (its
// x-request-id header) and its log line, and nothing else is added.
func TestAppRequestIDOff(t *testing.T) {
	t.Parallel()
	typ := tasks.Define("test:untraced", "Does nothing.",
		func(context.Context, tasks.Deps, tracedPayload) ([]byte, error) { return nil, nil },
		asynq.Retention(time.Hour))
	r := startApp(t, worker.New("untraced").Register(typ), miniredisURL(t), nil)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, r.base+"/api/tasks/test:untraced", strings.NewReader(`{"payload":{"key":"k"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", "req-off-1")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	var enq struct{ ID, Queue string }
	if err := json.Unmarshal(body, &enq); err != nil {
		t.Fatal(err)
	}
	info := waitTask(t, r.Inspector, enq.Queue, enq.ID, asynq.TaskStateCompleted)
	if diff := cmp.Diff(map[string]string{"x-request-id": "req-off-1"}, info.Headers); diff != "" {
		t.Errorf("task headers (-want +got):\n%s", diff)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(r.logLines("task done")) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	lines := r.logLines("task done")
	if len(lines) != 1 {
		t.Fatalf("%d task done lines, want 1", len(lines))
	}
	if lines[0]["request_id"] != "req-off-1" || lines[0]["trace_id"] != nil || lines[0]["span_id"] != nil {
		t.Errorf("task log line %v: want request_id req-off-1 and no trace_id or span_id", lines[0])
	}
}

// inTrace returns the spans of trace id.
func inTrace(spans tracetest.SpanStubs, id string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if s.SpanContext.TraceID().String() == id {
			out = append(out, s)
		}
	}
	return out
}

// byName returns the first span named name, nil when there is none.
func byName(spans tracetest.SpanStubs, name string) *tracetest.SpanStub {
	for i := range spans {
		if spans[i].Name == name {
			return &spans[i]
		}
	}
	return nil
}

// attr returns the value of a span's attribute key, "" when absent.
func attr(s *tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// resourceAttr returns the value of a span's resource attribute key.
func resourceAttr(s *tracetest.SpanStub, key string) string {
	for _, kv := range s.Resource.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// describe lists spans as "name (id, parent)" for failure messages.
func describe(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = fmt.Sprintf("%s (%s under %s)", s.Name, s.SpanContext.SpanID(), s.Parent.SpanID())
	}
	return out
}

// grepLines returns the lines of s holding sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
