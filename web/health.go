package web

import (
	"context"
	"net/http"
	"time"
)

// healthTimeout bounds the Redis ping of the health checks.
const healthTimeout = 2 * time.Second

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
// within healthTimeout, else 503 with the error.
func (s *Server) redisHealth(w http.ResponseWriter, r *http.Request) {
	if err := s.ping(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, healthBody{Status: "unhealthy", Error: err.Error()})
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
	check := func(name string, err error) {
		if err != nil {
			body.Status = "unready"
			body.Checks[name] = err.Error()
			return
		}
		body.Checks[name] = "ok"
	}
	if s.o.Ready != nil {
		check("worker", s.o.Ready())
	}
	check("redis", <-pinged)
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

// ping pings Redis through the manager's async side.
func (s *Server) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	_, err := s.m.PingAsync(ctx).WaitContext(ctx)
	return err
}
