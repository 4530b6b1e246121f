package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
)

// Timeouts of the http.Server that Run starts.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Server is the embedded web process: health, cache-aside, tasks and
// workflows over HTTP, login, metrics, the dashboard and the workflows
// page. Build it with New, serve it with
// Run (or mount Handler in a server of your own, whose shutdown calls
// CloseStreams). A Server is safe for concurrent use; it runs at most once.
type Server struct {
	o         Options
	m         *cachemgr.Manager
	reg       *tasks.Registry
	client    *tasks.Client
	inspector *asynq.Inspector
	log       *zap.Logger
	auth      *credentials // nil when no credentials are configured
	ids       *requestIDs
	cop       *http.CrossOriginProtection
	handler   http.Handler

	draining atomic.Bool // shutdown has begun

	events      *events.Client // reads the task event streams (events.go)
	streamsDone chan struct{}  // closed by CloseStreams
	endStreams  sync.Once
	// heartbeat and stateCheck, when set (tests), replace the event
	// streams' timing (see eventTiming).
	heartbeat, stateCheck atomic.Int64

	redisLog    redisLog      // see noteRedis
	localLogins *localLimiter // see checkPasswordLocally

	mu      sync.Mutex
	ln      net.Listener
	started bool
}

// New validates o, fills in its defaults and builds the server; it does
// not listen. Errors wrap ErrInvalidOptions, or ErrNoCredentials when
// o.Addr is not a loopback address and o has no credentials.
func New(o Options) (*Server, error) {
	if err := o.init(); err != nil {
		return nil, err
	}
	s := &Server{
		o:         o,
		m:         o.Manager,
		reg:       o.Registry,
		client:    tasks.NewClient(o.Client, tasks.ClientOptions{Events: o.Events}),
		inspector: o.Inspector,
		log:       o.Logger,
		ids:       newRequestIDs(),
		cop:       http.NewCrossOriginProtection(),

		// No logger: the client's shared readers outlive the requests
		// (for seconds), and their retried reads are not worth a line.
		events:      events.NewClient(o.Manager.Client(), events.ClientOptions{Inspector: o.Inspector}),
		streamsDone: make(chan struct{}),
	}
	s.localLogins = &localLimiter{limit: o.LoginLimit}
	if o.AuthUsername != "" {
		s.auth = newCredentials(o.AuthUsername, o.AuthPassword)
	}
	mux, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = s.chain(mux)
	return s, nil
}

// routes registers every route on a new router. A route of Options.Routes
// that conflicts with another is an error wrapping ErrInvalidOptions.
func (s *Server) routes() (*http.ServeMux, error) {
	mux := http.NewServeMux()

	mux.HandleFunc("GET /health/live", s.live)
	mux.HandleFunc("GET /health/ready", s.ready)
	mux.HandleFunc("GET /health/redis", s.redisHealth)

	// Cross-site first: a refused request neither counts against the rate
	// limit nor slides a session.
	mux.Handle("GET /api/cache/{key...}", s.crossSiteGET(s.api(http.HandlerFunc(s.cached))))
	mux.Handle("POST /api/tasks/{type}", s.api(http.HandlerFunc(s.enqueue)))
	mux.Handle("GET /api/tasks/{queue}/{id}", s.api(http.HandlerFunc(s.taskStatus)))
	mux.Handle("DELETE /api/tasks/{queue}/{id}", s.api(http.HandlerFunc(s.cancelTask)))
	mux.Handle("GET /api/tasks/{queue}/{id}/events", s.api(http.HandlerFunc(s.taskEvents)))
	mux.Handle("GET /api/task-types", s.api(http.HandlerFunc(s.taskTypes)))
	mux.Handle("POST "+workflowsPath, s.api(http.HandlerFunc(s.submitWorkflow)))
	mux.Handle("GET "+workflowsPath, s.api(http.HandlerFunc(s.listWorkflows)))
	mux.Handle("GET "+workflowsPath+"/{id}", s.api(http.HandlerFunc(s.workflowStatus)))
	mux.Handle("DELETE "+workflowsPath+"/{id}", s.api(http.HandlerFunc(s.cancelWorkflow)))
	mux.Handle("GET "+workflowsPage, s.page(http.HandlerFunc(s.workflowsPage)))
	mux.Handle("GET "+workflowsPage+"/{id}", s.page(http.HandlerFunc(s.workflowPage)))
	mux.Handle("POST "+workflowsPage+"/{id}/cancel", s.page(s.rateLimit(http.HandlerFunc(s.cancelFromPage))))
	mux.Handle("GET "+tasksPage+"/{queue}/{id}", s.page(http.HandlerFunc(s.taskPage)))
	s.handleSchedules(mux)

	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)

	if s.o.Metrics != nil {
		metrics := s.o.Metrics
		if s.o.MetricsAuth {
			metrics = s.requireAuth(metrics)
		}
		mux.Handle("GET /metrics", metrics)
	}
	mux.Handle(dashboardRoot+"/", s.dashboard())
	for _, r := range s.o.Routes {
		if err := register(mux, r.Pattern, s.api(r.Handler)); err != nil {
			return nil, fmt.Errorf("%w: route %q: %v", ErrInvalidOptions, r.Pattern, err)
		}
	}
	s.handleIndex(mux)
	return mux, nil
}

