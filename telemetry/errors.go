package telemetry

import "fmt"

// EnvError is Setup's error for an OTEL_* environment variable it cannot
// use: its name, its value as given and what is wrong with it.
type EnvError struct {
	// Name is the variable, such as "OTEL_TRACES_EXPORTER".
	Name string
	// Value is the variable's value, with an endpoint's user, password
	// and query string replaced by "xxxxx"; empty for a variable whose
	// value may hold credentials (OTEL_EXPORTER_OTLP_HEADERS,
	// OTEL_EXPORTER_OTLP_TRACES_HEADERS), which is never shown.
	Value string
	// Reason says what is wrong and what would be right.
	Reason string
}

// Error returns "telemetry: <Name>=<quoted Value>: <Reason>", or
// "telemetry: <Name>: <Reason>" when Value is empty.
func (e *EnvError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("telemetry: %s: %s", e.Name, e.Reason)
	}
	return fmt.Sprintf("telemetry: %s=%q: %s", e.Name, e.Value, e.Reason)
}
