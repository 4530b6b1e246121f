package telemetry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// postponed is an error like tasks.PostponeError.
type postponed struct{ d time.Duration }

func (e *postponed) Error() string            { return "postponed for " + e.d.String() }
func (e *postponed) Postponed() time.Duration { return e.d }

// enqueued returns a task of type typ whose headers carry the trace context
// of a new enqueue span under ctx, and that span's context.
func enqueued(ctx context.Context, typ string) (*asynq.Task, trace.SpanContext) {
	ctx, span := StartEnqueue(ctx, typ)
	defer span.End()
	h := map[string]string{}
	Inject(ctx, h)
	return asynq.NewTaskWithHeaders(typ, nil, h), span.SpanContext()
}

// processSpans returns the spans named "<typ> process".
func processSpans(exp *tracetest.InMemoryExporter, typ string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range exp.GetSpans() {
		if s.Name == typ+" process" {
			out = append(out, s)
		}
	}
	return out
}

// eventNames returns the names of a span's events.
func eventNames(s tracetest.SpanStub) []string {
	var names []string
	for _, e := range s.Events {
		names = append(names, e.Name)
	}
	return names
}

func TestMiddlewareSpan(t *testing.T) {
	p, exp := setupTB(t, nil)

	task, parent := enqueued(WithRequestID(t.Context(), "req-7"), "email:deliver")
	var inside context.Context
	h := p.Middleware()(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		inside = ctx
		return nil
	}))
	if err := h.ProcessTask(t.Context(), task); err != nil {
		t.Fatal(err)
	}
	spans := processSpans(exp, "email:deliver")
	if len(spans) != 1 {
		t.Fatalf("spans %v, want one email:deliver process", spanNames(exp.GetSpans()))
	}
	s := spans[0]
	if s.Parent.SpanID() != parent.SpanID() || s.SpanContext.TraceID() != parent.TraceID() {
		t.Errorf("process span's parent %v, want the enqueue span %v", s.Parent, parent)
	}
	if s.SpanKind != trace.SpanKindConsumer {
		t.Errorf("kind %v, want consumer", s.SpanKind)
	}
	for k, want := range map[string]string{
		"messaging.system": "asynq", "forgeq.task.type": "email:deliver", "forgeq.task.attempt": "1", "forgeq.request_id": "req-7",
	} {
		if got := attrOf(s.Attributes, k); got != want {
			t.Errorf("attribute %s = %q, want %q", k, got, want)
		}
	}
	if sc := trace.SpanContextFromContext(inside); sc.SpanID() != s.SpanContext.SpanID() {
		t.Errorf("the handler's ctx holds span %v, want the process span", sc.SpanID())
	}
	if id, _ := RequestID(inside); id != "req-7" {
		t.Errorf("the handler's request id = %q, want req-7", id)
	}
	if s.Status.Code != codes.Unset || len(s.Events) != 0 {
		t.Errorf("a task done: status %v, events %v", s.Status, eventNames(s))
	}
}

func TestMiddlewareOutcomes(t *testing.T) {
	p, exp := setupTB(t, nil)

	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tt := range []struct {
		name       string
		giveCtx    context.Context
		giveErr    error
		wantStatus codes.Code
		wantEvents []string
	}{
		{"done", t.Context(), nil, codes.Unset, nil},
		{"retry", t.Context(), errors.New("smtp down"), codes.Error, []string{"exception", EventRetry}},
		{"skip retry", t.Context(), fmt.Errorf("bad payload: %w", asynq.SkipRetry), codes.Error, []string{"exception", EventArchived}},
		{"postponed", t.Context(), fmt.Errorf("limit: %w", &postponed{time.Second}), codes.Unset, []string{EventPostponed}},
		{"revoked", t.Context(), asynq.RevokeTask, codes.Unset, []string{EventRevoked}},
		{"interrupted", cancelled, context.Canceled, codes.Error, []string{"exception", EventInterrupted}},
		{"returned after ctx ended", cancelled, nil, codes.Error, []string{EventInterrupted}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			exp.Reset()
			typ := "test:" + tt.name
			task, _ := enqueued(t.Context(), typ)
			h := p.Middleware()(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return tt.giveErr }))
			if err := h.ProcessTask(tt.giveCtx, task); !errors.Is(err, tt.giveErr) {
				t.Errorf("ProcessTask = %v, want the handler's %v", err, tt.giveErr)
			}
			spans := processSpans(exp, typ)
			if len(spans) != 1 {
				t.Fatalf("spans %v, want one process span", spanNames(exp.GetSpans()))
			}
			if spans[0].Status.Code != tt.wantStatus {
				t.Errorf("status %v, want %v", spans[0].Status, tt.wantStatus)
			}
			if diff := cmp.Diff(tt.wantEvents, eventNames(spans[0])); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMiddlewarePanic(t *testing.T) {
	p, exp := setupTB(t, nil)
	task, _ := enqueued(t.Context(), "test:panic")
	h := p.Middleware()(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { panic("boom") }))
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the handler's panic to go on up", r)
			}
		}()
		_ = h.ProcessTask(t.Context(), task)
	}()
	spans := processSpans(exp, "test:panic")
	if len(spans) != 1 || spans[0].Status.Code != codes.Error || !spans[0].EndTime.After(spans[0].StartTime) {
		t.Fatalf("spans %v: want one ended process span with status Error", spanNames(exp.GetSpans()))
	}
}

// TestMiddlewareOff checks that with tracing off the middleware only
// passes the request id on.
func TestMiddlewareOff(t *testing.T) {
	t.Parallel()
	var p *Provider
	for _, tt := range []struct {
		name    string
		give    map[string]string
		wantID  string
		wantHas bool
	}{
		{"no headers", nil, "", false},
		{"request id", map[string]string{HeaderRequestID: "abc", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "abc", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var inside context.Context
			h := p.Middleware()(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
				inside = ctx
				return nil
			}))
			if err := h.ProcessTask(t.Context(), asynq.NewTaskWithHeaders("x", nil, tt.give)); err != nil {
				t.Fatal(err)
			}
			id, ok := RequestID(inside)
			if id != tt.wantID || ok != tt.wantHas {
				t.Errorf("RequestID = %q, %v; want %q, %v", id, ok, tt.wantID, tt.wantHas)
			}
			if trace.SpanContextFromContext(inside).IsValid() {
				t.Errorf("tracing off put a span context in the handler's ctx")
			}
		})
	}
}

func TestWorkflowStep(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		give     string
		wantID   string
		wantStep string
		wantOK   bool
	}{
		{"wf:01HZX:0", "01HZX", "0", true},
		{"wf:abc:1.2.0", "abc", "1.2.0", true},
		{"wf:abc", "", "", false},
		{"wf::0", "", "", false},
		{"wf:abc:", "", "", false},
		{"6b1c0f4e-uuid", "", "", false},
	} {
		id, step, ok := workflowStep(tt.give)
		if id != tt.wantID || step != tt.wantStep || ok != tt.wantOK {
			t.Errorf("workflowStep(%q) = %q, %q, %v; want %q, %q, %v", tt.give, id, step, ok, tt.wantID, tt.wantStep, tt.wantOK)
		}
	}
}
