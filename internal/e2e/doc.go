// Package e2e holds end-to-end tests that run forgeq's real binaries as
// separate processes against real Redis deployments: several workers on one
// Redis, on a Redis Cluster and on Sentinel with a failover in the middle of
// a run, and the whole stack (worker, web process, dashboard, enqueue CLI)
// over TLS and as a restricted ACL user. The newcomer tests run the README's
// quick start: a worker with nothing configured (so it embeds a Redis) and
// the enqueue CLI finding it with no Redis setting, once with pipes and once
// on pseudo-terminals, where the worker logs in console format and the CLI
// draws its progress bar. The reports test runs the example program
// examples/reports (its own module) and enqueues its task types through
// the stock enqueue CLI (which validates them against the task catalogue),
// the program's own enqueue command and HTTP. The tracing tests run the
// worker and the CLI with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local
// OTLP/HTTP receiver (internal/otlptest) and check the traces that arrive:
// an HTTP request with a traceparent, a CLI enqueue with and without
// TRACEPARENT, a task run by another worker process than the one that took
// the request, and nothing sent with tracing off.
//
// BenchmarkIdleCost measures what idle worker processes cost in CPU, their
// own and their Redis's; it takes minutes and runs only with
// FORGEQ_BENCH_IDLE=1 (see its comment). For its baseline, TestMain runs
// the test binary as a bare asynq server when FORGEQ_E2E_RAW_ASYNQ_ADDR is
// set.
//
// It has no code besides its tests. The processes and private Redis servers
// come from internal/proctest; the shared Cluster, TLS and ACL servers from
// internal/redistest, which skips those tests when its variables are unset
// (and fails them under CI). Run everything with
//
//	eval "$(bash .ci/run --servers-only)"
//	CI=true go test -race -count=1 ./internal/e2e
//
// # What the tests check
//
//   - Every task acknowledged by an enqueue completes, and runs once: each
//     task id appears in exactly one "task done" log line across all worker
//     processes, and asynq counts it completed (the tasks keep a retention).
//   - The work is spread: every worker process runs some of the tasks.
//   - After a Sentinel failover the workers go on with the new master; tasks
//     whose enqueue failed during the failover are counted, not lost, since
//     their caller saw the error. Redis replication is asynchronous, so a
//     task the old master acknowledged just before the promotion can be lost;
//     the test tolerates that only for tasks acknowledged around the
//     failover, and logs each one.
//   - No process writes a Redis or HTTP password to its logs or output.
package e2e
