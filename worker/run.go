package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/buildinfo"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/internal/redisurl"
	"github.com/forgeq/forgeq/schedule"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
	"github.com/forgeq/forgeq/web"
	"github.com/forgeq/forgeq/workflow"
)

// The handlers reach the cache manager through tasks.Cache.
var _ tasks.Cache = (*cachemgr.Manager)(nil)

// handlerGrace bounds the wait, after the asynq server has shut down, for
// handlers whose tasks it put back on their queue when ShutdownTimeout ran
// out: their ctx is cancelled then, and they should return at once. Waiting
// lets them write their log line and keeps them off a closed cache manager.
const handlerGrace = 2 * time.Second

// telemetryFlushTimeout bounds the sending of the last spans at exit.
const telemetryFlushTimeout = 5 * time.Second

// usageError marks bad flags or settings, for exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// shutdownSignals shut the worker down gracefully. SIGHUP is among them:
// it is what a worker gets when the terminal it runs in is closed, and its
// default action would kill it with tasks running and its server entry
// left in Redis.
var shutdownSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// run is the whole worker: it returns when ctx ends or a signal arrives and
// everything has shut down, or when something fails. Logs go to stderr,
// --help and --version to stdout.
func (a *App) run(ctx context.Context, args []string, env Env) (err error) {
	getenv, stdout, stderr := env.Getenv, env.Stdout, env.Stderr
	ctx, stop := signal.NotifyContext(ctx, shutdownSignals...)
	defer stop()

	if len(args) > 0 && (args[0] == "--probe" || strings.HasPrefix(args[0], "--probe=")) {
		target, ok := strings.CutPrefix(args[0], "--probe=")
		if !ok {
			if len(args) < 2 {
				return usageError{errors.New("--probe needs a URL, e.g. --probe http://127.0.0.1:8080/health/ready")}
			}
			target = args[1]
		}
		return probe(ctx, target, stdout)
	}

	reg, err := a.registry()
	if err != nil {
		return usageError{err}
	}
	if err := a.check(); err != nil {
		return usageError{err}
	}
	cfg, err := a.loadConfig(args, reg.Types(), getenv, stdout)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) || errors.Is(err, errVersion) {
			return nil
		}
		return err
	}

	logger, err := bootstrap.NewLogger(cfg.Log, stderr)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = logger.Sync() }() // Sync fails on a terminal or pipe; nothing to do about it
	// go-redis's own log lines (a pool that cannot dial, a sentinel
	// switch) go through this logger, at most one of a kind every
	// redisLogEvery, rather than raw to stderr.
	defer redisLogs.route(logger.Named("go-redis"))()
	// Tracing (package telemetry), on when the OTEL_* variables say so;
	// its last spans are sent after everything else has shut down.
	tp, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: a.name, Getenv: getenv, Logger: logger.Named("otel"),
		Console: stderr, Exporter: a.spanExporter,
	})
	if err != nil {
		return usageError{err}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), telemetryFlushTimeout)
		defer cancel()
		if serr := tp.Shutdown(sctx); serr != nil {
			logger.Warn("tracing: the last spans were not all sent", zap.Error(serr))
		}
	}()

	// Check the schedule before touching Redis, so a bad entry fails fast.
	entries, err := a.scheduleEntries(cfg.Worker.Schedule)
	if err != nil {
		return usageError{err}
	}
	periodics, err := newPeriodics(entries, reg, cfg.Worker.MaxRetry, time.Now())
	if err != nil {
		return usageError{err}
	}

	target, err := selectRedis(ctx, cfg.Redis, logger)
	if err != nil {
		return err
	}
	if target.embedded != nil {
		defer closeEmbedded(target.embedded, logger) // after the manager below
	}
	cfg.Redis.URL = target.url

	m, err := cachemgr.New(bootstrap.ManagerOptions(cfg, target.url, logger))
	if err != nil {
		return usageError{fmt.Errorf("cache manager: %w", err)}
	}
	defer func() {
		// Close drains the asynchronous cache work the handlers started.
		if cerr := m.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close cache manager: %w", cerr))
		}
	}()

	// The handlers' cache calls are spans of their task's trace.
	if err := tp.InstrumentRedis(m.Client()); err != nil {
		return err
	}
	// The asynq client and inspector share the manager's client; asynq
	// does not close it, and they need no closing of their own.
	client := asynq.NewClientFromRedisClient(m.Client())
	// Task events (package events; nil: WORKER_EVENTS=false): published
	// by the handlers' middleware and by everything that enqueues, written
	// by the publisher's goroutine. Closed once everything has stopped,
	// before the manager (its Redis client).
	var evpub *events.Publisher
	if cfg.Worker.Events {
		evpub = events.NewPublisher(m.Client(), events.PublisherOptions{
			MaxLen: int64(cfg.Worker.EventsMaxLen), Logger: logger.Named("events"),
		})
		defer func() {
			if cerr := evpub.Close(); cerr != nil {
				logger.Warn("task events not written at shutdown", zap.Error(cerr))
			}
		}()
	}
	// Every forgeq part enqueues through enq (span, trace context, enqueued event).
	enq := tasks.NewClient(client, tasks.ClientOptions{Events: evpub})
	inspector := asynq.NewInspectorFromRedisClient(m.Client())
	// The series of every type and served queue exist from the first
	// scrape, with zero values.
	x, err := metrics.New(metrics.Options{
		Manager: m, Inspector: inspector, Logger: logger.Named("metrics"),
		TaskTypes: reg.Types(), Queues: slices.Sorted(maps.Keys(cfg.Worker.Queues)),
		EventsDropped: evpub.Dropped,
	})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	// Workflows: submitted through any of the process's entry points,
	// their steps run by the middleware below (docs/workflows.md).
	flows := workflow.NewClient(m.Client(), workflow.Options{
		Types: workflow.CatalogTypes(reg, tasks.NewCatalog(m.Client())), Cache: m,
		Logger: logger.Named("workflow"), Events: evpub,
	})
	services := Services{Manager: m, Enqueuer: enq, Client: client, Inspector: inspector, Registry: reg, Logger: logger.Named("web"), Workflows: flows}
	var (
		ready readiness
		www   *web.Server // nil: HTTP_ADDR is off
	)
	if cfg.HTTP.Addr != "" {
		o := webOptions(cfg.HTTP)
		o.Manager, o.Registry, o.Client, o.Inspector = m, reg, client, inspector
		o.Workflows = flows
		o.Events = evpub
		o.Logger = services.Logger
		o.Ready = ready.check
		o.Metrics = x.Handler()
		o.OnDeduplicated = x.CountDeduplicated
		o.Middleware = x.HTTPMiddleware(nil)
		o.Telemetry = tp
		for _, r := range a.routes {
			o.Routes = append(o.Routes, web.Route{Pattern: r.pattern, Handler: r.handler(services)})
		}
		// Checked before the Redis ping: an exposed address without
		// credentials is a settings error (web.ErrNoCredentials).
		if www, err = web.New(o); err != nil {
			return usageError{err}
		}
	}

	if err := ping(ctx, m, cfg, target); err != nil {
		return err
	}
	if www != nil {
		// Bind now, so that an address in use stops the worker before it
		// takes any task.
		if err := www.Listen(ctx); err != nil {
			return fmt.Errorf("HTTP_ADDR %q: %w; set it to a free host:port, or off for no web process", cfg.HTTP.Addr, err)
		}
	}

	// Declared rate limits and concurrency caps (worker/limits.go). Its
	// hook goes before the pickup's, which sends the scripts that finish
	// tasks on its own connection.
	limits := newLimiter(m.Client(), reg, logger.Named("limits"))
	m.Client().AddHook(limits.hook())
	// Event-driven pickup (docs/pickup.md): a hook on the client asynq's
	// server uses; closed before the server shuts down, so that no fetch
	// is left waiting.
	pk, err := newPickup(cfg, target.url, m.Client(), logger)
	if err != nil {
		return usageError{err}
	}
	if pk != nil {
		defer pk.Close()
	}
	srv := asynq.NewServerFromRedisClient(m.Client(), serverConfig(cfg, logger))
	deps := tasks.Deps{Cache: m, Logger: logger, Enqueuer: enq}
	rec := newRecoveries(inspector, logger, x.CountRecovered)
	// Cancellation (package control): subscribed before the server starts.
	cancels := newCancels(logger.Named("cancel"), x.CountCancelIgnored)
	cancels.requested = func(ctx context.Context, queue, id string) (string, bool, error) {
		return control.Requested(ctx, m.Client(), queue, id)
	}
	cancelSub := cancels.subscribe(ctx, m.Client(), cfg.Redis.SocketTimeout)
	// Dedup keys (tasks.Dedup) are freed after the limits, before the
	// program's own middleware (worker/dedup.go).
	own := append([]asynq.MiddlewareFunc{newDedupRelease(m.Client(), logger.Named("dedup")).middleware}, a.middleware...)
	// Outermost: each attempt's span (and the request id) for everything
	// inside, the log line and metrics included.
	handlers := newInflight(tp.Middleware()(newMux(reg, deps, x, evpub, rec, flows.Middleware(), cancels.middleware, limits, own)))
	// The scheduler runs even without entries of the program's own: the
	// entries stored in Redis (package schedule) may come at any time.
	sched := newScheduler(enq, periodics, logger)
	sched.live = newLive(schedule.NewStore(m.Client(), nil), workflow.CatalogTypes(reg, tasks.NewCatalog(m.Client())), cfg.Worker.MaxRetry)
	sched.board = newBoard(m.Client(), logger.Named("scheduler"))
	httpAddr := "off"
	if www != nil {
		httpAddr = www.Addr()
	}

	logger.Info("worker starting",
		zap.String("redis", cfg.Redis.Redacted()),
		zap.Bool("embedded_redis", target.embedded != nil),
		zap.Any("queues", cfg.Worker.Queues),
		zap.Bool("strict_priority", cfg.Worker.StrictPriority),
		zap.Int("concurrency", cfg.Worker.Concurrency),
		zap.Duration("shutdown_timeout", cfg.Worker.ShutdownTimeout),
		zap.Duration("retry_delay_min", cfg.Worker.RetryDelayMin),
		zap.Duration("retry_delay_max", cfg.Worker.RetryDelayMax),
		zap.String("pickup", cfg.Worker.Pickup),
		zap.Bool("events", cfg.Worker.Events),
		zap.Duration("task_check_interval", cfg.Worker.TaskCheckInterval),
		zap.Int("schedule_entries", len(periodics)),
		zap.Strings("task_types", reg.Types()),
		zap.String("http_addr", httpAddr),
		zap.Bool("http_auth", cfg.HTTP.AuthUsername != ""),
		zap.Bool("tracing", tp.Enabled()),
	)
	warnUnservedQueues(periodics, cfg.Worker.Queues, logger)
	if www == nil && len(a.routes) > 0 {
		patterns := make([]string, len(a.routes))
		for i, r := range a.routes {
			patterns[i] = r.pattern
		}
		logger.Warn("HTTP_ADDR is off: the routes added with App.Handle are not served", zap.Strings("routes", patterns))
	}

	go func() {
		// After the first signal, restore the default so that a second one
		// kills the process instead of waiting for the shutdown.
		<-ctx.Done()
		stop()
	}()

	// The task catalogue: published once the server runs, refreshed
	// while it runs, withdrawn from at shutdown (worker/catalog.go).
	pub := newPublisher(m.Client(), reg, cfg.Worker.Queues, logger)
	catalogued := make(chan struct{}) // closed once the first publish is done

	g, gctx := errgroup.WithContext(ctx)
	schedDone := make(chan struct{})
	g.Go(func() error {
		defer close(schedDone)
		return sched.Run(gctx)
	})
	g.Go(func() error {
		if err := srv.Start(handlers); err != nil {
			return fmt.Errorf("start asynq server: %w", err)
		}
		ready.running()
		pub.publish(gctx)
		close(catalogued)
		logger.Info("worker started")
		if env.Started != nil {
			started := Started{Services: services, RedisURL: target.url}
			if www != nil {
				started.HTTPAddr = www.Addr()
			}
			env.Started(started)
		}
		<-gctx.Done()
		ready.stopping() // /health/ready fails from here on
		<-schedDone      // no tick is enqueued once the server is going down
		logger.Info("worker shutting down: no new tasks; running tasks may finish",
			zap.Duration("shutdown_timeout", cfg.Worker.ShutdownTimeout))
		if pk != nil {
			if err := pk.Close(); err != nil {
				// Those tasks come back through asynq's recovery once
				// their lease runs out, counting a retry.
				logger.Warn("tasks fetched ahead could not be put back on their queue", zap.Error(err))
			}
		}
		srv.Shutdown()
		if n := handlers.wait(handlerGrace); n > 0 {
			logger.Warn("handlers still running after shutdown; their tasks are back on their queue",
				zap.Int("handlers", n))
		}
		return nil
	})
	g.Go(func() error { return pub.run(gctx, catalogued) })
	g.Go(func() error { flows.RunReconciler(gctx); return nil })
	g.Go(func() error { cancels.listen(gctx, cancelSub); return nil })
	if www != nil {
		// Serves until gctx ends, then stops listening and waits up to
		// HTTP_SHUTDOWN_TIMEOUT for in-flight requests, alongside the
		// asynq server's shutdown; the manager closes after both.
		g.Go(func() error { return www.Run(gctx) })
	}

	err = g.Wait()
	logger.Info("worker stopped")
	return err
}

