package telemetry

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestSetupRoutesOpenTelemetryLogs checks that, once Setup ran, what the
// OpenTelemetry SDK logs goes to Options.Logger at warn without the
// key/value pairs that hold configured secrets: the OTLP exporter logs a
// header pair it cannot parse, value and all, which by default goes to
// stderr.
func TestSetupRoutesOpenTelemetryLogs(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	p, err := Setup(t.Context(), Options{
		Getenv: envOf(map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}),
		Logger: zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(t.Context()) })

	// An exporter built from the process's environment (Setup checks the
	// headers of the getenv it is given; this one bypasses it).
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer s3cret,t0ken")
	if _, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpointURL("http://127.0.0.1:1/v1/traces")); err != nil {
		t.Fatal(err)
	}
	otel.Handle(errors.New("export failed: 503"))

	entries := logs.All()
	if len(entries) < 2 {
		t.Fatalf("%d log lines, want the exporter's complaint and the handled error", len(entries))
	}
	var sawHeaders, sawHandled bool
	for _, e := range entries {
		if e.Level != zapcore.WarnLevel {
			t.Errorf("line %q at %v, want warn", e.Message, e.Level)
		}
		text := e.Message
		for k, v := range e.ContextMap() {
			text += " " + k + "=" + fmt.Sprint(v)
		}
		if strings.Contains(text, "t0ken") || strings.Contains(text, "s3cret") {
			t.Errorf("line shows the header value: %s", text)
		}
		sawHeaders = sawHeaders || strings.Contains(e.Message, "parse headers")
		sawHandled = sawHandled || strings.Contains(text, "export failed: 503")
	}
	if !sawHeaders || !sawHandled {
		t.Errorf("lines %v: want the exporter's parse headers warning and the handled error", entries)
	}
}

// TestSetupWarnsSDKDisabled checks that an OTEL_SDK_DISABLED value other
// than true or false is a warning, not an error.
func TestSetupWarnsSDKDisabled(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	p, err := Setup(t.Context(), Options{Getenv: envOf(map[string]string{"OTEL_SDK_DISABLED": "yes"}), Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() {
		t.Errorf("tracing on without an exporter or endpoint")
	}
	if logs.FilterMessageSnippet("OTEL_SDK_DISABLED").Len() != 1 {
		t.Errorf("lines %v: want one warning about OTEL_SDK_DISABLED", logs.All())
	}
}
