// Package tasks defines forgeq's task types: their names, typed payloads,
// constructors and handlers, and the [Registry] that the worker, the enqueue
// CLI and the web process all read.
//
// A task type is declared once with [Define]: a type name, a description, a
// payload struct and a handler. Payloads decode strictly: unknown fields,
// missing required fields (those whose json tag lacks omitempty) and wrong
// types are errors, and a payload that can never parse fails its task with
// asynq.SkipRetry, so it is archived with a clear message instead of being
// retried forever.
//
// # Task types
//
// [Default] holds the built-in types:
//
//   - [TypeProcessData] ("data:process"), the seed's process_data flow:
//     return the cached value of a key, or compute it ([Digest]: rounds of
//     SHA-256 whose number the payload sets) once across every worker
//     through Cache.GetOrCompute, store it and return it. [ProcessData] is
//     its payload, [ProcessDataResult] its result.
//   - [TypeInvalidate] ("cache:invalidate"): delete listed keys, or every
//     key matching a pattern, inside the cache's prefix. [Invalidate],
//     [InvalidateResult].
//   - [TypeWarm] ("cache:warm"): compute and cache many keys ahead of their
//     use. [Warm], [WarmResult].
//
// Each has a New...Task constructor that validates its payload and sets
// the type's default queue, retries and timeout; a handler writes its
// result (JSON) as the asynq task result.
//
// # Progress
//
// Handlers report progress with [Deps.ReportProgress]; the enqueue CLI and
// the web process read it with [ReadProgress]. The built-in handlers treat
// progress as advisory: a report that fails is logged at debug level and
// never fails the task.
//
// # Usage
//
//	reg := tasks.Default()
//	def, _ := reg.Lookup(tasks.TypeProcessData)
//	task, err := def.NewTask([]byte(`{"key":"report:1","work":1000}`))
//	// or, typed:
//	task, err = tasks.NewProcessDataTask(tasks.ProcessData{Key: "report:1", Work: 1000})
//	info, err := client.EnqueueContext(ctx, task)
//
// The worker serves them with [NewMux].
package tasks
