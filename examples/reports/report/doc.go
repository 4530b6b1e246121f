// Package report is the report service of the forgeq example program
// examples/reports: its task types, their handlers, a task middleware and
// its HTTP routes.
//
// # Flow
//
// A report is an account's daily figures (orders, revenue, refunds) over a
// date range of complete days (UTC). POST /reports, or a report:build task
// enqueued any other way, plans one: report:build checks the account and
// the dates, stores the report's plan in the cache and fans out one
// report:day task per day through the worker's Enqueuer. Each report:day
// computes its day's figures (deterministic from the account and the date,
// costing Options.Work rounds of SHA-256), reports its progress and caches
// them. GET /reports/{id} reads the plan and every day at once through the
// cache manager's futures and answers the report, running or complete. A
// periodic report:cleanup deletes the data of expired reports.
//
// # Workflow
//
// POST /reports/publish makes a report as a workflow (package
// forgeq/workflow) whose id is the report's, instead of report:build's
// hand-made fan-out:
//
//	Chain(
//	    report:plan,                                  // step "0"
//	    Group(report:day, one per day)                // steps "1.m0", "1.m1", ...
//	        .Then(report:summarize, workflow.Always), // step "1.cb"
//	    report:publish,                               // step "2"
//	)
//
// report:plan stores the plan as report:build does, without enqueuing the
// days: the group runs them in parallel. Once every day has succeeded or
// failed for good (its retries used up), the callback report:summarize runs
// once: it reads the group's outcomes (workflow.Results), adds up the days
// computed and lists the failed ones, and returns a Summary. report:publish
// reads that Summary as the result of the stage before it
// (workflow.PreviousAs) and stores it beside the report, where GET
// /reports/{id} shows it; a report with failed days is then
// StatusPartial. The workflow's state is at /api/workflows/{id}.
//
// # Keys
//
// Under the cache manager's prefix:
//
//	report:{id}                     the plan (JSON Plan), kept for the retention plus a grace period
//	report-days:{hour}:{id}:{date}  one day's figures (JSON Day); hour is the hour
//	                                the report expires in (2006010215, UTC)
//	report-days:{hour}:{id}:summary the summary report:publish stored (JSON Summary)
//
// Grouping the days (and summaries) by expiry hour lets report:cleanup
// delete every expired report of an hour with one DeletePattern, on time,
// rather than each key lingering until its own TTL (the TTLs are only a
// backstop). A plan past its expiry counts as gone.
//
// # Failures
//
// Bad input fails for good (asynq.SkipRetry): an unknown account, a day
// that is not over yet, a report id already used for another report, a
// day of a report that does not exist, a report:summarize or
// report:publish run outside a report workflow. Redis errors are returned
// as they are, and asynq retries.
package report
