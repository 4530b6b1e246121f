// Package telemetry adds OpenTelemetry tracing to forgeq, configured by the
// standard OTEL_* environment variables and off, at no cost, when they are
// unset.
//
// # The trace of a task
//
// An HTTP request to the web process ([Provider.HTTPHandler]) or a run of
// the enqueue command starts a trace, or continues the one named by an
// incoming W3C traceparent. Enqueuing a task (tasks.Client) starts a
// producer span with [StartEnqueue] and writes the trace context into the
// task's headers with [Inject]. The worker's [Provider.Middleware]
// continues it: each attempt at a task is a consumer span, a child of the
// enqueue span, which records the attempt's error and whether the task is
// retried, archived or postponed. The handler's Redis commands are child
// spans of the attempt ([Provider.InstrumentRedis], go-redis's redisotel).
//
// The request id of the HTTP request that enqueued a task travels in the
// task's x-request-id header (whether tracing is on or off): [RequestID]
// reads it back in the handler, and [LogFields] gives the trace_id, span_id
// and request_id fields of a log line.
//
// # Setup
//
//	tp, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "worker"})
//	if err != nil {
//		return err // an *EnvError naming a bad OTEL_* variable
//	}
//	defer func() {
//		// Send the last spans, but do not hang the exit on a collector
//		// that does not answer.
//		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
//		defer cancel()
//		if err := tp.Shutdown(sctx); err != nil {
//			logger.Warn("tracing: spans not sent", zap.Error(err))
//		}
//	}()
//	_ = tp.InstrumentRedis(rdb) // before rdb's first command
//	handler := tp.Middleware()(mux)
//
// See [Setup] for the variables it reads.
package telemetry

const (
	// tracerName is the instrumentation scope of forgeq's own spans.
	tracerName = "github.com/forgeq/forgeq/telemetry"
	// messagingSystem is the messaging.system attribute of task spans.
	messagingSystem = "asynq"
)
