package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"syscall"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/enqueue"
	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// App is a forgeq program: its task types, task middleware, HTTP routes and
// periodic entries, and the one call that runs it. Build it with New in
// main, add to it, then call Main. An App is configured before it runs:
// its methods are not safe to call concurrently with Run or Main.
type App struct {
	name       string
	types      []tasks.Declared
	middleware []asynq.MiddlewareFunc
	routes     []route
	periodics  []Periodic
	// spanExporter, when set (by tests), turns tracing on with every span
	// sent to it (telemetry.Options.Exporter).
	spanExporter sdktrace.SpanExporter
}

// route is one HTTP route added with Handle.
type route struct {
	pattern string
	handler func(Services) http.Handler
}

// New returns an empty App named name: the program's name in --help and
// in the messages of its enqueue command. An empty name means "worker".
func New(name string) *App {
	if name == "" {
		name = "worker"
	}
	return &App{name: name}
}

// Register adds task types (each a *tasks.Type[P] made by tasks.Define, or
// its *tasks.Definition): the worker serves them, its enqueue command and
// web process enqueue them, and it publishes them to the task catalogue. A
// type name registered twice stops Run with exit code 2.
func (a *App) Register(types ...tasks.Declared) *App {
	a.types = append(a.types, types...)
	return a
}

// Use adds task middleware. The worker runs its own middleware outside
// them (one log line per task, panic recovery, metrics), then these in the
// order given, the first outermost, then the handler. A nil middleware
// stops Run with exit code 2.
func (a *App) Use(mw ...asynq.MiddlewareFunc) *App {
	a.middleware = append(a.middleware, mw...)
	return a
}

// Handle adds an HTTP route to the embedded web process. pattern is an
// http.ServeMux pattern ("GET /reports/{id}"); h is called once, when the
// worker starts, with the process's services, and returns the route's
// handler. The route goes through every layer the built-in /api/ routes
// do: request id, access log, panic recovery, metrics (labelled with
// pattern), body limit, cross-origin protection, the API rate limit and,
// when credentials are configured, authentication. A pattern that
// conflicts with a built-in route or another one, a malformed pattern, or
// an h that is nil or returns nil stops Run with exit code 2. With
// HTTP_ADDR off there is no web process: h is not called, and the worker
// logs a warning that the routes are not served.
func (a *App) Handle(pattern string, h func(Services) http.Handler) *App {
	a.routes = append(a.routes, route{pattern, h})
	return a
}

// Schedule adds a periodic entry: at every tick of p.Spec, a task of p.Type
// with p.Payload is enqueued, once however many replicas run (see the
// README's Periodic tasks). Entries from WORKER_SCHEDULE are added to
// these; a name given twice, an unknown type or a payload the type refuses
// stops Run with exit code 2. Entries stored in Redis with package
// schedule (added, changed, paused and removed at run time) run beside
// them; a stored entry of the same name replaces this one while it is
// stored.
func (a *App) Schedule(p Periodic) *App {
	a.periodics = append(a.periodics, p)
	return a
}

// Periodic is a periodic entry added in code with App.Schedule. It has the
// fields of a WORKER_SCHEDULE entry.
type Periodic struct {
	// Name identifies the entry: unique, of A-Z a-z 0-9 _ . -, and part of
	// the id of every task it enqueues.
	Name string
	// Spec is "@every <duration>" (whole seconds), a descriptor such as
	// "@hourly", or a five-field cron spec, in UTC unless it starts with
	// CRON_TZ=Area/City.
	Spec string
	// Type is the task type, which must be registered.
	Type string
	// Payload is the task's payload: a struct or map (marshalled to JSON),
	// or JSON text as a json.RawMessage, []byte or string. nil means {}.
	Payload any
	// Queue, when not empty, overrides the type's queue.
	Queue string
}

