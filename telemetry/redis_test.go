package telemetry

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/internal/redistest"
)

func TestInstrumentRedis(t *testing.T) {
	p, exp := setupTB(t, map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_on"})
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := p.InstrumentRedis(rdb); err != nil {
		t.Fatal(err)
	}

	// No parent (asynq's polling, background work): no span.
	if err := rdb.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// An unsampled parent: no span either.
	unsampled := trace.ContextWithSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1},
	}))
	if err := rdb.Get(unsampled, "k").Err(); err != nil {
		t.Fatal(err)
	}
	if spans := exp.GetSpans(); len(spans) != 0 {
		t.Fatalf("spans %v for commands outside a sampled trace", spanNames(spans))
	}

	// Under a sampled span: one child span per command and pipeline.
	ctx, parent := p.tracer.Start(t.Context(), "task")
	if err := rdb.Get(ctx, "k").Err(); err != nil {
		t.Fatal(err)
	}
	pipe := rdb.Pipeline()
	pipe.Incr(ctx, "n")
	pipe.Expire(ctx, "n", 0)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	parent.End()

	direct := map[string]bool{}
	for _, s := range exp.GetSpans() {
		if s.Name == "task" {
			continue
		}
		// Connection set-up commands (hello, client setinfo) may show
		// up too, under the command that needed the connection.
		if s.SpanContext.TraceID() != parent.SpanContext().TraceID() || s.SpanKind != trace.SpanKindClient {
			t.Errorf("span %s: trace %v kind %v, want a client span in the task's trace", s.Name, s.SpanContext.TraceID(), s.SpanKind)
		}
		if stmt := attrOf(s.Attributes, "db.statement"); stmt != "" {
			t.Errorf("span %s records the command's arguments: %q", s.Name, stmt)
		}
		if s.Parent.SpanID() == parent.SpanContext().SpanID() {
			direct[s.Name] = true
		}
	}
	for _, name := range []string{"get", "redis.pipeline incr expire"} {
		if !direct[name] {
			t.Errorf("no span %q under the task; spans %v", name, spanNames(exp.GetSpans()))
		}
	}
}

func TestInstrumentRedisOff(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	p, err := Setup(t.Context(), Options{Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.InstrumentRedis(rdb); err != nil {
		t.Errorf("InstrumentRedis with tracing off: %v", err)
	}
}

// TestInstrumentRedisSkipsConnectionSetup checks that the commands
// go-redis sends to set up a connection (hello, auth, select, client
// setname/setinfo, alone or pipelined) make no span under the command that
// needed the connection: some fail by design and would show as errors.
func TestInstrumentRedisSkipsConnectionSetup(t *testing.T) {
	p, exp := setupTB(t, nil)
	opts, err := redis.ParseURL(redistest.URL(t, testDB))
	if err != nil {
		t.Fatal(err)
	}
	// hello, then select and client setname in the init pipeline.
	opts.ClientName = "telemetry-test"
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	if err := p.InstrumentRedis(rdb); err != nil {
		t.Fatal(err)
	}
	ctx, parent := p.tracer.Start(t.Context(), "task")
	// The first command dials and sets the connection up under ctx.
	if err := rdb.Get(ctx, "absent").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("get: %v, want redis.Nil", err)
	}
	pipe := rdb.Pipeline()
	pipe.Incr(ctx, "n")
	pipe.Select(ctx, testDB)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	parent.End()
	if !slices.Contains(spanNames(exp.GetSpans()), "get") {
		t.Errorf("spans %v: no get span", spanNames(exp.GetSpans()))
	}
	for _, s := range exp.GetSpans() {
		name := strings.ToLower(s.Name)
		for _, setup := range []string{"hello", "auth", "client", "select"} {
			if strings.Contains(name, setup) {
				t.Errorf("span %q (status %v): connection set-up commands must not be traced", s.Name, s.Status.Code)
			}
		}
	}
}
