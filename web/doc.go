// Package web is forgeq's embedded web process: the seed's FastAPI side in
// Go. It serves health checks, a cache-aside route, tasks and workflows
// over HTTP, login sessions, Prometheus metrics, the asynqmon dashboard
// and a workflows page, all on the process's one [cachemgr.Manager] (and
// so one Redis connection pool), used through its async side.
//
// # Routes
//
//	GET  /                         an index pointing to the dashboard, the workflows page, these routes and /health/ready
//	                               (HTML; JSON for Accept: application/json), unless Options.Routes serve GET /
//	GET  /health/live              200 {"status":"ok"} while serving
//	GET  /health/ready             200 {"status":"ready","checks":{"redis":"ok","worker":"ok","server":"ok"}};
//	                               503 "unready" while Redis or the worker is down, or once shutdown has begun
//	GET  /health/redis             200 {"status":"healthy"}; 503 {"status":"unhealthy","error":"..."}
//	GET  /api/cache/{key}?work=N   200 {"key":..,"data":..,"source":"cache"|"computed"}; the key may contain "/"
//	POST /api/tasks/{type}         202 {"id","queue","type","state","process_at"?,"status_url","events_url","page_url"};
//	                               Location: status_url
//	GET  /api/tasks/{queue}/{id}   200 the task's state, payload, result, last error, retries, times, progress
//	GET  /api/tasks/{queue}/{id}/events
//	                               the task's events (package events) as Server-Sent Events: first a "state"
//	                               event (the body above), then each event (id: the stream id, event: the kind,
//	                               data: its JSON) until the final one; resumes after Last-Event-ID (204 when
//	                               the task has ended and nothing is newer); a heartbeat comment every 15s;
//	                               ends when its session does (checked every 2s)
//	DELETE /api/tasks/{queue}/{id} cancels it (package control): 200 {"queue","id","type","was","state","by","reason",
//	                               "cancelled_at","status_url"}, state "cancelled" (removed before it ran) or
//	                               "archived" (stopped while it ran); 202 with state "active" when its handler had
//	                               not returned after control.Wait; 404 not_found; 409 already_finished
//	GET  /api/task-types           200 {"task_types":[{"type","description","queue","fields":[...],"local","published","workers"?,"schema"}],
//	                               "catalog_error"?}: the registered types, then those only the task catalogue has
//	POST /api/workflows            a workflow in its JSON form (workflow.Parse): 202 {"id","name"?,"total","started",
//	                               "status_url"}; Location: status_url
//	GET  /api/workflows?limit=N    200 {"workflows":[state, ...]}: the most recent first (N: default 50, at most 1000)
//	GET  /api/workflows/{id}       200 the state and a page of steps (?offset=, ?limit=: default 100, at most 1000):
//	                               {"id","name"?,"status","total","done","failed","percent","failed_step"?,"error"?,
//	                               "created","started"?,"updated","finished"?,"retention_seconds","status_url",
//	                               "steps":[{"path","type","queue","task_id","status","error"?,"progress"?}],
//	                               "steps_total","offset","limit"}
//	DELETE /api/workflows/{id}     cancels it: 200 the state; 409 already_finished once it has finished
//	GET  /workflows                the workflows page: recent workflows, linking to
//	GET  /workflows/{id}           a workflow's state, progress bar and steps, reloading every 2s until it
//	                               has finished, with a Cancel button (POST /workflows/{id}/cancel)
//	GET  /tasks/{queue}/{id}       a task's page: state, progress bar, result or error, following its events
//	GET  /login                    the dashboard's login page (?next=/local/path)
//	POST /login                    JSON or form {username, password}: sets the forgeq_session cookie
//	POST /logout                   ends the session and clears the cookie
//	GET  /metrics                  Options.Metrics, when set
//	     /monitoring/              the asynqmon dashboard; its API under /monitoring/api/
//
// The body of POST /api/tasks/{type} is
//
//	{"payload": {...}, "queue": "default", "id": "job-1", "delay": "90s",
//	 "process_at": "2026-01-02T15:04:05Z", "unique": "1h", "max_retry": 3,
//	 "timeout": "30s", "deadline": "2026-01-02T16:00:00Z", "retention": "24h"}
//
// where only payload matters to the task; everything else is optional and
// overrides the type's defaults. A type not in Options.Registry is looked
// up in the task catalogue that running workers publish (see the tasks
// package): its payload is validated against the published JSON Schema
// and it gets the published defaults. A type neither has is a 400
// unknown_task_type naming the registered and the published types; a
// catalogue that cannot be read is a 503.
//
// The body of POST /api/workflows is a workflow's JSON form, the one the
// enqueue command's --workflow takes:
//
//	{"id": "nightly-1", "name": "nightly", "retention": "72h",
//	 "workflow": {"chain": [{"type": "data:process", "payload": {...}},
//	                        {"group": [...], "callback": {...}, "policy": "all_succeeded"}]}}
//
// Every step is checked as POST /api/tasks/{type} checks a task (its type
// registered or published, its payload and options) before anything is
// written: a refusal is a 400 invalid_workflow whose message names the
// step by its path ("step 1.m0 (data:process): invalid payload: ..."), a
// taken id a 409 conflict.
//
// # Errors
//
// Every error response has one shape, whatever produced it (a handler, the
// router's 404 and 405, a panic, asynqmon):
//
//	{"error":{"code":"invalid_payload","message":"..."},"request_id":"..."}
//
// The codes are bad_request, malformed_json, invalid_key, invalid_work,
// unknown_task_type, invalid_payload, invalid_option, invalid_task_ref,
// invalid_workflow, invalid_parameter (400); unauthorized,
// invalid_credentials (401); cross_origin, forbidden (403); not_found
// (404); method_not_allowed (405); conflict (409: a task id, workflow id
// or unique lock is taken), already_finished (409: cancelling a finished
// workflow); request_too_large (413);
// unsupported_media_type (415); rate_limited (429, with Retry-After);
// internal (500); unavailable, shutting_down (503). The health checks
// answer their own bodies, with 503 when unhealthy. When Redis is
// unreachable, they tell only clients with the credentials (a session, or
// basic auth, which alone works while Redis is down) what the error is;
// everyone else gets "redis unreachable", and the log gets the error, once
// per outage and then at most once a minute.
//
// # Authentication
//
// With Options.AuthUsername and AuthPassword set, every /api/ route, the
// dashboard (its pages and its API), the workflows pages and the task
// pages need a
// session cookie from POST
// /login or HTTP basic auth; the health checks, /metrics (unless
// Options.MetricsAuth), the login page,
// POST /login and POST /logout stay open. Password attempts are limited
// per client address (Options.LoginLimit). Without credentials nothing
// needs them, which [New] allows only on a loopback address. Cross-origin
// browser requests that change state are refused
// ([http.CrossOriginProtection]), and so are those of GET /api/cache/{key},
// which computes and stores: a page of another site could otherwise make a
// browser send one, with its SameSite=Lax session cookie, by a link.
//
// A session is bound to the credentials it was made with: it holds the
// HMAC-SHA-256 of the username keyed with a secret derived from the
// password (PBKDF2), never either of them. Once the credentials change,
// every older session is refused (401) and deleted, on every server.
//
// An open task event stream checks its session again every 2s, without
// sliding its expiry: a logout, or the session's expiry, ends the stream,
// and the client's reconnection gets 401.
//
// # Usage
//
//	srv, err := web.New(web.Options{Addr: "127.0.0.1:8080", Manager: m, Logger: log})
//	if err != nil { ... }
//	g.Go(func() error { return srv.Run(ctx) }) // until ctx ends, then a graceful shutdown
//
// On an http.Server of your own, end the open task event streams when it
// shuts down, as Run does ([Server.CloseStreams]):
//
//	hs := &http.Server{Addr: "127.0.0.1:8080", Handler: srv.Handler()}
//	hs.RegisterOnShutdown(srv.CloseStreams)
package web
