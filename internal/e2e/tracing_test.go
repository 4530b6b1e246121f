package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/forgeq/forgeq/internal/otlptest"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/tasks"
)

// Names of the spans the binaries make (package telemetry; otelhttp names
// the web process's span after the route's pattern, redisotel each Redis
// span after its command).
const (
	spanEnqueueRoute = "POST /api/tasks/{type}"
	spanPublish      = tasks.TypeProcessData + " publish"
	spanProcess      = tasks.TypeProcessData + " process"
	// redisScope is the instrumentation scope of redisotel's spans.
	redisScope = "github.com/redis/go-redis/extra/redisotel"
	// Service names: the programs' names, OTEL_SERVICE_NAME being unset.
	workerService  = "worker"
	enqueueService = "enqueue"
)

// traceTimeout bounds how long the spans of a task may take to arrive: the
// worker starting up is not included, a -race binary is slow.
const traceTimeout = 60 * time.Second

// tracingEnv returns the OTEL_* settings that send a process's spans to r
// within about 50 ms of their end, its resource marked with the instance
// name (to tell two processes of one service apart).
func tracingEnv(r *otlptest.Receiver, instance string) []string {
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + r.URL(),
		"OTEL_BSP_SCHEDULE_DELAY=50",
		"OTEL_RESOURCE_ATTRIBUTES=service.instance.id=" + instance,
	}
}

// traceParent is an incoming W3C trace context: a trace id and the id of
// the caller's span, which the receiver never gets.
type traceParent struct {
	traceID, spanID string
}

func newTraceParent(tb testing.TB) traceParent {
	tb.Helper()
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return traceParent{traceID: hex.EncodeToString(b[:16]), spanID: hex.EncodeToString(b[16:])}
}

// header returns the traceparent header value, sampled.
func (p traceParent) header() string { return "00-" + p.traceID + "-" + p.spanID + "-01" }

// startTracedWorker starts a worker on redisURL serving only queue, with
// extra settings, and its web process on a free loopback port when web is
// true; it returns the process and the web process's base URL ("" without
// one), once the worker has started and the web process is ready.
func startTracedWorker(tb testing.TB, redisURL, queue string, web bool, extra ...string) (*proctest.Proc, string) {
	tb.Helper()
	base := ""
	if web {
		addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(tb))
		base = "http://" + addr
		extra = append([]string{"HTTP_ADDR=" + addr}, extra...)
	}
	w := startWorkers(tb, 1, workerEnv(redisURL, queue, extra...))[0]
	if web {
		waitHTTPReady(tb, base, 30*time.Second)
	}
	return w, base
}

