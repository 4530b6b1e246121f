// Package workflow runs chains, groups with callbacks and their nesting
// on asynq: a workflow is a tree of stages whose steps are ordinary tasks
// of the program's own types (or of any type the task catalogue knows),
// run by forgeq's workers.
//
// # Building a workflow
//
// A step is a task: Task (a typed task type and payload) or Raw (a type
// name and JSON payload). Chain runs nodes one after another; Group runs
// them in parallel and, with Then, runs a callback exactly once when all
// of them have finished, only if all succeeded (AllSucceeded) or always
// (Always, the failures listed). A chain's step may be a group and a
// group's member a chain, which expresses a DAG of stages:
//
//	flow := workflow.Chain(
//		workflow.Task(Fetch, FetchPayload{Day: day}),
//		workflow.Group(perRegion...).Then(workflow.Task(Summarize, SummarizePayload{}), workflow.Always),
//		workflow.Task(Publish, PublishPayload{}),
//	)
//	info, err := services.Workflows.Submit(ctx, flow, workflow.SubmitOptions{Name: "daily report"})
//
// The same workflow has a JSON form (Parse), taken by the enqueue
// command's --workflow and --file and by POST /api/workflows.
//
// # Submission is all or nothing
//
// Submit checks every step with the one validation every entry point
// uses (the type's NewTask: payload schema and options), the shape (no
// empty chain or group, no cycle, at most MaxDepth deep) and the limits
// (MaxTasks steps, MaxBytes of payloads). A refusal names the step by its
// path (a *StepError) and writes nothing. Otherwise one script writes
// the whole workflow, its record, in one hash slot (its keys share the
// hash tag {<id>}, so this holds on a Redis Cluster too), and marks its
// first steps started; their tasks are then enqueued. The record is the
// commit point: if the process dies between the two writes, a worker's
// reconciler enqueues the missing tasks.
//
// # Step paths and task ids
//
// Steps are named by their path in the tree: the workflow's own chain
// has steps "0", "1", ... (a workflow that is a group or a task is step
// "0"); a group at "1" has members "1.m0", "1.m1", ... and its callback
// "1.cb"; a chain at "1.m0" has steps "1.m0.0", .... The asynq task of a
// step has the id "wf:<workflow id>:<path>" (TaskID), so it shows in the
// dashboard and asynq's Inspector, and enqueuing it twice is a no-op.
//
// # Running steps
//
// worker.App installs Middleware around every handler and runs the
// Reconciler in every worker. When a step's handler succeeds, or fails
// with no retry left (asynq.SkipRetry or its last attempt), one script on
// the workflow's hash slot records it and decides what starts next: the
// next step of its chain, the callback once a group's last member
// finished (counted atomically, so a 100,000-member group costs one
// script per member and nothing at the end), or the workflow's end. The
// same script makes a duplicate completion, which at-least-once delivery
// allows, count once. A failed step stops its chain: the steps after it
// never run, and the workflow's State names the failed step and its
// error. A step's result is the bytes its handler returned (at most
// MaxResultBytes), kept with the workflow.
//
// A chain step, a callback and every retried attempt first check that
// the step has not finished already and that the workflow is still live,
// so a callback runs exactly once; a group's member skips that round trip
// when its worker has begun the workflow in the last few seconds, so a
// member delivered again after it finished (a worker that died between
// the record and asynq's acknowledgement) may run again; it is still
// counted once.
//
// # Passing results
//
// A step reads the result of the stage before it with Previous or, typed,
// PreviousAs; a callback reads its members' results and failures with
// Results. A task type that does so says so where it is declared, with
// tasks.Type.TakesPrevious, and the enqueue command's --list shows it.
// Payloads stay as they were submitted: the result is read from the
// workflow's record when the step asks for it, so a step stays runnable
// alone (test it with WithPrevious).
//
// # State, progress and retention
//
// A workflow is pending until a first step starts, then running, then
// succeeded, failed or cancelled. Get returns its state and aggregate
// progress (Done of Total steps), Steps each step's state, error and own
// progress report (tasks.Deps.ReportProgress), List the recent
// workflows, Wait follows one to its end. A final workflow, with its
// steps' results and errors, stays readable for its retention
// (SubmitOptions.Retention, default DefaultRetention), then expires.
//
// # Cancellation
//
// Cancel makes the workflow cancelled at once, in one script: no chain
// step or callback starts after it; the workers hear of it over Pub/Sub
// (CancelChannel) and stop starting its group members (one dequeued in
// the milliseconds before may still run); the steps waiting in their
// queues are deleted, the running ones are stopped through package
// control (their handler's ctx ends and the task is archived, cancelled;
// a step that still finishes is recorded, and nothing after it starts).
//
// A step whose handler succeeded but whose record could not be written
// (Redis failing) runs again (ErrNotRecorded) without using up a retry.
//
// # Keys
//
// All under KeyPrefix ("forgeq:wf:"): the record of workflow <id> in
// "forgeq:wf:{<id>}" and its hashes, sets and list "forgeq:wf:{<id>}:..."
// (shape, spec, act, done, cnt, res, err, order), all expiring together
// at the end of the retention; RecentKey and RunningKey index them. A
// Redis ACL user of a worker or producer needs ~forgeq:* besides asynq's
// keys.
package workflow
