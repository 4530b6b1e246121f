package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// DefaultServiceName is the service.name of the spans when neither
// OTEL_SERVICE_NAME nor Options.ServiceName is set.
const DefaultServiceName = "forgeq"

// Options configure Setup. The zero value of each field means "use the
// default".
type Options struct {
	// ServiceName is the service.name resource attribute when
	// OTEL_SERVICE_NAME is unset: the program's name. Default "forgeq".
	ServiceName string
	// Getenv reads the OTEL_* variables. Default os.Getenv. The OTLP
	// exporters read the variables Setup does not interpret themselves
	// (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE,
	// _INSECURE and their _TRACES_ forms), and the batch span processor
	// OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE, from the
	// process's environment.
	Getenv func(string) string
	// Logger receives the warnings and errors of the OpenTelemetry SDK,
	// such as a failed export, at warn, and Setup's own warnings about
	// the variables. Default: none.
	Logger *zap.Logger
	// Console is where OTEL_TRACES_EXPORTER=console writes its spans.
	// Default os.Stderr.
	Console io.Writer
	// Exporter, when not nil, turns tracing on whatever the OTEL_*
	// variables say (unless OTEL_SDK_DISABLED=true) and receives each span
	// as it ends, synchronously, in place of the exporters those variables
	// name: for tests, with tracetest.NewInMemoryExporter.
	Exporter sdktrace.SpanExporter
}

// Provider is the tracing set up by Setup: when on, a tracer provider
// installed as OpenTelemetry's global one; when off, nothing, and its
// methods add nothing but the request id. A nil *Provider is off. A
// Provider is safe for concurrent use.
type Provider struct {
	tp      *sdktrace.TracerProvider // nil when off
	redisTP *sdktrace.TracerProvider // the Redis spans' provider: only under a sampled parent
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
}

// active is the Provider Setup installed last with tracing on, until its
// Shutdown; nil while tracing is off. StartEnqueue, Inject and Extract
// use it. The off path costs one atomic load.
var active atomic.Pointer[Provider]