// waitHTTPReady waits until base's /health/ready answers 200.
func waitHTTPReady(tb testing.TB, base string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(base + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s/health/ready not ready after %v: %v", base, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// postTask enqueues a data:process task with the id id on queue through
// the web process at base, with the given request headers, and wants 202.
func postTask(tb testing.TB, base, queue, id string, headers map[string]string) {
	tb.Helper()
	body := fmt.Sprintf(`{"payload":{"key":%q,"work":1000},"queue":%q,"id":%q}`, id, queue, id)
	req, err := http.NewRequest(http.MethodPost, base+"/api/tasks/"+tasks.TypeProcessData, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		tb.Fatalf("POST /api/tasks: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("POST /api/tasks: %d %s", resp.StatusCode, b)
	}
}

// isRedis matches the spans of redisotel.
func isRedis(s otlptest.Span) bool { return s.Scope == redisScope }

// processOf matches the handler span of the task id.
func processOf(id string) func(otlptest.Span) bool {
	return func(s otlptest.Span) bool {
		v, _ := s.Attr("messaging.message.id")
		return s.Name == spanProcess && v == id
	}
}

// waitTaskTrace waits until the handler span of task id has arrived with
// its whole trace: the span that enqueued it, and a Redis span under it.
// It returns the handler span and the trace's spans.
func waitTaskTrace(tb testing.TB, r *otlptest.Receiver, id string) (otlptest.Span, otlptest.Spans) {
	tb.Helper()
	var process otlptest.Span
	var tr otlptest.Spans
	r.WaitFor(tb, traceTimeout, "trace of task "+id, func(ss otlptest.Spans) bool {
		ps := ss.Match(processOf(id))
		if len(ps) == 0 {
			return false
		}
		process, tr = ps[0], ss.InTrace(ps[0].TraceID)
		if _, ok := tr.Parent(process); !ok {
			return false
		}
		return len(tr.Match(func(s otlptest.Span) bool { return isRedis(s) && tr.HasAncestor(s, process) })) > 0
	})
	return process, tr
}

// checkTree wants every span of tr under one root: the one span whose
// parent is rootParent ("" for a trace that starts there), every other
// span's parent received.
func checkTree(tb testing.TB, tr otlptest.Spans, rootParent string) {
	tb.Helper()
	roots := 0
	for _, s := range tr {
		if _, ok := tr.Parent(s); ok {
			continue
		}
		if s.ParentSpanID != rootParent {
			tb.Errorf("span %s: parent %q not received, and not the trace's root (parent %q)", s, s.ParentSpanID, rootParent)
			continue
		}
		roots++
	}
	if roots != 1 {
		tb.Errorf("%d root spans, want 1:\n%s", roots, tr)
	}
}

// checkProcess checks the handler span of task id on queue, first attempt,
// run by the worker instance, a child of the producer span enqueue.
func checkProcess(tb testing.TB, tr otlptest.Spans, process, enqueue otlptest.Span, queue, id, instance string) {
	tb.Helper()
	if process.Kind != trace.SpanKindConsumer || process.Service != workerService {
		tb.Errorf("handler span %s: want kind consumer, service %s", process, workerService)
	}
	if got := process.Resource["service.instance.id"]; got != instance {
		tb.Errorf("handler span ran on instance %v, want %s", got, instance)
	}
	if !process.ChildOf(enqueue) {
		tb.Errorf("handler span is not a child of the enqueue span %s:\n%s", enqueue, tr)
	}
	for k, want := range map[string]string{
		"messaging.system":           "asynq",
		"messaging.destination.name": queue,
		"messaging.message.id":       id,
		"forgeq.task.attempt":        "1",
	} {
		if got, _ := process.Attr(k); got != want {
			tb.Errorf("handler span: %s = %q, want %q", k, got, want)
		}
	}
	if process.Status == codes.Error {
		tb.Errorf("handler span has status error: %s", process.StatusMessage)
	}

	// The handler's cache calls: redisotel client spans under it, on the
	// worker.
	var redis otlptest.Spans
	for _, s := range tr.Match(isRedis) {
		if tr.HasAncestor(s, process) {
			redis = append(redis, s)
			if s.Kind != trace.SpanKindClient || s.Service != workerService {
				tb.Errorf("Redis span %s: want kind client, service %s", s, workerService)
			}
			if got, _ := s.Attr("db.system"); got != "redis" {
				tb.Errorf("Redis span %s: db.system = %q, want redis", s, got)
			}
		}
	}
	names := make([]string, len(redis))
	for i, s := range redis {
		names[i] = s.Name
	}
	// The computation starts with looking the key up.
	if !slices.Contains(names, "get") {
		tb.Errorf("Redis spans under the handler %q: no get of the cache key:\n%s", names, tr)
	}
}

// checkEnqueue checks the producer span that enqueued task id on queue.
func checkEnqueue(tb testing.TB, s otlptest.Span, queue, id, service string) {
	tb.Helper()
	if s.Name != spanPublish || s.Kind != trace.SpanKindProducer || s.Service != service {
		tb.Errorf("enqueue span %s: want %q, kind producer, service %s", s, spanPublish, service)
	}
	for k, want := range map[string]string{
		"messaging.system":           "asynq",
		"messaging.destination.name": queue,
		"messaging.message.id":       id,
	} {
		if got, _ := s.Attr(k); got != want {
			tb.Errorf("enqueue span: %s = %q, want %q", k, got, want)
		}
	}
}

// checkTaskLog wants the worker's "task done" line of task id to carry the
// handler span's trace and span ids, and the request id when not "".
func checkTaskLog(tb testing.TB, w *proctest.Proc, id string, process otlptest.Span, requestID string) {
	tb.Helper()
	for _, l := range w.LogLinesWithMsg("task done") {
		if l["task_id"] != id {
			continue
		}
		if l["trace_id"] != process.TraceID || l["span_id"] != process.SpanID {
			tb.Errorf("%s: \"task done\" of %s has trace_id %v, span_id %v; want the handler span's %s, %s",
				w, id, l["trace_id"], l["span_id"], process.TraceID, process.SpanID)
		}
		if requestID != "" && l["request_id"] != requestID {
			tb.Errorf("%s: \"task done\" of %s has request_id %v, want %s", w, id, l["request_id"], requestID)
		}
		return
	}
	tb.Errorf("%s: no \"task done\" line for %s", w, id)
}

// TestTracingHTTPRequest runs the worker with its web process, exporting
// to a local OTLP receiver, and POSTs a task with a traceparent and a
// request id: one trace holds the web process's HTTP span (a child of the
// caller's span), the enqueue span under it, the handler span as the
// enqueue span's child and the Redis spans of the handler's cache calls
// under that, all from service "worker", with no span missing its parent.
// In the second case a worker serving another queue takes the request and
// a second worker process runs the task: the trace crosses the processes.
func TestTracingHTTPRequest(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// giveSplit: the web process's worker serves another queue, and a
		// second worker runs the task.
		giveSplit bool
	}{
		{name: "one process"},
		{name: "two processes", giveSplit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			r := otlptest.NewReceiver(t)
			redisURL := proctest.RedisServer(t).URL()
			queue := uniqueName(t)

			webQueue, runner := queue, "web"
			if tt.giveSplit {
				webQueue, runner = queue+"-web", "runner"
			}
			web, base := startTracedWorker(t, redisURL, webQueue, true, tracingEnv(r, "web")...)
			workers := []*proctest.Proc{web}
			if tt.giveSplit {
				w, _ := startTracedWorker(t, redisURL, queue, false, tracingEnv(r, "runner")...)
				workers = append(workers, w)
			}

			parent := newTraceParent(t)
			id, requestID := queue+"-http", "req-"+queue
			postTask(t, base, queue, id, map[string]string{
				"traceparent":  parent.header(),
				"X-Request-ID": requestID,
			})

			process, tr := waitTaskTrace(t, r, id)
			if process.TraceID != parent.traceID {
				t.Fatalf("handler span in trace %s, want the caller's %s:\n%s", process.TraceID, parent.traceID, r.Spans())
			}
			enqueue, _ := tr.Parent(process)
			checkEnqueue(t, enqueue, queue, id, workerService)
			checkProcess(t, tr, process, enqueue, queue, id, runner)
			if got, _ := process.Attr("forgeq.request_id"); got != requestID {
				t.Errorf("handler span: forgeq.request_id = %q, want %q", got, requestID)
			}

			servers := tr.Match(func(s otlptest.Span) bool { return s.Kind == trace.SpanKindServer })
			if len(servers) != 1 {
				t.Fatalf("%d server spans in the trace, want the HTTP request's:\n%s", len(servers), tr)
			}
			httpSpan := servers[0]
			if httpSpan.Name != spanEnqueueRoute || httpSpan.Service != workerService || httpSpan.ParentSpanID != parent.spanID {
				t.Errorf("HTTP span %s: want %q of service %s, a child of the caller's span %s",
					httpSpan, spanEnqueueRoute, workerService, parent.spanID)
			}
			if got, _ := httpSpan.Attr("http.response.status_code"); got != "202" {
				t.Errorf("HTTP span: http.response.status_code = %q, want 202", got)
			}
			if !enqueue.ChildOf(httpSpan) {
				t.Errorf("enqueue span is not a child of the HTTP span:\n%s", tr)
			}
			for _, s := range []otlptest.Span{httpSpan, enqueue} {
				if got := s.Resource["service.instance.id"]; got != "web" {
					t.Errorf("span %s from instance %v, want the web process's", s, got)
				}
			}
			checkTree(t, tr, parent.spanID)
			if got := tr.Services(); !slices.Equal(got, []string{workerService}) {
				t.Errorf("services of the trace %v, want only %s", got, workerService)
			}

			stopWorkers(t, workers) // flushes their logs
			checkTaskLog(t, workers[len(workers)-1], id, process, requestID)
			if errs := r.Errors(); len(errs) > 0 {
				t.Errorf("the receiver refused requests: %v", errs)
			}
			t.Logf("trace:\n%s", tr)
		})
	}
}

// TestTracingEnqueueCLI enqueues a task with the enqueue CLI, exporting to
// a local OTLP receiver like the worker that runs it: the CLI's enqueue
// span (service "enqueue") is the parent of the worker's handler span.
// With TRACEPARENT set the trace continues the caller's; without, the CLI
// starts it. The last case sends to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// gzipped.
func TestTracingEnqueueCLI(t *testing.T) {
	t.Parallel()

	r := otlptest.NewReceiver(t)
	redisURL := proctest.RedisServer(t).URL()
	queue := uniqueName(t)
	w, _ := startTracedWorker(t, redisURL, queue, false, tracingEnv(r, "worker")...)

	tests := []struct {
		name            string
		giveTraceParent bool
		// giveOTEL, when set, replaces the CLI's OTEL_* settings.
		giveOTEL []string
	}{
		{name: "new trace"},
		{name: "TRACEPARENT", giveTraceParent: true},
		{
			// The traces endpoint used as it is, the body gzipped: the
			// exporter's own variables reach it.
			name: "traces endpoint gzip",
			giveOTEL: []string{
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" + r.TracesURL(),
				"OTEL_EXPORTER_OTLP_COMPRESSION=gzip",
				"OTEL_RESOURCE_ATTRIBUTES=service.instance.id=cli",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := queue + "-cli-" + strings.ReplaceAll(strings.ToLower(tt.name), " ", "-")
			otel := tracingEnv(r, "cli")
			if tt.giveOTEL != nil {
				otel = tt.giveOTEL
			}
			env := append([]string{"REDIS_CONNECTION_URL=" + redisURL}, otel...)
			var parent traceParent
			if tt.giveTraceParent {
				parent = newTraceParent(t)
				env = append(env, "TRACEPARENT="+parent.header())
			}
			runEnqueue(t, env, "--queue", queue, "--id", id, tasks.TypeProcessData, fmt.Sprintf(`{"key":%q,"work":1000}`, id))

			process, tr := waitTaskTrace(t, r, id)
			enqueue, _ := tr.Parent(process)
			checkEnqueue(t, enqueue, queue, id, enqueueService)
			checkProcess(t, tr, process, enqueue, queue, id, "worker")
			if got := enqueue.Resource["service.instance.id"]; got != "cli" {
				t.Errorf("enqueue span from instance %v, want the CLI's", got)
			}

			if tt.giveTraceParent {
				if process.TraceID != parent.traceID {
					t.Errorf("trace %s, want TRACEPARENT's %s:\n%s", process.TraceID, parent.traceID, tr)
				}
				checkTree(t, tr, parent.spanID)
			} else {
				checkTree(t, tr, "")
			}
			// The trace's root is the CLI's.
			for _, s := range tr {
				if _, ok := tr.Parent(s); !ok && s.Service != enqueueService {
					t.Errorf("the trace's root %s is not the CLI's", s)
				}
			}
			if got := tr.Services(); !slices.Equal(got, []string{enqueueService, workerService}) {
				t.Errorf("services of the trace %v, want %s and %s", got, enqueueService, workerService)
			}
			t.Logf("trace:\n%s", tr)
		})
	}
	stopWorkers(t, []*proctest.Proc{w})
	if errs := r.Errors(); len(errs) > 0 {
		t.Errorf("the receiver refused requests: %v", errs)
	}
}

// TestTracingOff runs the worker and the CLI without tracing and wants
// nothing sent: with no OTEL_* variable at all (a receiver on the OTLP
// default port localhost:4318, when that port is free, must get no span
// of the test's traces), with OTEL_SDK_DISABLED=true, and with
// OTEL_TRACES_EXPORTER=none, both beside an endpoint that would otherwise
// turn tracing on. A task enqueued over HTTP (with a traceparent) and one
// enqueued by the CLI still run, and the request id still reaches the
// task's log line.
func TestTracingOff(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// giveEnv returns the OTEL_* settings and the receiver to watch.
		giveEnv func(t *testing.T) ([]string, *otlptest.Receiver)
	}{
		{
			name: "unset",
			giveEnv: func(t *testing.T) ([]string, *otlptest.Receiver) {
				r, err := otlptest.NewReceiverAt(t, "127.0.0.1:4318")
				if err != nil {
					t.Logf("the OTLP default port is taken (%v): checking only that the task runs", err)
					return nil, nil
				}
				return nil, r
			},
		},
		{
			name: "OTEL_SDK_DISABLED",
			giveEnv: func(t *testing.T) ([]string, *otlptest.Receiver) {
				r := otlptest.NewReceiver(t)
				return append(tracingEnv(r, "x"), "OTEL_SDK_DISABLED=true"), r
			},
		},
		{
			name: "exporter none",
			giveEnv: func(t *testing.T) ([]string, *otlptest.Receiver) {
				r := otlptest.NewReceiver(t)
				return append(tracingEnv(r, "x"), "OTEL_TRACES_EXPORTER=none"), r
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			otel, r := tt.giveEnv(t)
			redisURL := proctest.RedisServer(t).URL()
			queue := uniqueName(t)
			w, base := startTracedWorker(t, redisURL, queue, true, otel...)

			parent := newTraceParent(t)
			httpID, requestID := queue+"-http", "req-"+queue
			postTask(t, base, queue, httpID, map[string]string{
				"traceparent":  parent.header(),
				"X-Request-ID": requestID,
			})
			cliID := queue + "-cli"
			runEnqueue(t, append([]string{"REDIS_CONNECTION_URL=" + redisURL}, otel...),
				"--queue", queue, "--id", cliID, tasks.TypeProcessData, fmt.Sprintf(`{"key":%q,"work":1000}`, cliID))
			waitTaskDone(t, w, httpID, cliID)
			stopWorkers(t, []*proctest.Proc{w}) // a tracer would flush now

			for _, l := range w.LogLinesWithMsg("task done") {
				if l["task_id"] == httpID && l["request_id"] != requestID {
					t.Errorf("\"task done\" of %s has request_id %v, want %s", httpID, l["request_id"], requestID)
				}
				if _, ok := l["trace_id"]; ok {
					b, _ := json.Marshal(l)
					t.Errorf("\"task done\" has a trace_id with tracing off: %s", b)
				}
			}
			if r == nil {
				return
			}
			if tt.name != "unset" {
				if n := r.Requests(); n != 0 {
					t.Errorf("tracing is off, but the receiver got %d requests:\n%s", n, r.Spans())
				}
				return
			}
			// The default port may get spans of other programs: only those
			// of this test count.
			mine := r.Spans().Match(func(s otlptest.Span) bool {
				if s.TraceID == parent.traceID {
					return true
				}
				for _, v := range s.Attrs {
					if strings.Contains(fmt.Sprint(v), queue) {
						return true
					}
				}
				return false
			})
			if len(mine) > 0 {
				t.Errorf("with no OTEL_* set, spans reached the default endpoint:\n%s", mine)
			}
		})
	}
}

