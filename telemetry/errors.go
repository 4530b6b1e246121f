package telemetry

import "fmt"

// EnvError is Setup's error for an OTEL_* environment variable it cannot
// use: its name, its value as given and what is wrong with it.
type EnvError struct {
	// Name is the variable, such as "OTEL_TRACES_EXPORTER".
	Name string
	// Value is the variable's value.
	Value string
	// Reason says what is wrong and what would be right.
	Reason string
}

// Error returns "telemetry: <Name>=<quoted Value>: <Reason>".
func (e *EnvError) Error() string {
	return fmt.Sprintf("telemetry: %s=%q: %s", e.Name, e.Value, e.Reason)
}