// Setup reads the standard OTEL_* variables and, when they turn tracing
// on, builds a tracer provider, installs it as OpenTelemetry's global
// one together with the W3C TraceContext and Baggage propagator, and
// returns it. Call Shutdown on the result before the program exits so
// that the last spans are sent.
//
// Tracing is on when OTEL_TRACES_EXPORTER is set and not "none", or when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
// (or Options.Exporter is); OTEL_SDK_DISABLED=true turns it off whatever
// else is set. Off, Setup installs nothing and returns a Provider whose
// Enabled is false.
//
// The variables Setup reads:
//   - OTEL_SDK_DISABLED: true (in any case) turns tracing off; any other
//     value is false, with a warning to Options.Logger unless it is
//     false.
//   - OTEL_TRACES_EXPORTER: otlp (the default when on), console (spans
//     as JSON to Options.Console) or none; several may be given,
//     comma-separated.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
//     http/protobuf (default) or grpc, in any case.
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is), else
//     OTEL_EXPORTER_OTLP_ENDPOINT (with /v1/traces appended for
//     http/protobuf): an http or https URL. Default
//     http://localhost:4318/v1/traces, or localhost:4317 for grpc. A
//     user, password or query string in the URL is an error: the
//     exporters would not send them; credentials go in the headers.
//   - OTEL_EXPORTER_OTLP_HEADERS and OTEL_EXPORTER_OTLP_TRACES_HEADERS:
//     only checked (key=value pairs, comma-separated, keys HTTP header
//     names, values URL-encoded); the exporters read them. The error for
//     a bad one does not show the value, which may hold credentials.
//   - OTEL_SERVICE_NAME, else the service.name of
//     OTEL_RESOURCE_ATTRIBUTES, else Options.ServiceName: the
//     service.name.
//   - OTEL_RESOURCE_ATTRIBUTES: key=value pairs, comma-separated, values
//     URL-encoded.
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG: always_on,
//     always_off, traceidratio, parentbased_always_on (the default),
//     parentbased_always_off or parentbased_traceidratio, with a ratio
//     from 0 to 1 (default 1).
//   - OTEL_BSP_SCHEDULE_DELAY: the milliseconds between two exports
//     (default 5000).
//
// OTEL_PROPAGATORS is not read: the propagator is always W3C
// tracecontext and baggage.
//
// A variable with a value Setup cannot use is an error, an *EnvError
// naming the variable and the value (an endpoint's credentials redacted,
// a headers variable's value left out); nothing is installed then.
//
// When tracing is on, Setup also routes OpenTelemetry's own warnings and
// errors (otel.SetLogger, otel.SetErrorHandler), such as a failed
// export, to Options.Logger at warn, with their message only: the SDK's
// key/value pairs, which can hold configured secrets, are dropped.
//
// What Setup installs is process-wide: a program sets tracing up once.
// Enqueues made outside any span (StartEnqueue) use the provider set up
// last; spans under a span use that span's provider.
func Setup(ctx context.Context, o Options) (*Provider, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Console == nil {
		o.Console = os.Stderr
	}
	if o.ServiceName == "" {
		o.ServiceName = DefaultServiceName
	}
	c, err := readEnv(o.Getenv)
	if err != nil {
		return nil, err
	}
	for _, w := range c.warnings {
		o.Logger.Warn("tracing: " + w)
	}
	if c.disabled || (!c.on && o.Exporter == nil) {
		return &Provider{}, nil
	}

	res, err := c.resource(ctx, o.ServiceName)
	if err != nil {
		return nil, err
	}
	// Before the exporters are built: they report through these.
	installLogger(o.Logger)
	var procs []sdktrace.SpanProcessor
	if o.Exporter != nil {
		procs = append(procs, sdktrace.NewSimpleSpanProcessor(o.Exporter))
	} else {
		for _, name := range c.exporters {
			exp, err := c.exporter(ctx, name, o.Console)
			if err != nil {
				for _, p := range procs {
					_ = p.Shutdown(ctx)
				}
				return nil, err
			}
			var bopts []sdktrace.BatchSpanProcessorOption
			if c.scheduleDelay >= 0 {
				bopts = append(bopts, sdktrace.WithBatchTimeout(c.scheduleDelay))
			}
			procs = append(procs, sdktrace.NewBatchSpanProcessor(exp, bopts...))
		}
	}
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(c.sampler)}
	redisOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample()))}
	for _, p := range procs {
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(p))
		redisOpts = append(redisOpts, sdktrace.WithSpanProcessor(p))
	}
	p := &Provider{
		tp:      sdktrace.NewTracerProvider(tpOpts...),
		redisTP: sdktrace.NewTracerProvider(redisOpts...),
		prop:    propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	p.tracer = p.tp.Tracer(tracerName)
	otel.SetTracerProvider(p.tp)
	otel.SetTextMapPropagator(p.prop)
	active.Store(p)
	return p, nil
}

// Enabled reports whether tracing is on. It is safe to call on a nil
// Provider, which is off.
func (p *Provider) Enabled() bool { return p != nil && p.tp != nil }

// TracerProvider returns p's tracer provider, or a no-op one when tracing
// is off: for instrumenting more libraries.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if !p.Enabled() {
		return noop.NewTracerProvider()
	}
	return p.tp
}

// Shutdown sends the spans not yet exported and stops the exporters, and
// uninstalls p when it is the global provider: spans started afterwards
// are no-ops. It returns the exporters' errors, or ctx's when it ends
// first. It is a no-op when tracing is off and safe on a nil Provider.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	if active.CompareAndSwap(p, nil) {
		otel.SetTracerProvider(noop.NewTracerProvider())
	}
	err := p.tp.Shutdown(ctx)
	return errors.Join(err, p.redisTP.Shutdown(ctx))
}

// envConfig is what readEnv found.
type envConfig struct {
	disabled      bool
	on            bool
	exporters     []string // of "otlp", "console"
	protocol      string   // "http/protobuf" or "grpc"
	endpoint      string   // "" for the exporter's default
	serviceName   string   // OTEL_SERVICE_NAME
	attrs         []attribute.KeyValue
	sampler       sdktrace.Sampler
	scheduleDelay time.Duration // < 0: the SDK's default
	warnings      []string      // values taken with a warning, for Setup to log
}

