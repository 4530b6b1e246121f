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
