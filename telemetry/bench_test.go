package telemetry

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkTaskPath measures what tracing adds to the enqueue and
// processing of one task, without Redis: "bare" is a handler call alone;
// "off" adds what every task goes through with tracing off (StartEnqueue,
// Inject into the task's headers, ending the span, the worker's
// Middleware); "off-request-id" the same for a task enqueued by an HTTP
// request (a request id to carry); "on" the same with tracing on and a
// no-op exporter, for scale.
func BenchmarkTaskPath(b *testing.B) {
	handler := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })
	path := func(b *testing.B, p *Provider, ctx context.Context) {
		h := p.Middleware()(handler)
		b.ReportAllocs()
		for b.Loop() {
			task := asynq.NewTaskWithHeaders("bench:task", nil, map[string]string{})
			ectx, span := StartEnqueue(ctx, task.Type())
			Inject(ectx, task.Headers())
			span.End()
			if err := h.ProcessTask(ctx, task); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("bare", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			task := asynq.NewTaskWithHeaders("bench:task", nil, map[string]string{})
			if err := handler.ProcessTask(ctx, task); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("off", func(b *testing.B) {
		p, err := Setup(context.Background(), Options{Getenv: envOf(nil)})
		if err != nil || p.Enabled() {
			b.Fatalf("Setup: %v, enabled %v", err, p.Enabled())
		}
		path(b, p, context.Background())
	})
	b.Run("off-request-id", func(b *testing.B) {
		p, err := Setup(context.Background(), Options{Getenv: envOf(nil)})
		if err != nil {
			b.Fatal(err)
		}
		path(b, p, WithRequestID(context.Background(), "4f1c2a9b0e7d-1"))
	})
	b.Run("on", func(b *testing.B) {
		p, err := Setup(context.Background(), Options{Getenv: envOf(nil), Exporter: tracetest.NewNoopExporter()})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = p.Shutdown(context.Background()) }()
		path(b, p, context.Background())
	})
}