// Names of the variables Setup reads.
const (
	envSDKDisabled       = "OTEL_SDK_DISABLED"
	envTracesExporter    = "OTEL_TRACES_EXPORTER"
	envProtocol          = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol    = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envEndpoint          = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint    = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envServiceName       = "OTEL_SERVICE_NAME"
	envResourceAttrs     = "OTEL_RESOURCE_ATTRIBUTES"
	envSampler           = "OTEL_TRACES_SAMPLER"
	envSamplerArg        = "OTEL_TRACES_SAMPLER_ARG"
	envBSPScheduleDelay  = "OTEL_BSP_SCHEDULE_DELAY"
	envHeaders           = "OTEL_EXPORTER_OTLP_HEADERS"
	envTracesHeaders     = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
	protocolHTTPProtobuf = "http/protobuf"
	protocolGRPC         = "grpc"
)

// readEnv reads and checks the variables; see Setup.
func readEnv(getenv func(string) string) (envConfig, error) {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	c := envConfig{scheduleDelay: -1}

	// As the specification says: only "true", in any case, disables;
	// any other value is false, with a warning unless it is "false".
	if v := get(envSDKDisabled); v != "" {
		switch strings.ToLower(v) {
		case "true":
			c.disabled = true
		case "false":
		default:
			c.warnings = append(c.warnings, fmt.Sprintf("%s=%q is not true or false: taken as false (tracing not disabled)", envSDKDisabled, v))
		}
	}

	exporters := get(envTracesExporter)
	for _, name := range strings.Split(exporters, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		switch name {
		case "":
		case "none":
			if len(strings.Split(exporters, ",")) > 1 {
				return c, &EnvError{envTracesExporter, exporters, "none cannot be combined with other exporters"}
			}
		case "otlp", "console":
			if !slices.Contains(c.exporters, name) {
				c.exporters = append(c.exporters, name)
			}
		default:
			return c, &EnvError{envTracesExporter, exporters, "want otlp, console or none (comma-separated)"}
		}
	}

	c.protocol = protocolHTTPProtobuf
	for _, name := range []string{envTracesProtocol, envProtocol} {
		v := get(name)
		if v == "" {
			continue
		}
		switch lv := strings.ToLower(v); lv {
		case protocolHTTPProtobuf, protocolGRPC:
			c.protocol = lv
		default:
			return c, &EnvError{name, v, "want http/protobuf or grpc"}
		}
		break
	}

	if v := get(envTracesEndpoint); v != "" {
		if err := checkEndpoint(v); err != nil {
			return c, &EnvError{envTracesEndpoint, redactEndpoint(v), err.Error()}
		}
		c.endpoint = v
	} else if v := get(envEndpoint); v != "" {
		if err := checkEndpoint(v); err != nil {
			return c, &EnvError{envEndpoint, redactEndpoint(v), err.Error()}
		}
		c.endpoint = v
		if c.protocol == protocolHTTPProtobuf {
			u, _ := url.Parse(v)
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
			c.endpoint = u.String()
		}
	}

	switch {
	case exporters != "":
		c.on = len(c.exporters) > 0
	case c.endpoint != "":
		c.on = true
	}
	if c.on && len(c.exporters) == 0 {
		c.exporters = []string{"otlp"}
	}

	// The exporters parse the headers themselves, and log a bad pair,
	// secret and all, through OpenTelemetry's logger: check them first
	// and name the variable without its value.
	for _, name := range []string{envHeaders, envTracesHeaders} {
		if err := checkHeaders(getenv(name)); err != nil {
			return c, &EnvError{Name: name, Reason: err.Error() + " (the value is not shown: it may hold credentials)"}
		}
	}

	c.serviceName = get(envServiceName)
	if v := get(envResourceAttrs); v != "" {
		attrs, err := parseResourceAttrs(v)
		if err != nil {
			return c, &EnvError{envResourceAttrs, v, err.Error()}
		}
		c.attrs = attrs
	}

	var err error
	if c.sampler, err = readSampler(get); err != nil {
		return c, err
	}

	if v := get(envBSPScheduleDelay); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return c, &EnvError{envBSPScheduleDelay, v, "want a whole number of milliseconds, 0 or more"}
		}
		c.scheduleDelay = time.Duration(ms) * time.Millisecond
	}
	return c, nil
}