// waitTaskDone waits until w has logged "task done" for every id.
func waitTaskDone(tb testing.TB, w *proctest.Proc, ids ...string) {
	tb.Helper()
	deadline := time.Now().Add(traceTimeout)
	for {
		done := make(map[string]bool)
		for _, l := range w.LogLinesWithMsg("task done") {
			if id, ok := l["task_id"].(string); ok {
				done[id] = true
			}
		}
		missing := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return done[id] })
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) || w.Exited() {
			tb.Fatalf("%s: tasks %v not done after %v", w, missing, traceTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTracingFlushAtExit checks that the worker sends the spans it holds
// when it stops: with a batch delay of ten minutes, the handler span of a
// task done stays in the worker until SIGTERM, and has arrived by the
// time the worker has exited.
func TestTracingFlushAtExit(t *testing.T) {
	t.Parallel()

	r := otlptest.NewReceiver(t)
	redisURL := proctest.RedisServer(t).URL()
	queue := uniqueName(t)
	w, _ := startTracedWorker(t, redisURL, queue, false,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+r.URL(),
		"OTEL_BSP_SCHEDULE_DELAY=600000",
		"OTEL_RESOURCE_ATTRIBUTES=service.instance.id=flush")

	id := queue + "-flush"
	// Enqueued without tracing: the handler span is the trace's root.
	runEnqueue(t, []string{"REDIS_CONNECTION_URL=" + redisURL},
		"--queue", queue, "--id", id, tasks.TypeProcessData, fmt.Sprintf(`{"key":%q,"work":1000}`, id))
	waitTaskDone(t, w, id)
	time.Sleep(200 * time.Millisecond) // what a short batch delay would have sent by now
	if ss := r.Spans().Match(processOf(id)); len(ss) != 0 {
		t.Fatalf("the handler span arrived before the worker stopped, with a batch delay of 10 minutes:\n%s", ss)
	}

	stopWorkers(t, []*proctest.Proc{w})
	ss := r.Spans()
	process := ss.Match(processOf(id))
	if len(process) != 1 {
		t.Fatalf("%d handler spans of %s after the worker exited, want 1; received:\n%s", len(process), id, ss)
	}
	if got := process[0].Resource["service.instance.id"]; got != "flush" {
		t.Errorf("handler span from instance %v, want flush", got)
	}
	if redis := ss.InTrace(process[0].TraceID).Match(isRedis); len(redis) == 0 {
		t.Errorf("no Redis span of the handler after the worker exited:\n%s", ss.InTrace(process[0].TraceID))
	}
	if errs := r.Errors(); len(errs) > 0 {
		t.Errorf("the receiver refused requests: %v", errs)
	}
}
