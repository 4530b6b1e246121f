package otlptest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/internal/otlptest"
)

// provider returns a tracer provider of service exporting to r through
// the SDK's OTLP/HTTP exporter with opts; the caller shuts it down, which
// flushes.
func provider(tb testing.TB, r *otlptest.Receiver, service string, opts ...otlptracehttp.Option) *sdktrace.TracerProvider {
	tb.Helper()
	exp, err := otlptracehttp.New(context.Background(),
		append([]otlptracehttp.Option{otlptracehttp.WithEndpoint(r.Endpoint()), otlptracehttp.WithInsecure()}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", service), attribute.String("deployment.environment", "test"))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
}

// shutdown flushes and stops tp.
func shutdown(tb testing.TB, tp *sdktrace.TracerProvider) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		tb.Fatalf("shut down the tracer provider: %v", err)
	}
}

// exported is what the tests compare of a received span.
type exported struct {
	Service, Scope, Name string
	Kind                 trace.SpanKind
	Attrs                map[string]any
	Events               []string
	Status               codes.Code
	StatusMessage        string
	Links                int
}

func project(s otlptest.Span) exported {
	e := exported{
		Service: s.Service, Scope: s.Scope, Name: s.Name, Kind: s.Kind, Attrs: s.Attrs,
		Status: s.Status, StatusMessage: s.StatusMessage, Links: len(s.Links),
	}
	for _, ev := range s.Events {
		e.Events = append(e.Events, ev.Name)
	}
	return e
}

func TestReceiverSDKExporter(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveOpts func(*otlptest.Receiver) []otlptracehttp.Option
	}{
		{name: "plain", giveOpts: func(*otlptest.Receiver) []otlptracehttp.Option { return nil }},
		{name: "gzip", giveOpts: func(*otlptest.Receiver) []otlptracehttp.Option {
			return []otlptracehttp.Option{otlptracehttp.WithCompression(otlptracehttp.GzipCompression)}
		}},
		{name: "traces URL", giveOpts: func(r *otlptest.Receiver) []otlptracehttp.Option {
			// As OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: the full URL, used as it is.
			return []otlptracehttp.Option{otlptracehttp.WithEndpointURL(r.TracesURL())}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			r := otlptest.NewReceiver(t)
			tp := provider(t, r, "web", tt.giveOpts(r)...)
			tr := tp.Tracer("forgeq/test")

			ctx, server := tr.Start(context.Background(), "POST /api/tasks/{type}",
				trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.Int("http.response.status_code", 202), attribute.Bool("ok", true)))
			other := trace.SpanContextFromContext(ctx) // a link to itself is enough
			_, producer := tr.Start(ctx, "data:process send",
				trace.WithSpanKind(trace.SpanKindProducer),
				trace.WithLinks(trace.Link{SpanContext: other}),
				trace.WithAttributes(attribute.String("messaging.destination.name", "default"),
					attribute.StringSlice("tags", []string{"a", "b"}), attribute.Float64("ratio", 0.5)))
			producer.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", 2)))
			producer.SetStatus(codes.Error, "enqueue: boom")
			producer.End()
			server.End()
			shutdown(t, tp)

			got := r.WaitForSpans(t, 2, 10*time.Second)
			if len(got) != 2 {
				t.Fatalf("%d spans, want 2:\n%s", len(got), got)
			}
			s, ok := got.Named("POST /api/tasks/{type}"), got.Named("data:process send")
			if len(s) != 1 || len(ok) != 1 {
				t.Fatalf("spans by name: %d server, %d producer:\n%s", len(s), len(ok), got)
			}
			srv, prod := s[0], ok[0]

			want := []exported{
				{
					Service: "web", Scope: "forgeq/test", Name: "POST /api/tasks/{type}", Kind: trace.SpanKindServer,
					Attrs: map[string]any{"http.response.status_code": int64(202), "ok": true},
				},
				{
					Service: "web", Scope: "forgeq/test", Name: "data:process send", Kind: trace.SpanKindProducer,
					Attrs: map[string]any{
						"messaging.destination.name": "default",
						"tags":                       []any{"a", "b"},
						"ratio":                      0.5,
					},
					Events: []string{"retry"}, Status: codes.Error, StatusMessage: "enqueue: boom", Links: 1,
				},
			}
			if diff := cmp.Diff(want, []exported{project(srv), project(prod)}); diff != "" {
				t.Errorf("spans (-want +got):\n%s", diff)
			}

			sc := trace.SpanContextFromContext(ctx)
			if srv.TraceID != sc.TraceID().String() || srv.SpanID != sc.SpanID().String() || srv.ParentSpanID != "" {
				t.Errorf("server span ids %s, want trace %s span %s, no parent", srv, sc.TraceID(), sc.SpanID())
			}
			if !prod.ChildOf(srv) || !got.HasAncestor(prod, srv) {
				t.Errorf("producer is not a child of the server span:\n%s", got)
			}
			if p, ok := got.Parent(prod); !ok || p.SpanID != srv.SpanID {
				t.Errorf("Parent(producer) = %v, %v; want the server span", p, ok)
			}
			if srv.Resource["deployment.environment"] != "test" {
				t.Errorf("resource %v: no deployment.environment", srv.Resource)
			}
			if !prod.HasEvent("retry") || prod.Events[0].Attrs["attempt"] != int64(2) {
				t.Errorf("producer events %+v, want retry with attempt 2", prod.Events)
			}
			if l := prod.Links; len(l) != 1 || l[0].SpanID != srv.SpanID || l[0].TraceID != srv.TraceID {
				t.Errorf("producer links %+v, want one to the server span", l)
			}
			if srv.End.Before(srv.Start) || srv.Start.IsZero() {
				t.Errorf("server span times %v .. %v", srv.Start, srv.End)
			}
			if v, ok := prod.Attr("ratio"); !ok || v != "0.5" {
				t.Errorf(`Attr("ratio") = %q, %v`, v, ok)
			}
			if n := r.Requests(); n < 1 {
				t.Errorf("%d requests", n)
			}
			if errs := r.Errors(); len(errs) != 0 {
				t.Errorf("refused requests: %v", errs)
			}
		})
	}
}

