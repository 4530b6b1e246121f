package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
)

// clientFixture is a tasks.Client on miniredis with an events publisher,
// and a tracer provider recording into an in-memory exporter (not
// installed globally: the spans continue the caller's).
type clientFixture struct {
	rdb  *redis.Client
	insp *asynq.Inspector
	c    *tasks.Client
	pub  *events.Publisher
	exp  *tracetest.InMemoryExporter
	tp   *sdktrace.TracerProvider
}

func newClientFixture(t *testing.T) *clientFixture {
	t.Helper()
	// As a program that set OpenTelemetry up on its own does (Setup
	// installs the same propagator).
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	pub := events.NewPublisher(rdb, events.PublisherOptions{})
	t.Cleanup(func() { _ = pub.Close() })
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &clientFixture{
		rdb: rdb, insp: asynq.NewInspectorFromRedisClient(rdb),
		c:   tasks.NewClient(asynq.NewClientFromRedisClient(rdb), tasks.ClientOptions{Events: pub}),
		pub: pub, exp: exp, tp: tp,
	}
}

// firstEvent returns the first event of task id in queue's stream.
func (f *clientFixture) firstEvent(t *testing.T, queue, id string) events.Event {
	t.Helper()
	if err := f.pub.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for e, err := range events.NewClient(f.rdb, events.ClientOptions{}).Watch(ctx, queue, id, "0") {
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	t.Fatalf("no event of %s in queue %s", id, queue)
	return events.Event{}
}

// streamLen returns how many entries queue's stream holds: events
// written apart (a Flush after each) have one each.
func (f *clientFixture) streamLen(t *testing.T, queue string) int64 {
	t.Helper()
	if err := f.pub.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	n, err := f.rdb.XLen(t.Context(), events.StreamKey(queue)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestClientCarriesTraceAndRequestID checks what a handler relies on: the
// task enqueued under a span and a request id carries both in its headers,
// the enqueue has a producer span of its own under the caller's, and an
// enqueued event names the task and its trace.
func TestClientCarriesTraceAndRequestID(t *testing.T) {
	f := newClientFixture(t)
	ctx, parent := f.tp.Tracer("test").Start(t.Context(), "POST /api/tasks")
	ctx = telemetry.WithRequestID(ctx, "req-42")
	task, err := tasks.DataProcess.NewTask(tasks.ProcessData{Key: "k", Work: 1})
	if err != nil {
		t.Fatal(err)
	}
	info, err := f.c.EnqueueContext(ctx, task, asynq.Queue("q1"))
	if err != nil {
		t.Fatal(err)
	}
	parent.End()

	ti, err := f.insp.GetTaskInfo("q1", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := ti.Headers[telemetry.HeaderRequestID]; got != "req-42" {
		t.Errorf("header %s = %q, want req-42", telemetry.HeaderRequestID, got)
	}
	if ti.Headers["traceparent"] == "" {
		t.Fatalf("no traceparent header in %v", ti.Headers)
	}

	spans := f.exp.GetSpans()
	var enq *tracetest.SpanStub
	for i := range spans {
		if spans[i].SpanKind == trace.SpanKindProducer {
			enq = &spans[i]
		}
	}
	if enq == nil {
		t.Fatalf("no producer span among %d spans", len(spans))
	}
	if enq.Parent.SpanID() != parent.SpanContext().SpanID() || enq.SpanContext.TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("enqueue span's parent = %v, want the caller's span %v", enq.Parent.SpanID(), parent.SpanContext().SpanID())
	}
	attrs := map[attribute.Key]string{}
	for _, kv := range enq.Attributes {
		attrs[kv.Key] = kv.Value.Emit()
	}
	if attrs["messaging.destination.name"] != "q1" || attrs["messaging.message.id"] != info.ID {
		t.Errorf("enqueue span attributes %v: want queue q1 and id %s", attrs, info.ID)
	}
	// The handler continues the enqueue span, not the caller's.
	hctx := telemetry.Extract(context.Background(), ti.Headers)
	if got := trace.SpanContextFromContext(hctx).SpanID(); got != enq.SpanContext.SpanID() {
		t.Errorf("the task carries span %v, want the enqueue span %v", got, enq.SpanContext.SpanID())
	}

	if n := f.streamLen(t, "q1"); n != 1 {
		t.Fatalf("%d events in the stream, want 1", n)
	}
	e := f.firstEvent(t, "q1", info.ID)
	if e.Kind != events.Enqueued || e.Type != tasks.TypeProcessData {
		t.Errorf("event %+v, want an enqueued event of type %s", e, tasks.TypeProcessData)
	}
	if e.TraceID != parent.SpanContext().TraceID().String() {
		t.Errorf("enqueued event trace %q, want %s", e.TraceID, parent.SpanContext().TraceID())
	}
}

// TestClientFailedEnqueue checks that a refused enqueue returns asynq's
// error, marks the span failed and publishes nothing.
func TestClientFailedEnqueue(t *testing.T) {
	f := newClientFixture(t)
	ctx, parent := f.tp.Tracer("test").Start(t.Context(), "caller")
	defer parent.End()
	for i := range 2 {
		task, err := tasks.DataProcess.NewTask(tasks.ProcessData{Key: "k", Work: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.c.EnqueueContext(ctx, task, asynq.Queue("q2"), asynq.TaskID("same"))
		if i == 1 && !errors.Is(err, asynq.ErrTaskIDConflict) {
			t.Fatalf("second enqueue of id same: %v, want asynq.ErrTaskIDConflict", err)
		}
	}
	var failed int
	for _, s := range f.exp.GetSpans() {
		if s.SpanKind == trace.SpanKindProducer && s.Status.Code.String() == "Error" {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d failed enqueue spans, want 1", failed)
	}
	if n := f.streamLen(t, "q2"); n != 1 {
		t.Errorf("%d events, want 1 (the first enqueue only)", n)
	}
}

// TestClientUntracedTask checks that without a span or request id in ctx
// the task carries no trace headers, and that a task built without a
// header map (asynq.NewTask) is still enqueued.
func TestClientUntracedTask(t *testing.T) {
	f := newClientFixture(t)
	task, err := tasks.DataProcess.NewTask(tasks.ProcessData{Key: "k", Work: 1})
	if err != nil {
		t.Fatal(err)
	}
	info, err := f.c.EnqueueContext(t.Context(), task, asynq.Queue("q3"))
	if err != nil {
		t.Fatal(err)
	}
	ti, err := f.insp.GetTaskInfo("q3", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ti.Headers) != 0 {
		t.Errorf("untraced task headers %v, want none", ti.Headers)
	}
	if _, err := f.c.EnqueueContext(t.Context(), asynq.NewTask("plain", nil), asynq.Queue("q3")); err != nil {
		t.Fatal(err)
	}
	if len(f.exp.GetSpans()) != 0 {
		t.Errorf("%d spans without tracing, want none", len(f.exp.GetSpans()))
	}
}

// TestHandlerLoggerCarriesRequest checks that the logger a handler gets
// names the request (and trace) its task came from.
func TestHandlerLoggerCarriesRequest(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	typ := tasks.Define("test:logs", "logs a line", func(ctx context.Context, deps tasks.Deps, p struct{}) ([]byte, error) {
		deps.Logger.Info("handler line")
		return nil, nil
	})
	h := typ.Definition().Handler(tasks.Deps{Logger: zap.New(core)})
	task, err := typ.NewTask(struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ProcessTask(telemetry.WithRequestID(t.Context(), "req-7"), task); err != nil {
		t.Fatal(err)
	}
	if err := h.ProcessTask(t.Context(), task); err != nil {
		t.Fatal(err)
	}
	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d log lines, want 2", len(entries))
	}
	if got := entries[0].ContextMap()["request_id"]; got != "req-7" {
		t.Errorf("request_id of the handler's line = %v, want req-7", got)
	}
	if _, ok := entries[1].ContextMap()["request_id"]; ok {
		t.Errorf("a task without a request id logged one: %v", entries[1].ContextMap())
	}
}

// TestClientConcurrentEnqueueOfOneTask enqueues one task value from many
// goroutines at once: asynq hands out the task's own header map, so the
// writes of the trace context must not race (run with -race; without the
// client's lock this is a concurrent map write) and each enqueued task
// carries its own caller's request id.
func TestClientConcurrentEnqueueOfOneTask(t *testing.T) {
	f := newClientFixture(t)
	task, err := tasks.DataProcess.NewTask(tasks.ProcessData{Key: "k", Work: 1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, span := f.tp.Tracer("test").Start(t.Context(), "caller")
			defer span.End()
			ctx = telemetry.WithRequestID(ctx, fmt.Sprintf("req-%d", i))
			info, err := f.c.EnqueueContext(ctx, task, asynq.Queue("q4"))
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = info.ID
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("enqueue %d: %v", i, errs[i])
		}
		ti, err := f.insp.GetTaskInfo("q4", ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ti.Headers[telemetry.HeaderRequestID], fmt.Sprintf("req-%d", i); got != want {
			t.Errorf("task %d carries request id %q, want %q", i, got, want)
		}
		if ti.Headers["traceparent"] == "" {
			t.Errorf("task %d carries no traceparent: %v", i, ti.Headers)
		}
	}
}

// TestClientReusedTaskDropsStaleHeaders enqueues one task value twice, the
// first time with a trace, baggage and a request id, the second time with
// none: the second task must carry none of the first's, and keeps a header
// of the caller's own.
func TestClientReusedTaskDropsStaleHeaders(t *testing.T) {
	f := newClientFixture(t)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	task := asynq.NewTaskWithHeaders("test:reuse", nil, map[string]string{"x-own": "kept"})
	ctx, span := f.tp.Tracer("test").Start(t.Context(), "caller")
	defer span.End()
	member, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	ctx = baggage.ContextWithBaggage(telemetry.WithRequestID(ctx, "req-1"), bag)
	first, err := f.c.EnqueueContext(ctx, task, asynq.Queue("q5"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.c.EnqueueContext(t.Context(), task, asynq.Queue("q5"))
	if err != nil {
		t.Fatal(err)
	}
	ti, err := f.insp.GetTaskInfo("q5", first.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"traceparent", "baggage", telemetry.HeaderRequestID} {
		if ti.Headers[k] == "" {
			t.Fatalf("the first task has no %s header: %v", k, ti.Headers)
		}
	}
	ti, err = f.insp.GetTaskInfo("q5", second.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"x-own": "kept"}, ti.Headers); diff != "" {
		t.Errorf("the second task's headers (-want +got):\n%s", diff)
	}
}

// TestBatchSpanNames checks the producer span of a batch: a batch of one
// (the web's and the CLI's dedup enqueue) is named and described like a
// single enqueue, a batch of one type is named after it, a mixed one
// "batch publish".
func TestBatchSpanNames(t *testing.T) {
	f := newClientFixture(t)
	item := func(typ string, p tasks.ProcessData) tasks.BatchItem {
		t.Helper()
		it, err := tasks.DataProcess.Item(p, asynq.Queue("q6"))
		if err != nil {
			t.Fatal(err)
		}
		it.Type = typ
		return it
	}
	ctx, parent := f.tp.Tracer("test").Start(t.Context(), "caller")
	one, err := f.c.EnqueueBatch(ctx, f.rdb, []tasks.BatchItem{item(tasks.TypeProcessData, tasks.ProcessData{Key: "a", Work: 1})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.EnqueueBatch(ctx, f.rdb, []tasks.BatchItem{
		item(tasks.TypeProcessData, tasks.ProcessData{Key: "b", Work: 1}),
		item(tasks.TypeProcessData, tasks.ProcessData{Key: "c", Work: 1}),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.EnqueueBatch(ctx, f.rdb, []tasks.BatchItem{
		item(tasks.TypeProcessData, tasks.ProcessData{Key: "d", Work: 1}),
		item("test:other", tasks.ProcessData{Key: "e", Work: 1}),
	}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	type span struct {
		Name         string
		Queue, ID    string
		MessageCount string
	}
	var got []span
	for _, s := range f.exp.GetSpans() {
		if s.SpanKind != trace.SpanKindProducer {
			continue
		}
		sp := span{Name: s.Name}
		for _, kv := range s.Attributes {
			switch kv.Key {
			case "messaging.destination.name":
				sp.Queue = kv.Value.Emit()
			case "messaging.message.id":
				sp.ID = kv.Value.Emit()
			case "messaging.batch.message_count":
				sp.MessageCount = kv.Value.Emit()
			}
		}
		got = append(got, sp)
	}
	want := []span{
		{Name: tasks.TypeProcessData + " publish", Queue: "q6", ID: one[0].ID},
		{Name: tasks.TypeProcessData + " publish", MessageCount: "2"},
		{Name: "batch publish", MessageCount: "2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("batch spans (-want +got):\n%s", diff)
	}
}
