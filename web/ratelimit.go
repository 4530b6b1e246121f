package web

import (
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
)

// Keys of the rate limiter's state, inside the manager's namespace.
const (
	rateKeyUser = "web:api:user:"
	rateKeyIP   = "web:api:ip:"
)

// rateLimit applies Options.RateLimit per client: the session or basic-auth
// user when the request carries valid credentials, else the remote IP
// address. Every response it lets through or refuses carries
// X-RateLimit-Limit (the burst), X-RateLimit-Remaining and
// X-RateLimit-Reset (seconds until the bucket is full again); a refused one
// is 429 with Retry-After (seconds, rounded up). When Redis cannot be
// asked, requests pass (fail open) and the failure is logged.
func (s *Server) rateLimit(next http.Handler) http.Handler {
	if s.o.RateLimit == (cachemgr.Limit{}) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := rateKeyIP + s.clientIP(r)
		if user, err := s.identify(r); err == nil && user != "" {
			key = rateKeyUser + user
		}
		res, err := s.m.Allow(r.Context(), key, s.o.RateLimit)
		if err != nil {
			s.log.Warn("rate limit check failed", zap.String("request_id", stateOf(r).id), zap.Error(err))
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("X-RateLimit-Limit", strconv.Itoa(res.Limit.Burst))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(res.Remaining))
		h.Set("X-RateLimit-Reset", seconds(res.ResetAfter))
		if !res.Allowed {
			h.Set("Retry-After", seconds(res.RetryAfter))
			fail(w, r, http.StatusTooManyRequests, codeRateLimited,
				"too many requests: retry in "+seconds(res.RetryAfter)+"s")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// seconds formats d as whole seconds, rounded up.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}