func TestReceiverTwoServices(t *testing.T) {
	t.Parallel()

	r := otlptest.NewReceiver(t)
	web, worker := provider(t, r, "web"), provider(t, r, "worker")

	ctx, send := web.Tracer("t").Start(context.Background(), "send", trace.WithSpanKind(trace.SpanKindProducer))
	// The worker continues the trace from the span context, as it would
	// from a task's traceparent header.
	remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.SpanContextFromContext(ctx))
	wctx, process := worker.Tracer("t").Start(remote, "process", trace.WithSpanKind(trace.SpanKindConsumer))
	_, get := worker.Tracer("redis").Start(wctx, "get", trace.WithSpanKind(trace.SpanKindClient))
	get.End()
	process.End()
	send.End()
	// Unrelated trace.
	_, other := web.Tracer("t").Start(context.Background(), "other")
	other.End()
	shutdown(t, web)
	shutdown(t, worker)

	got := r.WaitForNames(t, 10*time.Second, "send", "process", "get", "other")
	s, p, g := got.Named("send")[0], got.Named("process")[0], got.Named("get")[0]
	if !p.ChildOf(s) || !g.ChildOf(p) || g.ChildOf(s) || !got.HasAncestor(g, s) || got.HasAncestor(s, g) {
		t.Errorf("parentage wrong:\n%s", got)
	}
	tr := got.InTrace(s.TraceID)
	if len(tr) != 3 {
		t.Errorf("trace %s has %d spans, want 3:\n%s", s.TraceID, len(tr), got)
	}
	if diff := cmp.Diff([]string{"web", "worker"}, tr.Services()); diff != "" {
		t.Errorf("services of the trace (-want +got):\n%s", diff)
	}
	if n := len(got.TraceIDs()); n != 2 {
		t.Errorf("%d traces, want 2", n)
	}
	if kids := tr.Children(p); len(kids) != 1 || kids[0].Name != "get" {
		t.Errorf("children of process: %v", kids)
	}
	tree := got.String()
	for _, want := range []string{
		"trace " + s.TraceID,
		`- [web] producer "send"`,
		`    - [worker] consumer "process"`,
		`      - [worker] client "get"`,
	} {
		if !strings.Contains(tree, want) {
			t.Errorf("tree lacks %q:\n%s", want, tree)
		}
	}
}

