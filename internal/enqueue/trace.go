package enqueue

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/telemetry"
)

// traceFlushTimeout bounds the sending of the command's spans at exit, so
// that an unreachable collector delays the exit by that much at most.
const traceFlushTimeout = 3 * time.Second

// tracerScope is the instrumentation scope of the command's root span.
const tracerScope = "github.com/forgeq/forgeq/internal/enqueue"

// Variables that carry a trace context into the command, as the W3C
// headers of the same names would into an HTTP request: a script running
// inside a trace passes it on with TRACEPARENT (and TRACESTATE, BAGGAGE).
var traceEnv = map[string]string{
	"TRACEPARENT": "traceparent",
	"TRACESTATE":  "tracestate",
	"BAGGAGE":     "baggage",
}

// traced runs fn with tracing set up from the OTEL_* variables (package
// telemetry; service.name is the program's name): when tracing is on, in
// a root span "enqueue" that continues the trace of TRACEPARENT when it is
// set, and that every task enqueued continues. The spans are sent before it
// returns. A bad OTEL_* variable is an input error.
func (c *cli) traced(ctx context.Context, mode string, fn func(context.Context) error) error {
	getenv := c.getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	tp, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: strings.ReplaceAll(c.prog, " ", "-"),
		Getenv:      getenv,
		Console:     c.stderr,
		Logger:      c.tracingLogger(getenv),
	})
	if err != nil {
		return &inputError{err: err}
	}
	if !tp.Enabled() {
		return fn(ctx)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), traceFlushTimeout)
		defer cancel()
		if serr := tp.Shutdown(sctx); serr != nil {
			fmt.Fprintf(c.stderr, "%s: warning: tracing: the spans were not all sent: %s\n", c.prog, termtext.Escape(serr.Error()))
		}
	}()
	carrier := make(map[string]string, len(traceEnv))
	for env, header := range traceEnv {
		if v := getenv(env); v != "" {
			carrier[header] = v
		}
	}
	ctx = telemetry.Extract(ctx, carrier)
	ctx, span := tp.TracerProvider().Tracer(tracerScope).Start(ctx, "enqueue",
		trace.WithAttributes(attribute.String("forgeq.command", c.prog), attribute.String("forgeq.command.mode", mode)))
	defer span.End()
	if err := fn(ctx); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	return nil
}

// tracingLogger returns the logger of OpenTelemetry's warnings and errors
// (a failed export, reported without the headers' secrets): warnings to
// stderr in the command's log format (LOG_FORMAT, auto by default). The
// command's own logger comes with its configuration, after tracing is set
// up.
func (c *cli) tracingLogger(getenv func(string) string) *zap.Logger {
	log, err := bootstrap.NewLogger(config.Log{Level: "warn", Format: strings.ToLower(strings.TrimSpace(getenv("LOG_FORMAT")))}, c.stderr)
	if err != nil {
		// A bad LOG_FORMAT is reported with the configuration.
		log, _ = bootstrap.NewLogger(config.Log{Level: "warn"}, c.stderr)
	}
	return log.With(zap.String("command", c.prog))
}