// Services are the process-wide pieces a route gets: the one cache manager
// (use its async side in handlers), the asynq client and inspector on its
// Redis client, the task registry and the logger. Each is safe for
// concurrent use, and usable until Run returns: the worker closes the
// cache manager, and with it the Redis client, on its way out.
type Services struct {
	// Manager is the process's cache manager.
	Manager *cachemgr.Manager
	// Enqueuer enqueues tasks; pass it to a tasks.Type's Enqueue. It is
	// Client with the enqueue span, the caller's trace context and
	// request id carried into the task, and the enqueued event.
	Enqueuer *tasks.Client
	// Client is the plain asynq client under Enqueuer (no span, no
	// trace context, no event).
	Client *asynq.Client
	// Inspector reads queues and tasks.
	Inspector *asynq.Inspector
	// Registry holds the App's task types.
	Registry *tasks.Registry
	// Logger is the web process's logger.
	Logger *zap.Logger
	// Workflows submits workflows (checked against the App's types and
	// the task catalogue), reads their state and cancels them.
	Workflows *workflow.Client
}

// Env is where a run of the program reads its environment and writes its
// output: what Run takes instead of the process's own, so that tests and
// examples run a program in-process. A zero field means the process's own.
type Env struct {
	// Getenv reads an environment variable; nil means os.Getenv.
	Getenv func(string) string
	// Stdin, Stdout and Stderr are the program's standard streams; nil
	// means the process's own. The worker writes its log to Stderr and
	// --help to Stdout.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Started, when not nil, is called once the worker is running: its
	// Redis chosen, its web process listening, its asynq server started.
	// It is called on another goroutine than Run's and must not block:
	// the worker's shutdown waits for it. forgeqtest uses it.
	Started func(Started)
}

// Started describes a running worker, for Env.Started: its services, its
// Redis and the address of its web process.
type Started struct {
	Services
	// RedisURL is the Redis the worker uses (an embedded one's address
	// when it started one); it may hold a password.
	RedisURL string
	// HTTPAddr is the web process's address, "" when it is off.
	HTTPAddr string
}

// withDefaults returns e with the process's own in place of its zero
// fields.
func (e Env) withDefaults() Env {
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Stdin == nil {
		e.Stdin = os.Stdin
	}
	if e.Stdout == nil {
		e.Stdout = os.Stdout
	}
	if e.Stderr == nil {
		e.Stderr = os.Stderr
	}
	return e
}

// Main runs the program with os.Args and the process's environment and
// exits with Run's exit code. SIGINT, SIGTERM and SIGHUP shut the worker
// down gracefully (a second one kills it); SIGINT and SIGTERM end the
// enqueue command's wait. Call it last in main.
func (a *App) Main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "enqueue" {
		os.Exit(a.mainEnqueue(args[1:]))
	}
	os.Exit(a.Run(context.Background(), args, Env{}))
}

// MainEnqueue is Main for a program that is only the enqueue command, as
// cmd/enqueue is: `enqueue ...` rather than `worker enqueue ...`.
func (a *App) MainEnqueue() {
	os.Exit(a.mainEnqueue(os.Args[1:]))
}