// loadConfig parses args and loads the configuration. --help prints the
// usage to stdout and returns pflag.ErrHelp. Errors are usageErrors.
func (a *App) loadConfig(args []string, types []string, getenv func(string) string, stdout io.Writer) (config.Config, error) {
	fs := pflag.NewFlagSet(a.name, pflag.ContinueOnError)
	fs.SortFlags = false
	config.RegisterFlags(fs)
	version := fs.Bool("version", false, "print the program's version and exit")
	fs.SetOutput(io.Discard) // run reports parse errors itself
	fs.Usage = func() {
		usage := strings.ReplaceAll(`Usage: NAME [flags]
       NAME enqueue [flags] TYPE [PAYLOAD]   (see NAME enqueue --help)

Runs the task handlers of NAME's task types (TYPES), its periodic
tasks and the web process (health, API, /metrics, the dashboard under
/monitoring/) until SIGINT, SIGTERM or SIGHUP. "NAME enqueue" puts tasks
on their queues.

With no Redis URL set, the worker uses the Redis answering at
REDIS_EMBEDDED_ADDR (127.0.0.1:6379), or starts an embedded in-memory one
there (redis-server as a child process when it is on PATH, else
miniredis; its data is lost on exit). The web process listens on HTTP_ADDR (127.0.0.1:8080; off for
none); on an address that is not loopback it needs HTTP_AUTH_USERNAME and
HTTP_AUTH_PASSWORD. Each flag overrides its environment variable, which
overrides the config file.

  NAME --probe URL   GET URL once; exit 0 on a 2xx answer, 1 otherwise
                     (a container healthcheck without curl)

Examples:
  NAME
  REDIS_CONNECTION_URL=redis://redis:6379/0 WORKER_CONCURRENCY=20 NAME
  HTTP_ADDR=0.0.0.0:8080 HTTP_AUTH_USERNAME=admin HTTP_AUTH_PASSWORD=... NAME
  NAME --worker-queues critical=6,default=3,low=1 --log-format json
  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 NAME   (OpenTelemetry tracing: the OTEL_* variables)
  WORKER_SCHEDULE='[{"name":"purge-tmp","spec":"@every 1m","type":"cache:invalidate","payload":{"pattern":"tmp:*"}}]' NAME

Flags:
`, "NAME", a.name)
		usage = strings.Replace(usage, "TYPES", strings.Join(types, ", "), 1)
		fmt.Fprint(stdout, usage+fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return config.Config{}, err
		}
		return config.Config{}, usageError{fmt.Errorf("%w (see %s --help)", err, a.name)}
	}
	if *version {
		fmt.Fprint(stdout, buildinfo.Text(a.name))
		return config.Config{}, errVersion
	}
	if fs.NArg() > 0 {
		return config.Config{}, usageError{fmt.Errorf("unexpected argument %q: the worker takes only flags (see %s --help)", fs.Arg(0), a.name)}
	}
	cfg, err := config.Load(fs, getenv)
	if err != nil {
		return config.Config{}, usageError{fmt.Errorf("config:\n%w", indent(err))}
	}
	return cfg, nil
}

