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
// # Keys
//
// Under the cache manager's prefix:
//
//	report:{id}                    the plan (JSON Plan), kept for the retention plus a grace period
//	report-days:{hour}:{id}:{date} one day's figures (JSON Day); hour is the hour
//	                               the report expires in (2006010215, UTC)
//
// Grouping the days by expiry hour lets report:cleanup delete every expired
// report of an hour with one DeletePattern, on time, rather than each key
// lingering until its own TTL (the TTLs are only a backstop). A plan past
// its expiry counts as gone.
//
// # Failures
//
// Bad input fails for good (asynq.SkipRetry): an unknown account, a day
// that is not over yet, a report id already used for another report, a
// day of a report that does not exist. Redis errors are returned as they
// are, and asynq retries.
package report
