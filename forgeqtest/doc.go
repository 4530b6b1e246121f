// Package forgeqtest helps test programs built on forgeq: their task
// handlers, the tasks their code enqueues, and whole workers, all without
// a real Redis. It plays the part zaptest plays for zap and rivertest for
// River.
//
// # Handlers
//
// [New] returns a [Harness]: an in-memory Redis (miniredis, its TTLs on the
// wall clock), a *cachemgr.Manager on it, a [Recorder] as the handlers'
// Enqueuer and a zaptest logger whose entries are also observed. [Run]
// runs one handler on a typed payload the way a worker does (the payload
// goes through its JSON form and the type's strict decoding, with a task id
// in the context so that progress reports work) and returns a [Result]:
// the handler's value, its progress reports and its error. [RunJSON] runs
// a handler on raw JSON, for bad-input tests.
//
//	func TestResize(t *testing.T) {
//		h := forgeqtest.New(t)
//		res := forgeqtest.Run(h, image.Resize, image.ResizeArgs{ID: "a1", Width: 64})
//		got := forgeqtest.DecodeResult[image.ResizeResult](t, res)
//		...
//		thumbs := forgeqtest.Payloads(t, h.Enqueuer(), image.Thumbnail)
//		...
//	}
//
// # Enqueued tasks
//
// A [Recorder] is a tasks.Enqueuer that enqueues into its own in-memory
// Redis through a real asynq client, so every option resolves exactly as
// asynq stores it (queue, max retry, timeout, deadline, process-at,
// retention, uniqueness), and keeps the *asynq.TaskInfo of each task in
// order: [Recorder.Enqueued], [Recorder.OfType], [Payloads]. Hand it to the
// code under test wherever it takes a tasks.Enqueuer.
//
// # Whole workers
//
// [StartWorker] runs a *worker.App in the test process on an embedded
// in-memory Redis with its web process on a free loopback port, and stops
// it when the test ends: an integration test enqueues with
// [Worker.Client], calls the routes at [Worker.URL] and waits for tasks
// with [Worker.WaitTask]. Its JSON log is shown when the test fails.
//
// Every helper takes a testing.TB, fails the test with tb.Fatal and
// registers its teardown with tb.Cleanup.
package forgeqtest
