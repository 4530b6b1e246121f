package worker

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/telemetry"
)

// TestCancelLogCarriesTrace checks that the cancellation middleware's
// lines about a task name the task's trace and request, as its handler's
// lines do: trace_id, span_id and request_id from the task's ctx.
func TestCancelLogCarriesTrace(t *testing.T) {
	t.Parallel()
	b := setupCancels(t)
	b.c.ignoredAfter = time.Nanosecond
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := telemetry.WithRequestID(trace.ContextWithSpanContext(context.Background(), sc), "req-9")
	started, release := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- b.c.middleware(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
			close(started)
			<-release // ignores its ctx
			return nil
		})).ProcessTask(ctx, asynq.NewTask("t:x", nil))
	}()
	<-started
	b.c.signal(control.Request{Queue: "q", ID: "t-1", By: "alice"})
	e := waitLog(t, b.logs, "cancelled task's handler ignores its context")
	close(release)
	wantCancelled(t, <-errc, "alice")
	f := e.ContextMap()
	if f["trace_id"] != sc.TraceID().String() || f["span_id"] != sc.SpanID().String() || f["request_id"] != "req-9" {
		t.Errorf("log fields %v: want trace_id %s, span_id %s and request_id req-9", f, sc.TraceID(), sc.SpanID())
	}
}