// checkEndpoint reports what is wrong with an OTLP endpoint URL. Its
// messages do not quote v.
func checkEndpoint(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL; want e.g. http://localhost:4318")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("want an http:// or https:// URL, e.g. http://localhost:4318")
	}
	if u.Host == "" {
		return errors.New("the URL has no host; want e.g. http://localhost:4318")
	}
	if u.User != nil {
		return errors.New("the URL has a user or password, which the exporter would not send; give credentials in OTEL_EXPORTER_OTLP_HEADERS (e.g. Authorization=Basic%20...) instead")
	}
	if u.RawQuery != "" || u.ForceQuery {
		return errors.New("the URL has a query string, which the exporter would drop; give credentials (such as an API key) in OTEL_EXPORTER_OTLP_HEADERS instead")
	}
	return nil
}

// redactEndpoint returns v, an endpoint URL that may not parse, with its
// userinfo and its query string replaced by "xxxxx", for error messages.
func redactEndpoint(v string) string {
	if i := strings.IndexAny(v, "?#"); i >= 0 && v[i] == '?' {
		end := len(v)
		if j := strings.IndexByte(v[i:], '#'); j >= 0 {
			end = i + j
		}
		v = v[:i+1] + "xxxxx" + v[end:]
	}
	start := 0
	if i := strings.Index(v, "://"); i >= 0 {
		start = i + len("://")
	}
	authority := v[start:]
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		v = v[:start] + "xxxxx" + v[start+i:]
	}
	return v
}

// checkHeaders reports what is wrong with the value of
// OTEL_EXPORTER_OTLP_HEADERS or _TRACES_HEADERS, as the exporters parse
// it: key=value pairs separated by commas, each key an HTTP header name,
// each value URL-encoded. Its messages never quote the value, only the
// pair's position and, once valid, its key.
func checkHeaders(v string) error {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	for i, pair := range strings.Split(v, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, val, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("pair %d has no '='; want key=value pairs separated by commas, values URL-encoded (a comma in a value is %%2C)", i+1)
		}
		k = strings.TrimSpace(k)
		if !validHeaderKey(k) {
			return fmt.Errorf("the key of pair %d is not an HTTP header name; want key=value pairs separated by commas", i+1)
		}
		if _, err := url.PathUnescape(val); err != nil {
			return fmt.Errorf("the value of %s (pair %d) is not URL-encoded: a %% must start %%XX, e.g. %%20 for a space", k, i+1)
		}
	}
	return nil
}

// validHeaderKey reports whether k is an HTTP header name (an RFC 9110
// token), as the exporters require.
func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return true
}

// parseResourceAttrs parses OTEL_RESOURCE_ATTRIBUTES.
func parseResourceAttrs(v string) ([]attribute.KeyValue, error) {
	var attrs []attribute.KeyValue
	for _, pair := range strings.Split(v, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, val, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value; want key=value pairs separated by commas", pair)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("the value of %q is not URL-encoded: %v", k, err)
		}
		attrs = append(attrs, attribute.String(k, dv))
	}
	return attrs, nil
}

// readSampler returns the sampler OTEL_TRACES_SAMPLER(_ARG) name.
func readSampler(get func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(get(envSampler))
	arg := get(envSamplerArg)
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, &EnvError{envSamplerArg, arg, "want a ratio from 0 to 1, such as 0.25"}
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, &EnvError{envSampler, get(envSampler), "want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"}
}

// resource returns the spans' resource: service.name, the SDK's
// attributes and OTEL_RESOURCE_ATTRIBUTES. A key given twice in
// OTEL_RESOURCE_ATTRIBUTES takes its last value.
func (c envConfig) resource(ctx context.Context, serviceName string) (*resource.Resource, error) {
	// OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES,
	// else the program's name.
	attrs := slices.Clone(c.attrs)
	var fromAttrs string // the last service.name of OTEL_RESOURCE_ATTRIBUTES
	for _, kv := range attrs {
		if kv.Key == "service.name" {
			fromAttrs = kv.Value.AsString()
		}
	}
	switch {
	case c.serviceName != "":
		attrs = append(attrs, attribute.String("service.name", c.serviceName))
	case fromAttrs == "":
		attrs = append(attrs, attribute.String("service.name", serviceName))
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// exporter builds the exporter named name ("otlp" or "console").
func (c envConfig) exporter(ctx context.Context, name string, console io.Writer) (sdktrace.SpanExporter, error) {
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch {
	case name == "console":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(console))
	case c.protocol == protocolGRPC:
		var opts []otlptracegrpc.Option
		if c.endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(c.endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		var opts []otlptracehttp.Option
		if c.endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(c.endpoint))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s exporter: %w", name, err)
	}
	return exp, nil
}
