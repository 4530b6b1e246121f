// Package worker runs a forgeq program: the asynq server that handles its
// task types, the scheduler of its periodic tasks, the embedded web process
// (health, task and cache API, /metrics, the dashboard under /monitoring/)
// with its own HTTP routes, and the enqueue command for its types. All of
// them share one cache manager and one Redis client. cmd/worker is this
// package with the built-in task types and nothing added.
//
// # Writing a program
//
// A program's main builds an [App] with [New], adds to it and calls
// [App.Main], which reads the flags, the environment and the optional
// config file, runs until SIGINT, SIGTERM or SIGHUP and exits:
//
//	var Resize = tasks.Define("image:resize", "Resizes an image.",
//		func(ctx context.Context, deps tasks.Deps, p ResizePayload) ([]byte, error) {
//			// ...
//		})
//
//	func main() {
//		worker.New("images").
//			Register(Resize).
//			Use(tracing).
//			Handle("GET /images/{id}", images).
//			Schedule(worker.Periodic{Name: "nightly", Spec: "@daily", Type: Resize.Name(), Payload: ResizePayload{All: true}}).
//			Main()
//	}
//
// The App is configured before it runs; mistakes in it (a type name
// registered twice, a route that conflicts with a built-in one, a periodic
// entry of an unknown type) stop the program at once with exit code 2 and
// a message naming what is wrong.
//
// # Task types
//
// [App.Register] adds task types made with tasks.Define: the worker serves
// them, the enqueue command and the web process's POST /api/tasks/{type}
// enqueue them with their payloads checked, and the worker publishes them
// to the task catalogue in Redis. A handler gets the process's cache (used
// synchronously), logger and asynq client in its tasks.Deps, so it can
// enqueue follow-up tasks with a type's typed Enqueue:
//
//	info, err := Notify.Enqueue(ctx, deps.Enqueuer, NotifyPayload{ID: p.ID})
//
// Every type's task metrics exist in /metrics from the first scrape, at
// zero, for each queue the worker serves.
//
// # Middleware
//
// [App.Use] adds asynq middleware around every handler. The worker's own
// middleware runs outside it: one log line per task, the task metrics and
// panic recovery, so a panic in a middleware or a handler fails the task
// (outcome "panic" in forgeq_tasks_failed_total) and asynq retries it.
//
// # Routes
//
// [App.Handle] adds a route to the web process. Its handler is built once,
// when the worker starts, from the process's [Services]: the cache manager
// (use its async side, GetAsync and SetAsync, in handlers), the asynq
// client and inspector, the registry and a logger. A route goes through
// the layers of the built-in API routes: the access log, metrics labelled
// with its pattern, panic recovery, the body limit, cross-origin
// protection, the API rate limit and, when HTTP_AUTH_USERNAME and
// HTTP_AUTH_PASSWORD are set, authentication.
//
// # Periodic tasks
//
// [App.Schedule] adds a [Periodic] entry: a task of a type, with a
// payload, enqueued at every tick of a spec ("@every 30s", "@daily", a cron
// spec). Entries of WORKER_SCHEDULE are added to those in code, and so
// are the entries stored in Redis with package schedule, which can be
// added, changed, paused and removed while the workers run (a stored entry
// replaces the program's entry of its name). However many replicas run,
// each tick is enqueued once. The dashboard's Schedulers page lists the
// entries that run, with their next and previous runs.
//
// # Running it
//
// [App.Main] runs the program with the process's arguments and
// environment; [App.Run] does the same with given ones and returns the
// exit code, for tests and examples ([Env]; [Env.Started] reports the
// running worker's [Started] services and addresses). The program runs the
// worker by default, and its enqueue command as `NAME enqueue`; `NAME
// --help` lists the settings. With no Redis configured, the worker uses
// the Redis at 127.0.0.1:6379 or starts an embedded in-memory one there:
// redis-server as a child process when it is on PATH (no persistence,
// stopped with the worker, and on Linux killed with it), else the slower
// miniredis. Either way its data is lost when the worker exits.
//
// The worker shuts down gracefully when its ctx ends or a signal arrives:
// it stops taking tasks, lets running ones finish up to
// WORKER_SHUTDOWN_TIMEOUT (asynq puts the rest back on their queues),
// drains the web process and the cache manager's asynchronous work, and
// returns.
package worker
