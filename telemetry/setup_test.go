package telemetry

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// envOf returns a getenv backed by m: the process's own environment never
// leaks into the tests.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// setupTB sets up tracing for the test with its spans going to a new
// in-memory exporter, and shuts it down in cleanup. Tests that set up
// tracing change OpenTelemetry's globals and do not run in parallel.
func setupTB(tb testing.TB, env map[string]string) (*Provider, *tracetest.InMemoryExporter) {
	tb.Helper()
	exp := tracetest.NewInMemoryExporter()
	p, err := Setup(context.Background(), Options{Getenv: envOf(env), Exporter: exp, ServiceName: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Shutdown(context.Background()); err != nil {
			tb.Error(err)
		}
	})
	return p, exp
}

func TestSetupEnv(t *testing.T) {
	for _, tt := range []struct {
		name     string
		giveEnv  map[string]string
		wantOn   bool
		wantErr  string // the *EnvError's variable; "" for no error
		wantText string // a part of the error message
		wantNot  string // what the error message must not hold (a secret)
	}{
		{name: "nothing set", giveEnv: nil},
		{name: "endpoint", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, wantOn: true},
		{name: "traces endpoint", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, wantOn: true},
		{name: "grpc", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantOn: true},
		{name: "exporter otlp", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, wantOn: true},
		{name: "exporter console", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, wantOn: true},
		{name: "exporter list", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp, console"}, wantOn: true},
		{name: "exporter none wins over endpoint", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "sdk disabled", giveEnv: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}},
		{name: "sdk not disabled", giveEnv: map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, wantOn: true},
		{name: "service name only", giveEnv: map[string]string{"OTEL_SERVICE_NAME": "svc"}},
		{name: "sampler only", giveEnv: map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}},
		{name: "sampler ratio", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, wantOn: true},
		{name: "resource attributes", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b"}, wantOn: true},

		{name: "bad exporter", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, wantErr: "OTEL_TRACES_EXPORTER", wantText: `"jaeger": want otlp, console or none`},
		{name: "none with another", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "none,otlp"}, wantErr: "OTEL_TRACES_EXPORTER"},
		{name: "sdk disabled any case", giveEnv: map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}},
		{name: "sdk disabled other value is false", giveEnv: map[string]string{"OTEL_SDK_DISABLED": "yes please", "OTEL_TRACES_EXPORTER": "otlp"}, wantOn: true},
		{name: "sdk disabled 1 is false", giveEnv: map[string]string{"OTEL_SDK_DISABLED": "1", "OTEL_TRACES_EXPORTER": "otlp"}, wantOn: true},
		{name: "protocol any case", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "GRPC"}, wantOn: true},
		{name: "headers", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20c2VjcmV0, x-tenant=a,"}, wantOn: true},
		{name: "headers without =", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer s3cret,t0ken"}, wantErr: "OTEL_EXPORTER_OTLP_HEADERS", wantText: "pair 2 has no '='", wantNot: "s3cret"},
		{name: "headers bad key", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api key s3cret=1"}, wantErr: "OTEL_EXPORTER_OTLP_TRACES_HEADERS", wantText: "not an HTTP header name", wantNot: "s3cret"},
		{name: "headers bad escape", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret%zz"}, wantErr: "OTEL_EXPORTER_OTLP_HEADERS", wantText: "api-key (pair 1) is not URL-encoded", wantNot: "s3cret"},
		{name: "endpoint with password", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:s3cret@collector:4318"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT", wantText: "OTEL_EXPORTER_OTLP_HEADERS", wantNot: "s3cret"},
		{name: "endpoint with token user", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://s3cret@collector:4318/v1/traces"}, wantErr: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", wantText: `"https://xxxxx@collector:4318/v1/traces"`, wantNot: "s3cret"},
		{name: "endpoint with query", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/?api_key=s3cret"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT", wantText: "query string", wantNot: "s3cret"},
		{name: "unparsable endpoint with password", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:s3cret@[::1"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT", wantText: "not a URL", wantNot: "s3cret"},
		{name: "bad protocol", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL", wantText: "want http/protobuf or grpc"},
		{name: "bad traces protocol", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, wantErr: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{name: "endpoint without scheme", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT", wantText: "http://"},
		{name: "endpoint not a URL", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1"}, wantErr: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{name: "endpoint without host", giveEnv: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http:///v1"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT", wantText: "no host"},
		{name: "bad sampler", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "jaeger_remote"}, wantErr: "OTEL_TRACES_SAMPLER", wantText: "want always_on"},
		{name: "bad sampler arg", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, wantErr: "OTEL_TRACES_SAMPLER_ARG", wantText: "from 0 to 1"},
		{name: "bad schedule delay", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "5s"}, wantErr: "OTEL_BSP_SCHEDULE_DELAY", wantText: "milliseconds"},
		{name: "bad resource attributes", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "team"}, wantErr: "OTEL_RESOURCE_ATTRIBUTES", wantText: "key=value"},
		{name: "value escaped", giveEnv: map[string]string{"OTEL_TRACES_EXPORTER": "otlp\x1b[31m"}, wantErr: "OTEL_TRACES_EXPORTER", wantText: `"otlp\x1b[31m"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := otel.GetTracerProvider()
			p, err := Setup(t.Context(), Options{Getenv: envOf(tt.giveEnv), Console: &bytes.Buffer{}})
			if tt.wantErr != "" {
				var ee *EnvError
				if !errors.As(err, &ee) {
					t.Fatalf("Setup error = %v, want an *EnvError", err)
				}
				if ee.Name != tt.wantErr {
					t.Errorf("error names %s, want %s: %v", ee.Name, tt.wantErr, err)
				}
				if msg := err.Error(); !strings.Contains(msg, tt.wantErr) || !strings.Contains(msg, tt.wantText) {
					t.Errorf("error %q does not name %s and say %q", msg, tt.wantErr, tt.wantText)
				}
				if tt.wantNot != "" && (strings.Contains(err.Error(), tt.wantNot) || strings.Contains(ee.Value, tt.wantNot)) {
					t.Errorf("error %q shows %q", err, tt.wantNot)
				}
				if strings.ContainsRune(err.Error(), 0x1b) {
					t.Errorf("error %q holds a raw escape character", err)
				}
				if p != nil {
					t.Errorf("Setup returned a provider with its error")
				}
				if otel.GetTracerProvider() != before {
					t.Errorf("a failed Setup installed a tracer provider")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := p.Shutdown(context.Background()); err != nil {
					t.Error(err)
				}
			})
			if got := p.Enabled(); got != tt.wantOn {
				t.Fatalf("Enabled() = %v, want %v", got, tt.wantOn)
			}
			if !tt.wantOn {
				if otel.GetTracerProvider() != before {
					t.Errorf("Setup installed a tracer provider with tracing off")
				}
				if active.Load() != nil {
					t.Errorf("Setup made a provider active with tracing off")
				}
				return
			}
			if active.Load() != p {
				t.Errorf("the provider is not active")
			}
		})
	}
}

func TestReadEnvEndpoint(t *testing.T) {
	for _, tt := range []struct {
		name    string
		giveEnv map[string]string
		want    string
	}{
		{"http base", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"},
		{"http base with slash", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"},
		{"http base with path", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw/otlp"}, "https://gw/otlp/v1/traces"},
		{"traces endpoint as is", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/custom"}, "http://b:4318/custom"},
		{"grpc base as is", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http://collector:4317"},
		{"traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "http://collector:4317"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := readEnv(envOf(tt.giveEnv))
			if err != nil {
				t.Fatal(err)
			}
			if c.endpoint != tt.want {
				t.Errorf("endpoint = %q, want %q", c.endpoint, tt.want)
			}
		})
	}
}

// TestSetupOff checks that with no OTEL_* variable nothing is installed
// and the enqueue side traces nothing and writes only the request id.
func TestSetupOff(t *testing.T) {
	before := otel.GetTracerProvider()
	p, err := Setup(t.Context(), Options{Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() || otel.GetTracerProvider() != before || active.Load() != nil {
		t.Fatalf("tracing off installed something: enabled %v, active %v", p.Enabled(), active.Load())
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown of an off provider: %v", err)
	}
	var nilP *Provider
	if nilP.Enabled() || nilP.Shutdown(t.Context()) != nil || nilP.InstrumentRedis(nil) != nil {
		t.Errorf("a nil provider is not off")
	}

	ctx := WithRequestID(t.Context(), "req-1")
	ctx2, span := StartEnqueue(ctx, "email:deliver")
	if ctx2 != ctx || span.IsRecording() || span.SpanContext().IsValid() {
		t.Errorf("StartEnqueue with tracing off: new ctx %v, recording %v", ctx2 != ctx, span.IsRecording())
	}
	span.End()
	h := map[string]string{}
	Inject(ctx2, h)
	if diff := cmp.Diff(map[string]string{HeaderRequestID: "req-1"}, h); diff != "" {
		t.Errorf("Inject with tracing off (-want +got):\n%s", diff)
	}
}

func TestSetupResource(t *testing.T) {
	for _, tt := range []struct {
		name      string
		giveEnv   map[string]string
		wantName  string
		wantAttrs map[string]string
	}{
		{"program name", nil, "test", nil},
		{"OTEL_SERVICE_NAME", map[string]string{"OTEL_SERVICE_NAME": "billing-worker"}, "billing-worker", nil},
		{"resource attributes", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, team=a%20b"}, "test",
			map[string]string{"deployment.environment": "prod", "team": "a b"}},
		{"service.name attribute over the program name", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing,team=a"}, "billing", nil},
		{"OTEL_SERVICE_NAME over the attribute", map[string]string{"OTEL_SERVICE_NAME": "svc", "OTEL_RESOURCE_ATTRIBUTES": "service.name=billing"}, "svc", nil},
		{"empty service.name attribute", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name="}, "test", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, exp := setupTB(t, tt.giveEnv)
			_, span := StartEnqueue(t.Context(), "x")
			span.End()
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			got := map[string]string{}
			for _, kv := range spans[0].Resource.Attributes() {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			if got["service.name"] != tt.wantName {
				t.Errorf("service.name = %q, want %q", got["service.name"], tt.wantName)
			}
			for k, v := range tt.wantAttrs {
				if got[k] != v {
					t.Errorf("resource %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// TestSetupConsole checks that the console exporter writes the spans to
// Options.Console by the time Shutdown returns.
func TestSetupConsole(t *testing.T) {
	var out bytes.Buffer
	p, err := Setup(t.Context(), Options{Getenv: envOf(map[string]string{"OTEL_TRACES_EXPORTER": "console"}), Console: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := StartEnqueue(t.Context(), "email:deliver")
	span.End()
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"Name":"email:deliver publish"`) {
		t.Errorf("console output lacks the span:\n%s", out.String())
	}
	if active.Load() != nil {
		t.Errorf("Shutdown left the provider active")
	}
	_, span = StartEnqueue(t.Context(), "after")
	if span.IsRecording() {
		t.Errorf("a span started after Shutdown records")
	}
}

// TestSetupSampler checks that OTEL_TRACES_SAMPLER is applied.
func TestSetupSampler(t *testing.T) {
	_, exp := setupTB(t, map[string]string{"OTEL_TRACES_SAMPLER": "always_off"})
	_, span := StartEnqueue(t.Context(), "x")
	span.End()
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("always_off exported %d spans", n)
	}
}

// TestStartEnqueueForeignProvider checks that without Setup, a program
// that set up OpenTelemetry itself still gets the enqueue span under its
// own recording span, and the trace context in the headers.
func TestStartEnqueueForeignProvider(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := newTestTP(exp)
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, parent := tp.Tracer("app").Start(t.Context(), "app")
	ctx, span := StartEnqueue(ctx, "email:deliver")
	if !span.IsRecording() {
		t.Fatal("no enqueue span under a recording parent")
	}
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(testPropagator())
	defer otel.SetTextMapPropagator(prev)
	h := map[string]string{}
	Inject(ctx, h)
	span.End()
	parent.End()
	if !strings.Contains(h["traceparent"], span.SpanContext().SpanID().String()) {
		t.Errorf("traceparent %q does not name the enqueue span", h["traceparent"])
	}
	spans := exp.GetSpans()
	if len(spans) != 2 || spans[0].Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("spans %v: want the enqueue span under the app's", spanNames(spans))
	}
	if got := attrOf(spans[0].Attributes, "messaging.system"); got != "asynq" {
		t.Errorf("messaging.system = %q", got)
	}
	if spans[0].SpanKind != trace.SpanKindProducer {
		t.Errorf("kind %v, want producer", spans[0].SpanKind)
	}
}

// attrOf returns the value of key in attrs, "" when absent.
func attrOf(attrs []attribute.KeyValue, key string) string {
	for _, kv := range attrs {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// spanNames returns the names of spans.
func spanNames(spans tracetest.SpanStubs) []string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name
	}
	return names
}
