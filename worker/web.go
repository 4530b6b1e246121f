package worker

import (
	"errors"
	"sync/atomic"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/web"
)

// webOptions maps the configuration onto the web process's options; run
// adds the process's manager, asynq client and inspector, logger, metrics
// and readiness.
func webOptions(c config.HTTP) web.Options {
	return web.Options{
		Addr:                   c.Addr,
		RateLimit:              rateLimit(c.RateLimit),
		LoginLimit:             rateLimit(c.LoginRateLimit),
		AuthUsername:           c.AuthUsername,
		AuthPassword:           c.AuthPassword,
		SessionTTL:             c.SessionTTL,
		CookieSecure:           c.CookieSecure,
		ReadOnlyDashboard:      c.DashboardReadOnly,
		MetricsAuth:            c.MetricsAuth,
		DashboardPrometheusURL: c.DashboardPrometheusURL,
		TaskRetention:          c.TaskRetention,
		ShutdownTimeout:        c.ShutdownTimeout,
		TrustedProxies:         c.TrustedProxies,
	}
}

// rateLimit maps a configured rate limit onto the manager's, with bursts
// of up to Rate requests (Burst 0). The zero RateLimit (off) maps to the
// zero Limit, which the web process reads as no limit (RateLimit) or its
// default (LoginLimit; config never gives a zero login limit).
func rateLimit(l config.RateLimit) cachemgr.Limit {
	return cachemgr.Limit{Rate: l.Rate, Period: l.Period}
}

// What readiness reports while the asynq server is not running.
var (
	errWorkerStarting = errors.New("worker is starting")
	errWorkerStopping = errors.New("worker is shutting down")
)

// readiness tracks the asynq server for the web process's /health/ready:
// starting, then running once srv.Start has succeeded, then stopping as
// soon as shutdown begins. Safe for concurrent use.
type readiness struct {
	state atomic.Int32
}

const (
	workerStarting int32 = iota
	workerRunning
	workerStopping
)

func (r *readiness) running()  { r.state.CompareAndSwap(workerStarting, workerRunning) }
func (r *readiness) stopping() { r.state.Store(workerStopping) }

// check returns nil while the asynq server runs, else why not; it is
// web.Options.Ready.
func (r *readiness) check() error {
	switch r.state.Load() {
	case workerRunning:
		return nil
	case workerStopping:
		return errWorkerStopping
	default:
		return errWorkerStarting
	}
}
