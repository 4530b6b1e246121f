// Package deploy has no code: its tests check the repository's deployment
// files, which no Docker engine here can run.
//
// They load compose.yaml with the Compose specification's own Go loader
// (compose-spec/compose-go) and check what it promises: a healthy Redis
// before the worker, the Redis URL, a stop grace period longer than the
// worker's shutdown timeout, a readiness healthcheck, no exposed web process
// without credentials, and a clear error when the password is not set. The
// tracing profile's OpenTelemetry Collector and Jaeger run only under that
// profile, publish their ports on loopback, and the collector's
// configuration (deploy/otel-collector.yaml) wires its OTLP receiver to an
// exporter to Jaeger; the OTEL_* variables reach the forgeq services from
// the environment, and are unset (tracing off) when it has none. They
// parse the Dockerfile (multi-stage, static, non-root), run its go build
// commands as written, check the binaries are static, and run the built
// worker with each compose service's environment (Redis and the listen
// address moved to this machine): it must turn healthy by the compose
// healthcheck's own command, run a task the compose enqueue tool puts on its
// queue, and exit 0 on SIGTERM within the stop grace period. That test
// builds for about a minute with a cold build cache; -short skips it.
package deploy
