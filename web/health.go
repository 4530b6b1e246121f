package web

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
)

// healthTimeout bounds the Redis ping of the health checks.
const healthTimeout = 2 * time.Second

// redisUnreachable is what the health checks tell clients without the
// credentials when Redis does not answer: its error names internal
// addresses.
const redisUnreachable = "redis unreachable"

// healthLogEvery is how often, at most, a Redis outage that lasts is
// logged again.
const healthLogEvery = time.Minute

// healthBody is the body of /health/redis and /health/live: the seed's
// {"status": "healthy"} or {"status": "unhealthy", "error": "..."}.
type healthBody struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// readyBody is the body of /health/ready: "ready" or "unready", and the
// outcome of each check ("ok" or what is wrong).
type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// live answers 200 while the server serves at all.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, healthBody{Status: "ok"})
}

// redisHealth is the seed's /health/redis: 200 when Redis answers a ping
// within healthTimeout, else 503 with the reason (see redisReason).
func (s *Server) redisHealth(w http.ResponseWriter, r *http.Request) {
	err := s.ping(r.Context())
	s.noteRedis(r, err)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, healthBody{Status: "unhealthy", Error: s.redisReason(r, err)})
		return
	}
	writeJSON(w, http.StatusOK, healthBody{Status: "healthy"})
}

// ready answers 200 when Redis answers, Options.Ready reports the worker
// running and shutdown has not begun; else 503.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	pinged := make(chan error, 1)
	go func() { pinged <- s.ping(r.Context()) }()

	body := readyBody{Status: "ready", Checks: map[string]string{}}
	check := func(name string, err error, reason func(error) string) {
		if err != nil {
			body.Status = "unready"
			body.Checks[name] = reason(err)
			return
		}
		body.Checks[name] = "ok"
	}
	if s.o.Ready != nil {
		check("worker", s.o.Ready(), error.Error)
	}
	err := <-pinged
	s.noteRedis(r, err)
	check("redis", err, func(err error) string { return s.redisReason(r, err) })
	if s.draining.Load() {
		body.Status = "unready"
		body.Checks["server"] = "shutting down"
	} else {
		body.Checks["server"] = "ok"
	}
	status := http.StatusOK
	if body.Status != "ready" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, body)
}

// redisReason is what a health check tells the client of r about err, a
// failed ping: the error itself when the client has the credentials (a
// session or basic auth), else only redisUnreachable. Without configured
// credentials nobody gets the error. While Redis is unreachable no session
// can be checked, so only basic auth shows the error then.
func (s *Server) redisReason(r *http.Request, err error) string {
	if s.auth == nil {
		return redisUnreachable
	}
	_, authErr := s.identify(r)
	if authErr == nil || errors.Is(authErr, errAuthUnavailable) && s.checkPasswordLocally(r) {
		return err.Error()
	}
	return redisUnreachable
}

// checkPasswordLocally checks the basic-auth credentials of r when the
// attempt limiter in Redis cannot be reached: within a limit of this
// process (Options.LoginLimit for every client together), so that an
// outage does not open the door to guessing.
func (s *Server) checkPasswordLocally(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok || !s.localLogins.allow(time.Now()) {
		return false
	}
	return s.auth.match(user, pass)
}

// localLimiter is a token bucket in memory. It is safe for concurrent use.
type localLimiter struct {
	limit cachemgr.Limit

	mu     sync.Mutex
	tokens float64
	last   time.Time // zero: the bucket is full
}

// allow takes a token at now, if there is one.
func (l *localLimiter) allow(now time.Time) bool {
	burst := float64(l.limit.Burst)
	if burst == 0 {
		burst = float64(l.limit.Rate)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = burst
	} else {
		refill := now.Sub(l.last).Seconds() * float64(l.limit.Rate) / l.limit.Period.Seconds()
		l.tokens = min(burst, l.tokens+max(0, refill))
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// redisLog is the state of the health checks' Redis log lines: whether
// Redis was last seen down, and when that was last logged.
type redisLog struct {
	mu     sync.Mutex
	down   bool
	logged time.Time
}

// noteRedis logs the outcome err of a health check's ping on a change:
// the first failure, with the error, then the same again at most every
// healthLogEvery while failures go on, and the first success after them.
// A ping cut short because the client went away says nothing.
func (s *Server) noteRedis(r *http.Request, err error) {
	if err != nil && r.Context().Err() != nil {
		return
	}
	now := time.Now()
	l := &s.redisLog
	l.mu.Lock()
	var failed, recovered bool
	switch {
	case err == nil:
		recovered, l.down = l.down, false
	case !l.down || now.Sub(l.logged) >= healthLogEvery:
		failed, l.down, l.logged = true, true, now
	}
	l.mu.Unlock()
	switch {
	case failed:
		s.log.Warn("redis health check failed", zap.String("request_id", stateOf(r).id), zap.Error(err))
	case recovered:
		s.log.Info("redis health check passes again", zap.String("request_id", stateOf(r).id))
	}
}

// ping pings Redis through the manager's async side.
func (s *Server) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	_, err := s.m.PingAsync(ctx).WaitContext(ctx)
	return err
}
