// Package metrics exports forgeq's Prometheus metrics: the cache manager's
// counters and latencies, task outcomes and durations, asynq queue sizes,
// HTTP requests, and the Go runtime and process.
//
// # Usage
//
// Build one [Metrics] per process in main, from the process's cache manager,
// (optionally) an asynq Inspector on the same client, and the task types
// and queues the process serves, then wire it in:
//
//	m, err := metrics.New(metrics.Options{
//		Manager:   cache,
//		Inspector: insp,
//		TaskTypes: registry.Types(),
//		Queues:    []string{"critical", "default", "low"},
//	})
//	if err != nil {
//		return err
//	}
//	mux := tasks.NewMux(registry, deps)
//	mux.Use(m.TaskMiddleware())          // the worker's asynq.ServeMux
//	web.Handle("GET /metrics", m.Handler()) // the web process
//	srv.Handler = m.HTTPMiddleware(nil)(web)
//
// # What is read when
//
// Cache metrics are read at scrape time from [cachemgr.Manager.Stats] (so
// nothing is counted twice). Task and HTTP metrics are counted as tasks and
// requests finish.
//
// Queue metrics come from reads of every queue through the Inspector,
// which take time in Redis (about 0.9s for 2,000 queues), so a scrape
// serves the last completed read instead of always reading:
//
//   - at most one read runs at a time, and reads start at most once per
//     Options.QueueScrapeInterval (default 5s, [DefaultQueueScrapeInterval]):
//     a scrape that comes sooner, or while a read runs, serves the last read
//     at once, however many clients scrape;
//   - the scrape that starts a read waits for it up to
//     Options.QueueScrapeTimeout (default 2s), then serves the last read;
//     the slow read goes on and is served once it completes;
//   - forgeq_queue_scrape_age_seconds is the age of the read served (+Inf
//     before the first good read) and forgeq_queue_scrape_duration_seconds
//     how long it took;
//   - a read with any error serves nothing new: each error, and each read
//     slower than the timeout, counts in forgeq_queue_scrape_errors_total,
//     and the scrapes keep serving the last good read, whose age grows for
//     as long as the reads fail. Alert on the age (e.g. above a minute), not
//     on missing series. Before the first good read no queue series is
//     served;
//   - the cause (the error, or the slowness) is logged as a warning at most
//     once per [QueueWarnInterval] (a minute), with the number of errors
//     since the last warning, and an info line when reads work again.
//
// # Series from the first scrape
//
// A counter series usually appears when it first moves, which leaves
// rate() without a starting point and dashboards with gaps. So the series
// of Options.TaskTypes and Options.Queues exist with zero values from the
// first scrape: forgeq_tasks_in_progress for every type;
// forgeq_tasks_processed_total, forgeq_tasks_recovered_total and
// forgeq_task_duration_seconds for every type and queue; forgeq_tasks_failed_total for every type, queue and
// outcome (retry, archived, skip_retry, canceled, panic); and, with an
// Inspector, the forgeq_queue_* and asynq_* series of every configured
// queue, zero until its first task creates it in Redis.
//
// # Metric names
//
// With the default namespace "forgeq":
//
//	forgeq_cache_calls_total{op}                         counter
//	forgeq_cache_hits_total{op}                          counter
//	forgeq_cache_misses_total{op}                        counter
//	forgeq_cache_errors_total{op}                        counter
//	forgeq_cache_operation_duration_seconds{op}          histogram
//	forgeq_cache_async_in_flight                         gauge
//	forgeq_cache_computations_total                      counter
//	forgeq_cache_pipelines_total                         counter
//	forgeq_cache_pipelined_calls_total                   counter
//	forgeq_cache_tier_hits_total{tier}                   counter  tier: near, redis
//	forgeq_cache_tier_misses_total{tier}                 counter
//	forgeq_cache_near_entries                            gauge    near cache on only
//	forgeq_cache_near_bytes                              gauge    near cache on only
//	forgeq_cache_near_evictions_total                    counter  near cache on only
//	forgeq_cache_near_invalidations_total                counter  near cache on only
//	forgeq_cache_near_flushes_total                      counter  near cache on only
//	forgeq_cache_near_live                               gauge    near cache on only
//	forgeq_tasks_processed_total{task_type,queue}        counter
//	forgeq_tasks_failed_total{task_type,queue,outcome}   counter
//	forgeq_task_duration_seconds{task_type,queue}        histogram
//	forgeq_tasks_in_progress{task_type}                  gauge
//	forgeq_tasks_recovered_total{task_type,queue}        counter
//	forgeq_queue_tasks{queue,state}                      gauge
//	forgeq_queue_latency_seconds{queue}                  gauge
//	forgeq_queue_paused{queue}                           gauge
//	forgeq_queue_processed_total{queue}                  counter
//	forgeq_queue_failed_total{queue}                     counter
//	forgeq_queue_scrape_errors_total                     counter
//	forgeq_queue_scrape_age_seconds                      gauge
//	forgeq_queue_scrape_duration_seconds                 gauge
//	forgeq_http_requests_total{route,method,code}        counter
//	forgeq_http_request_duration_seconds{route,method}   histogram (not of event streams:
//	                                                     see [Metrics.HTTPMiddleware])
//
// the same queue reads under the names of asynq's own exporter
// (github.com/hibiken/asynq/x/metrics), which the asynqmon dashboard's
// charts query from Prometheus; they take no namespace:
//
//	asynq_tasks_enqueued_total{queue,state}              gauge (states active,
//	                                                     pending, scheduled, retry,
//	                                                     archived, completed)
//	asynq_queue_size{queue}                              gauge
//	asynq_queue_latency_seconds{queue}                   gauge
//	asynq_queue_memory_usage_approx_bytes{queue}         gauge
//	asynq_tasks_processed_total{queue}                   counter
//	asynq_tasks_failed_total{queue}                      counter
//
// plus the standard go_* and process_* metrics, which keep their usual
// names so that existing dashboards work, and
// promhttp_metric_handler_errors_total from [Metrics.Handler].
package metrics
