package telemetry

import (
	"fmt"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
)

// installLogger routes OpenTelemetry's internal logging and error
// reporting (otel.SetLogger, otel.SetErrorHandler) to log, at warn,
// instead of the default standard-library logger on stderr.
//
// The SDK's internal log lines carry key/value pairs that can hold what
// the user configured, secrets included (the OTLP exporters log a header
// pair they cannot parse, value and all): only their message is kept,
// and for an error its Go type. Errors handed to the error handler (a
// failed export, a full queue) are logged with their text, which names
// the endpoint and the failure but not the headers.
func installLogger(log *zap.Logger) {
	otel.SetLogger(logr.New(&zapSink{log: log}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: opentelemetry error", zap.Error(err))
	}))
}

// zapSink is a logr.LogSink writing OpenTelemetry's warnings and errors
// to a zap logger, without their key/value pairs.
type zapSink struct {
	log  *zap.Logger
	name string
}

var _ logr.LogSink = (*zapSink)(nil)

// Init implements logr.LogSink.
func (s *zapSink) Init(logr.RuntimeInfo) {}

// Enabled reports whether level is logged: OpenTelemetry's warnings
// (V(1)) and errors, not its info (V(4)) and debug (V(8)) messages.
func (s *zapSink) Enabled(level int) bool { return level <= 1 }

// Info logs msg at warn: only OpenTelemetry's warnings get here.
func (s *zapSink) Info(_ int, msg string, _ ...any) {
	s.log.Warn("tracing: opentelemetry: "+msg, s.fields()...)
}

// Error logs msg and the type of err at warn.
func (s *zapSink) Error(err error, msg string, _ ...any) {
	fields := s.fields()
	if err != nil {
		fields = append(fields, zap.String("error_type", fmt.Sprintf("%T", err)))
	}
	s.log.Warn("tracing: opentelemetry: "+msg, fields...)
}

// WithValues implements logr.LogSink; the values are dropped.
func (s *zapSink) WithValues(...any) logr.LogSink { return s }

// WithName implements logr.LogSink.
func (s *zapSink) WithName(name string) logr.LogSink {
	if s.name != "" {
		name = s.name + "." + name
	}
	return &zapSink{log: s.log, name: name}
}

func (s *zapSink) fields() []zap.Field {
	if s.name == "" {
		return nil
	}
	return []zap.Field{zap.String("component", s.name)}
}
