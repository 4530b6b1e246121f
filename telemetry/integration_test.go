package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/forgeq/forgeq/internal/redistest"
)

// testDB is the test database of this package's integration tests.
const testDB = 36

// realRedis returns a client of the package's test database, flushed.
func realRedis(tb testing.TB) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(redistest.URL(tb, testDB))
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	tb.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return rdb
}

// TestMiddlewareAsynqRetries runs tasks through a real asynq server: each
// attempt is a span of its own under the one enqueue span, numbered, with
// "retry" events until it succeeds or is archived, and the handler's
// Redis commands are its children.
func TestMiddlewareAsynqRetries(t *testing.T) {
	rdb := realRedis(t)
	p, exp := setupTB(t, nil)
	if err := p.InstrumentRedis(rdb); err != nil {
		t.Fatal(err)
	}

	var flakyRuns atomic.Int32
	mux := asynq.NewServeMux()
	mux.HandleFunc("test:flaky", func(ctx context.Context, _ *asynq.Task) error {
		if n := flakyRuns.Add(1); n < 3 {
			return fmt.Errorf("attempt %d fails", n)
		}
		return rdb.Set(ctx, "flaky:done", "1", time.Minute).Err()
	})
	mux.HandleFunc("test:doomed", func(context.Context, *asynq.Task) error {
		return errors.New("always fails")
	})
	mux.HandleFunc("test:step", func(context.Context, *asynq.Task) error { return nil })
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              2,
		Queues:                   map[string]int{"default": 1},
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		TaskCheckInterval:        50 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	if err := srv.Start(p.Middleware()(mux)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	client := asynq.NewClientFromRedisClient(rdb)
	enqueue := func(typ string, opts ...asynq.Option) (string, string) {
		ctx, span := StartEnqueue(WithRequestID(t.Context(), "req-"+typ), typ)
		defer span.End()
		h := map[string]string{}
		Inject(ctx, h)
		info, err := client.EnqueueContext(ctx, asynq.NewTaskWithHeaders(typ, nil, h, opts...))
		if err != nil {
			t.Fatal(err)
		}
		return info.ID, span.SpanContext().SpanID().String()
	}
	flakyID, flakyParent := enqueue("test:flaky", asynq.MaxRetry(5))
	doomedID, doomedParent := enqueue("test:doomed", asynq.MaxRetry(1))
	enqueue("test:step", asynq.TaskID("wf:01HZXW:1.0"))

	// The last attempt's span ends after the handler returns.
	waitSpans(t, exp, func(spans tracetest.SpanStubs) bool {
		return countName(spans, "test:flaky process") == 3 && countName(spans, "test:doomed process") == 2 &&
			countName(spans, "test:step process") == 1
	})

	// A workflow step's span names its workflow and step.
	step := processSpans(exp, "test:step")[0]
	if id, path := attrOf(step.Attributes, "forgeq.workflow.id"), attrOf(step.Attributes, "forgeq.workflow.step"); id != "01HZXW" || path != "1.0" {
		t.Errorf("workflow step attributes %q, %q; want 01HZXW, 1.0", id, path)
	}

	for _, tt := range []struct {
		typ, id, parent string
		wantEvents      [][]string
		wantStatus      []codes.Code
	}{
		{"test:flaky", flakyID, flakyParent,
			[][]string{{"exception", EventRetry}, {"exception", EventRetry}, nil},
			[]codes.Code{codes.Error, codes.Error, codes.Unset}},
		{"test:doomed", doomedID, doomedParent,
			[][]string{{"exception", EventRetry}, {"exception", EventArchived}},
			[]codes.Code{codes.Error, codes.Error}},
	} {
		spans := processSpans(exp, tt.typ)
		for i, s := range spans {
			if got := attrOf(s.Attributes, "forgeq.task.attempt"); got != fmt.Sprint(i+1) {
				t.Errorf("%s span %d: attempt %s, want %d", tt.typ, i, got, i+1)
			}
			if s.Parent.SpanID().String() != tt.parent {
				t.Errorf("%s attempt %d: parent %s, want the enqueue span %s", tt.typ, i+1, s.Parent.SpanID(), tt.parent)
			}
			for k, want := range map[string]string{
				"messaging.destination.name": "default", "messaging.message.id": tt.id, "forgeq.request_id": "req-" + tt.typ,
			} {
				if got := attrOf(s.Attributes, k); got != want {
					t.Errorf("%s attempt %d: %s = %q, want %q", tt.typ, i+1, k, got, want)
				}
			}
			if got := eventNames(s); fmt.Sprint(got) != fmt.Sprint(tt.wantEvents[i]) {
				t.Errorf("%s attempt %d: events %v, want %v", tt.typ, i+1, got, tt.wantEvents[i])
			}
			if s.Status.Code != tt.wantStatus[i] {
				t.Errorf("%s attempt %d: status %v, want %v", tt.typ, i+1, s.Status.Code, tt.wantStatus[i])
			}
		}
	}

	// The successful attempt's SET is its child; asynq's own commands
	// (outside any trace) made no spans.
	last := processSpans(exp, "test:flaky")[2]
	found := false
	for _, s := range exp.GetSpans() {
		if s.Name == "set" && s.Parent.SpanID() == last.SpanContext.SpanID() {
			found = true
		}
		if s.SpanContext.TraceID() != last.SpanContext.TraceID() && s.SpanContext.TraceID() != processSpans(exp, "test:doomed")[0].SpanContext.TraceID() &&
			s.SpanContext.TraceID() != step.SpanContext.TraceID() {
			t.Errorf("span %q outside the tasks' traces: asynq's background commands must not be traced", s.Name)
		}
	}
	if !found {
		t.Errorf("no set span under the last flaky attempt; spans %v", spanNames(exp.GetSpans()))
	}
}

// waitSpans waits up to 20s for the exported spans to satisfy ok.
func waitSpans(tb testing.TB, exp *tracetest.InMemoryExporter, ok func(tracetest.SpanStubs) bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok(exp.GetSpans()) {
		if time.Now().After(deadline) {
			tb.Fatalf("spans %v after 20s", spanNames(exp.GetSpans()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countName returns how many spans are named name.
func countName(spans tracetest.SpanStubs, name string) int {
	n := 0
	for _, s := range spans {
		if s.Name == name {
			n++
		}
	}
	return n
}