// errVersion is loadConfig's answer to --version, which it has printed.
var errVersion = errors.New("worker: --version")

// indent puts each line of err on its own indented line, for several joined
// config errors.
func indent(err error) error {
	return errors.New("  " + strings.ReplaceAll(err.Error(), "\n", "\n  "))
}

// ping checks that Redis answers within the socket timeout. Its error says
// how long it tried (go-redis gives up on a refused connection well before
// the timeout) and why: when the timeout cut go-redis's own attempts short,
// the ping only knows its deadline passed, so the Redis addresses are
// dialled once more to learn the cause, such as a refused connection.
func ping(ctx context.Context, m *cachemgr.Manager, cfg config.Config, target redisTarget) error {
	timeout := cfg.Redis.SocketTimeout
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := m.Ping(pctx)
	if err == nil {
		return nil
	}
	took := time.Since(start).Round(time.Millisecond)
	if ctx.Err() != nil {
		return fmt.Errorf("redis %s: ping: %w", cfg.Redis.Redacted(), ctx.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %v (REDIS_SOCKET_TIMEOUT): %w", timeout, err)
		if p, perr := redisurl.Parse(target.url); perr == nil {
			// A second at most: a refused dial answers at once, and one
			// that times out says as much.
			dctx, dcancel := context.WithTimeout(ctx, min(timeout, time.Second))
			derr := p.DialError(dctx)
			dcancel()
			if derr != nil {
				err = fmt.Errorf("%w (%w)", derr, err)
			}
		}
	}
	hint := ""
	if target.implicit {
		hint = fmt.Sprintf(" (no Redis URL is set and REDIS_EMBEDDED=false; set REDIS_CONNECTION_URL=redis://host:6379, or REDIS_EMBEDDED=auto to start an embedded Redis at %s)", cfg.Redis.EmbeddedAddr)
	}
	return fmt.Errorf("redis %s is unreachable (gave up after %v)%s: %w", cfg.Redis.Redacted(), took, hint, err)
}

// closeEmbedded stops the embedded Redis; its data is gone afterwards.
func closeEmbedded(e *embeddedRedis, log *zap.Logger) {
	addr := e.Addr()
	e.Close()
	log.Info("embedded Redis stopped; its data is gone", zap.String("addr", addr))
}