// register is mux.Handle returning, instead of panicking with, what is
// wrong with pattern: malformed, or in conflict with a route already there.
func register(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			// net/http names the source lines of both registrations,
			// which say nothing to the program's user.
			err = errors.New(registeredAt.ReplaceAllString(fmt.Sprint(p), ""))
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// registeredAt matches the source locations in http.ServeMux's conflict
// messages.
var registeredAt = regexp.MustCompile(` \(registered at [^)]*\)`)

// chain puts the layers described in middleware.go around the router.
func (s *Server) chain(mux http.Handler) http.Handler {
	h := s.recoverer(s.gate(s.limitBody(s.crossOrigin(shapeErrors(mux)))))
	if s.o.Middleware != nil {
		h = s.o.Middleware(h)
	}
	return s.o.Telemetry.HTTPHandler(s.observe(h))
}

// api is what every /api/ route goes through first: the rate limit, then,
// when credentials are configured, authentication. The cache route writes
// to the shared cache and spends CPU, and the task routes show payloads
// and results, so none of them is open to anonymous clients.
func (s *Server) api(h http.Handler) http.Handler { return s.rateLimit(s.requireAuth(h)) }

// Handler returns the handler of every route with every layer, for a
// server of the caller's own or for tests. Run serves the same handler.
// A server of the caller's own calls CloseStreams when it shuts down
// (http.Server.RegisterOnShutdown), as Run does, or its Shutdown waits for
// the open task event streams until its ctx ends.
func (s *Server) Handler() http.Handler { return s.handler }

// Listen binds Options.Addr, so that Addr reports the actual address
// (useful with port 0) before Run. Run calls it when it has not been
// called. Calling it again is a no-op.
func (s *Server) Listen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.o.Addr)
	if err != nil {
		return fmt.Errorf("web: listen: %w", err)
	}
	s.ln = ln
	return nil
}

// Addr returns the address the server listens on once Listen or Run has
// bound it, else Options.Addr.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.o.Addr
}

// Run listens (unless Listen has) and serves until ctx ends. Then it
// begins the shutdown: /health/ready fails and new requests get 503 for
// Options.DrainDelay, the listener closes, and in-flight requests get
// Options.ShutdownTimeout to finish. It returns nil after a clean shutdown,
// an error when listening or serving fails or requests were still running
// at the timeout, and ErrRunning when called a second time.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrRunning
	}
	s.started = true
	ln := s.ln
	s.mu.Unlock()

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
		// Requests keep ctx's values but not its cancellation: in-flight
		// requests finish during the shutdown.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	// Open event streams never go idle: they end when the shutdown begins,
	// and their clients reconnect elsewhere or once the server is back.
	srv.RegisterOnShutdown(s.CloseStreams)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.log.Info("web listening", zap.String("addr", ln.Addr().String()), zap.String("dashboard", dashboardURL(ln.Addr().String())))

	select {
	case err := <-served:
		return fmt.Errorf("web: serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.Info("web shutting down", zap.Duration("drain_delay", s.o.DrainDelay))
	if s.o.DrainDelay > 0 {
		t := time.NewTimer(s.o.DrainDelay)
		<-t.C
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("web: shutdown: %w", err)
	}
	s.log.Info("web stopped")
	return nil
}
