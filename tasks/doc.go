// Package tasks defines forgeq's task types: their names, typed payloads,
// constructors and handlers, and the [Registry] that the worker, the enqueue
// CLI and the web process all read.
//
// A task type is declared once with [Define]: a type name, a description, a
// payload struct and a handler. Payloads decode strictly: unknown fields,
// missing required fields (those whose json tag lacks omitempty), wrong
// types, a field given twice (at any depth) and strings that are not valid
// UTF-8 are errors ([CheckJSON]; encoding/json alone would keep the last
// of the two and turn bad bytes into U+FFFD), and a payload that can never
// parse fails its task with asynq.SkipRetry, so it is archived with a
// clear message instead of being retried forever.
//
// # Enqueue options
//
// Every task built by NewTask (a typed handle, a New...Task constructor, a
// [Registry], a [PublishedType]), and so every task the enqueue CLI and
// POST /api/tasks/{type} enqueue, has its asynq options checked by
// [CheckOption], with the same rules and rule texts everywhere: queue
// names and task ids of 1 to 128 of A-Z a-z 0-9 . _ : - ([CheckQueueName],
// the rule of the worker's queue list too, and [CheckTaskID]), a
// process-at time neither older than [ProcessAtSkew] nor more than 366
// days ahead, a deadline in the future, timeouts and unique locks of at
// least 1s, at most 1000 retries, and no task groups. The error is an
// [*OptionError]; entry points show it naming the option their way
// ([OptionError.Named]).
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
// # Task catalogue
//
// Each worker publishes the types it serves to the task catalogue in
// Redis ([Catalog]) when it starts, refreshes its entries every 30 seconds
// and withdraws from them when it shuts down; the types stay published.
// A producer built without a type (the enqueue CLI, the web process, a
// program in another language) reads the catalogue to validate a payload
// against the type's published JSON Schema and to apply its default
// queue, retries and timeout ([PublishedType.NewTask]).
//
// The key layout, which producers in other languages may rely on (a Redis
// ACL user needs ~forgeq:* to read or write it):
//
//	forgeq:catalog:types            HASH  field: type name; value: its JSON document
//	forgeq:catalog:workers:<type>   ZSET  member: worker id; score: last seen, Unix seconds
//
// A type's document:
//
//	{
//	  "type": "data:process",
//	  "description": "Cache-aside computation ...",
//	  "queue": "default",
//	  "max_retry": 5,                 // absent: asynq's default (25)
//	  "timeout_seconds": 600,         // absent: asynq's default (30 minutes)
//	  "retention_seconds": 3600,      // absent: none (a completed task is deleted)
//	  "takes_previous": "...",        // absent: takes no previous workflow result
//	  "schema": {...},                // the payload's JSON Schema
//	  "published_at": "2026-01-02T15:04:05Z"
//	}
//
// The schema ([Definition.Schema]) is JSON Schema draft 2020-12, generated
// from the payload struct: "type": "object", one property per field
// (described by the field's `help` tag), "required" listing the fields
// whose json tag lacks omitempty, "additionalProperties": false, and the
// ranges of the fields' `jsonschema` tags (minimum, maximum, minLength,
// maxLength, minItems, maxItems). The title is the type name and the
// description the type's. A payload that passes it can still fail checks
// the schema cannot express (the built-in types refuse control characters
// in keys, for one); the worker's strict decoding has the last word.
//
// The last worker to publish a type wins: [Catalog.Publish] reports the
// types it replaced with a different definition, which the worker logs as
// a warning. Workers not seen for [CatalogWorkerExpiry] (24 hours) drop
// out of the listings, and publishing deletes their entries. The catalogue
// sends no MULTI, so it works on Redis Cluster.
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
