package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
)

// dashboardRoot is where the asynqmon dashboard is mounted; its API is
// under dashboardRoot + "/api/".
const dashboardRoot = "/monitoring"

// sharedRedis hands asynqmon the process's own client instead of the
// connection options of a new one. asynqmon (and the asynq inspector it
// builds) would close the client in HTTPHandler.Close, so the server never
// calls it: the client belongs to whoever built the manager.
type sharedRedis struct{ rdb redis.UniversalClient }

// MakeRedisClient implements asynq.RedisConnOpt.
func (c sharedRedis) MakeRedisClient() any { return c.rdb }

// dashboard returns the asynqmon dashboard behind its guards: when
// credentials are configured, a request without a valid session or basic
// auth is redirected to the login page (HTML) or refused with 401 (its
// API, and any method but GET and HEAD); with Options.ReadOnlyDashboard,
// its API refuses every method but GET and HEAD with 405.
//
// With Options.DashboardPrometheusURL set, the charts' data comes from
// asynqmon's GET /monitoring/api/metrics, which queries that Prometheus
// from this process (query_range, through http.DefaultClient) and passes
// the answers on; the page also hands the address to the browser, which
// only uses it to show the charts.
func (s *Server) dashboard() http.Handler {
	h := asynqmon.New(asynqmon.Options{
		RootPath:          dashboardRoot,
		RedisConnOpt:      sharedRedis{s.m.Client()},
		ReadOnly:          s.o.ReadOnlyDashboard,
		PrometheusAddress: s.o.DashboardPrometheusURL,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api := strings.HasPrefix(r.URL.Path, dashboardRoot+"/api/")
		safe := r.Method == http.MethodGet || r.Method == http.MethodHead
		if s.auth != nil {
			if _, err := s.identify(r); err != nil {
				if api || !safe {
					s.refuse(w, r, err, false)
					return
				}
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
		}
		if s.o.ReadOnlyDashboard && api && !safe {
			w.Header().Set("Allow", "GET, HEAD")
			fail(w, r, http.StatusMethodNotAllowed, codeMethodNotAllowed, "the dashboard is read-only")
			return
		}
		h.ServeHTTP(w, r)
	})
}