func (a *App) mainEnqueue(args []string) int {
	// The command reports Redis errors itself; go-redis's own log lines
	// about them would only repeat them.
	redis.SetLogger(enqueue.QuietRedis{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.RunEnqueue(ctx, args, Env{})
}

// Run runs the program with args (without the program name) and returns
// its exit code:
//
//	NAME [flags]                  the worker (see --help)
//	NAME worker [flags]           the same
//	NAME enqueue [flags] TYPE ... the enqueue command for the App's types (see enqueue --help)
//	NAME --version                the program's version (NAME enqueue --version too)
//
// The worker returns when ctx ends or SIGINT, SIGTERM or SIGHUP arrives
// and it has shut down: 0 after a clean shutdown, 2 for bad flags,
// settings or App configuration, 1 for any other failure. The enqueue
// command's codes are in its --help. Error messages escape the control
// characters of what they quote.
//
// While the worker runs, go-redis's own log lines go through the worker's
// logger as warnings, at most one of a kind every few seconds: Run sets
// go-redis's process-wide logger (redis.SetLogger), and drops its lines
// between runs.
func (a *App) Run(ctx context.Context, args []string, env Env) int {
	env = env.withDefaults()
	if len(args) > 0 {
		switch args[0] {
		case "enqueue":
			return a.RunEnqueue(ctx, args[1:], env)
		case "worker":
			args = args[1:]
		}
	}
	err := a.run(ctx, args, env)
	if err == nil {
		return 0
	}
	fmt.Fprintf(env.Stderr, "%s: %s\n", a.name, termtext.Escape(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// RunEnqueue runs the enqueue command with args and returns its exit code:
// 0 success, 2 bad usage or input (nothing enqueued), 1 a runtime failure.
// Types the App does not have are looked up in the task catalogue that
// running workers publish.
func (a *App) RunEnqueue(ctx context.Context, args []string, env Env) int {
	env = env.withDefaults()
	reg, err := a.registry()
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s enqueue: %s\n", a.name, termtext.Escape(err.Error()))
		return 2
	}
	prog := a.name + " enqueue"
	if a.name == "enqueue" {
		prog = "enqueue"
	}
	return enqueue.Run(ctx, enqueue.Params{
		Prog:     prog,
		Registry: reg,
		Getenv:   env.Getenv,
		Stdin:    env.Stdin,
		Stdout:   env.Stdout,
		Stderr:   env.Stderr,
	}, args)
}

// registry builds the registry of the App's types.
func (a *App) registry() (*tasks.Registry, error) {
	reg, err := tasks.NewRegistry(a.types...)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", a.name, err)
	}
	return reg, nil
}

// check reports the nil middleware and route handlers given to Use and
// Handle, which would otherwise panic: the first on every task, the second
// when the worker starts.
func (a *App) check() error {
	var errs []error
	for i, mw := range a.middleware {
		if mw == nil {
			errs = append(errs, fmt.Errorf("app %s: App.Use: middleware %d is nil", a.name, i+1))
		}
	}
	for _, r := range a.routes {
		if r.handler == nil {
			errs = append(errs, fmt.Errorf("app %s: App.Handle(%q): nil handler function", a.name, r.pattern))
		}
	}
	return errors.Join(errs...)
}

// scheduleName matches the names of periodic entries, as config checks
// those of WORKER_SCHEDULE.
var scheduleName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// scheduleEntries returns the App's periodic entries followed by those of
// WORKER_SCHEDULE, as config entries; a bad or repeated name is an error.
func (a *App) scheduleEntries(fromConfig []config.ScheduleEntry) ([]config.ScheduleEntry, error) {
	var (
		out  []config.ScheduleEntry
		errs []error
		seen = make(map[string]string)
	)
	for i, p := range a.periodics {
		src := fmt.Sprintf("App.Schedule: entry %d (%q)", i+1, p.Name)
		if !scheduleName.MatchString(p.Name) {
			errs = append(errs, fmt.Errorf("%s: name %q: want 1 or more of A-Z a-z 0-9 _ . -", src, p.Name))
			continue
		}
		payload, err := payloadJSON(p.Payload)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: payload: %w", src, err))
			continue
		}
		if first, dup := seen[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: name %q is also used by %s", src, p.Name, first))
			continue
		}
		seen[p.Name] = src
		out = append(out, config.ScheduleEntry{Name: p.Name, Spec: p.Spec, Type: p.Type, Payload: payload, Queue: p.Queue, Source: src})
	}
	for _, e := range fromConfig {
		if first, dup := seen[e.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: name %q is also used by %s", e.Source, e.Name, first))
			continue
		}
		seen[e.Name] = e.Source
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

// payloadJSON returns the JSON text of a Periodic's payload.
func payloadJSON(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "{}", nil
	case json.RawMessage:
		return string(v), nil
	case []byte:
		return string(v), nil
	case string:
		return v, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