// otlpJSON is an OTLP/JSON request as the specification writes it: ids in
// hex, enums as numbers, 64-bit integers as strings.
const otlpJSON = `{"resourceSpans":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cli"}}]},
  "scopeSpans":[{"scope":{"name":"forgeq"},"spans":[{
    "traceId":"5b8efff798038103d269b633813fc60c",
    "spanId":"eee19b7ec3c1b174",
    "parentSpanId":"eee19b7ec3c1b173",
    "name":"enqueue","kind":4,
    "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
    "attributes":[{"key":"n","value":{"intValue":"3"}}],
    "status":{"code":2,"message":"no"}
  }]}]}]}`

func TestReceiverJSON(t *testing.T) {
	t.Parallel()

	r := otlptest.NewReceiver(t)
	resp, err := http.Post(r.TracesURL(), "application/json", strings.NewReader(otlpJSON))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST JSON: %d %s, want 200 application/json; errors %v", resp.StatusCode, resp.Header.Get("Content-Type"), r.Errors())
	}
	s := r.WaitForSpan(t, 5*time.Second, otlptest.Named("enqueue"))
	want := otlptest.Span{
		Service: "cli", Resource: map[string]any{"service.name": "cli"}, Scope: "forgeq",
		TraceID: "5b8efff798038103d269b633813fc60c", SpanID: "eee19b7ec3c1b174", ParentSpanID: "eee19b7ec3c1b173",
		Name: "enqueue", Kind: trace.SpanKindProducer,
		Start: time.Unix(1544712660, 0), End: time.Unix(1544712661, 0),
		Attrs:  map[string]any{"n": int64(3)},
		Status: codes.Error, StatusMessage: "no",
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("span (-want +got):\n%s", diff)
	}
}

func TestReceiverRefuses(t *testing.T) {
	t.Parallel()

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("not protobuf \xff\xff\xff"))
	zw.Close()

	tests := []struct {
		name        string
		giveMethod  string
		givePath    string
		giveType    string
		giveEncode  string
		giveBody    []byte
		wantStatus  int
		wantErrPart string
	}{
		{"wrong path", http.MethodPost, "/v1/metrics", "application/x-protobuf", "", nil, http.StatusNotFound, "not the traces endpoint"},
		{"GET", http.MethodGet, otlptest.TracesPath, "", "", nil, http.StatusMethodNotAllowed, "want POST"},
		{"content type", http.MethodPost, otlptest.TracesPath, "text/plain", "", []byte("x"), http.StatusUnsupportedMediaType, "content type"},
		{"bad protobuf", http.MethodPost, otlptest.TracesPath, "application/x-protobuf", "gzip", gz.Bytes(), http.StatusBadRequest, "decode application/x-protobuf"},
		{"bad gzip", http.MethodPost, otlptest.TracesPath, "application/x-protobuf", "gzip", []byte("plain"), http.StatusBadRequest, "gzip"},
		{"encoding", http.MethodPost, otlptest.TracesPath, "application/x-protobuf", "br", []byte("x"), http.StatusBadRequest, "content encoding"},
		{"bad JSON id", http.MethodPost, otlptest.TracesPath, "application/json", "", []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}`), http.StatusBadRequest, "not hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := otlptest.NewReceiver(t)
			req, err := http.NewRequest(tt.giveMethod, r.URL()+tt.givePath, bytes.NewReader(tt.giveBody))
			if err != nil {
				t.Fatal(err)
			}
			if tt.giveType != "" {
				req.Header.Set("Content-Type", tt.giveType)
			}
			if tt.giveEncode != "" {
				req.Header.Set("Content-Encoding", tt.giveEncode)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			errs := r.Errors()
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.wantErrPart) {
				t.Errorf("errors %v, want one with %q", errs, tt.wantErrPart)
			}
			if r.Requests() != 1 || len(r.Spans()) != 0 {
				t.Errorf("%d requests, %d spans; want 1, 0", r.Requests(), len(r.Spans()))
			}
			r.Reset()
			if r.Requests() != 0 || len(r.Errors()) != 0 {
				t.Errorf("after Reset: %d requests, errors %v", r.Requests(), r.Errors())
			}
		})
	}
}

// fatalTB records a Fatalf instead of stopping the goroutine.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestReceiverWaitTimesOut(t *testing.T) {
	t.Parallel()

	r := otlptest.NewReceiver(t)
	tp := provider(t, r, "svc")
	_, s := tp.Tracer("t").Start(context.Background(), "only")
	s.End()
	shutdown(t, tp)
	r.WaitForSpans(t, 1, 10*time.Second)

	f := &fatalTB{TB: t}
	start := time.Now()
	if got := r.WaitForNames(f, 200*time.Millisecond, "only", "missing"); got != nil {
		t.Errorf("WaitForNames returned %v after failing", got)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("gave up after %v, want about 200ms", took)
	}
	for _, want := range []string{`no spans named ["only" "missing"] after 200ms`, "1 spans received", `"only"`} {
		if !strings.Contains(f.msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, f.msg)
		}
	}
}

func TestReceiverWaitWakesUp(t *testing.T) {
	t.Parallel()

	r := otlptest.NewReceiver(t)
	tp := provider(t, r, "svc")
	done := make(chan otlptest.Span, 1)
	go func() {
		f := &fatalTB{TB: t}
		done <- r.WaitForSpan(f, 30*time.Second, func(s otlptest.Span) bool { return s.Name == "late" })
		if f.msg != "" {
			t.Errorf("WaitForSpan failed: %s", f.msg)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	_, s := tp.Tracer("t").Start(context.Background(), "late")
	s.End()
	start := time.Now()
	shutdown(t, tp)
	select {
	case got := <-done:
		if got.Name != "late" || got.Service != "svc" {
			t.Errorf("got %v", got)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("woke up %v after the export", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WaitForSpan did not return")
	}
}

func TestSpansHasAncestor(t *testing.T) {
	t.Parallel()

	span := func(id, parent string) otlptest.Span {
		return otlptest.Span{TraceID: "t", SpanID: id, ParentSpanID: parent, Name: id}
	}
	a, b, c, orphan := span("a", ""), span("b", "a"), span("c", "b"), span("o", "gone")
	x, y := span("x", "y"), span("y", "x") // a cycle
	ss := otlptest.Spans{c, orphan, a, b, x, y}
	other := otlptest.Span{TraceID: "u", SpanID: "c2", ParentSpanID: "a"}

	tests := []struct {
		name         string
		giveS, giveA otlptest.Span
		want         bool
	}{
		{"parent", b, a, true},
		{"grandparent", c, a, true},
		{"not upward", a, c, false},
		{"self", a, a, false},
		{"orphan", orphan, a, false},
		{"other trace", other, a, false},
		{"cycle", x, a, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ss.HasAncestor(tt.giveS, tt.giveA); got != tt.want {
				t.Errorf("HasAncestor(%s, %s) = %v, want %v", tt.giveS.Name, tt.giveA.Name, got, tt.want)
			}
		})
	}
	tree := ss.String()
	for _, want := range []string{`"o" (o) parent gone not received`, `"x" (x)`, `"y" (y)`, `    - [] unspecified "c"`} {
		if !strings.Contains(tree, want) {
			t.Errorf("tree lacks %q:\n%s", want, tree)
		}
	}
	if _, ok := ss.ByID("t", "missing"); ok {
		t.Error("ByID found a missing span")
	}
}

func TestNewReceiverAt(t *testing.T) {
	t.Parallel()

	r := otlptest.NewReceiver(t) // its port is taken
	if _, err := otlptest.NewReceiverAt(t, r.Endpoint()); err == nil {
		t.Fatalf("NewReceiverAt(%s) listened on a taken port", r.Endpoint())
	}

	at, err := otlptest.NewReceiverAt(t, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if at.Port() == 0 || at.URL() != "http://"+at.Endpoint() {
		t.Errorf("port %d, URL %s, endpoint %s", at.Port(), at.URL(), at.Endpoint())
	}
	tp := provider(t, at, "svc")
	_, s := tp.Tracer("t").Start(context.Background(), "there")
	s.End()
	shutdown(t, tp)
	at.WaitForNames(t, 10*time.Second, "there")
}
