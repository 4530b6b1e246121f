package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// reservedKeyPrefixes begin cache keys that other parts of forgeq own and
// the cache-aside route must neither read nor write: GetOrCompute's locks,
// sessions and task progress reports.
var reservedKeyPrefixes = []string{"__lock__:", "session:", "task:progress:"}

// The sources of a cache-aside answer, as data:process reports them.
const (
	sourceCache    = tasks.SourceCache
	sourceComputed = tasks.SourceComputed
)

// cachedBody is the body of GET /api/cache/{key}.
type cachedBody struct {
	Key    string `json:"key"`
	Data   string `json:"data"`
	Source string `json:"source"` // "cache" or "computed"
}

// cached is the seed's /cached-data: the value of key from the cache, or
// else computed (tasks.Digest(key, work), the value a data:process task
// stores under the same key), stored for Options.CacheTTL and returned.
// Concurrent requests for one cold key share one computation, in this
// process and across processes. A cached value is returned whatever work
// it was computed with.
func (s *Server) cached(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := checkKey(key); err != nil {
		fail(w, r, http.StatusBadRequest, codeInvalidKey, err.Error())
		return
	}
	work := s.o.ComputeWork
	if q := r.URL.Query(); q.Has("work") {
		n, err := strconv.Atoi(q.Get("work"))
		if err != nil || n < 1 || n > MaxComputeWork {
			fail(w, r, http.StatusBadRequest, codeInvalidWork,
				fmt.Sprintf("work %q is not an integer in [1, %d]", q.Get("work"), MaxComputeWork))
			return
		}
		work = n
	}
	ctx := r.Context()
	// The common case, a hit, goes through the auto-pipelined GetAsync;
	// only a miss pays for GetOrCompute's bookkeeping. The wait is bounded
	// by the socket timeout: on a Redis that does not answer, the client
	// gets a 503 then, whatever the pipelines ahead of this read do.
	v, err := s.getBounded(ctx, key)
	source := sourceCache
	if errors.Is(err, cachemgr.ErrMiss) {
		var c cachemgr.Computed
		c, err = s.m.GetOrComputeAsync(ctx, key, s.o.CacheTTL, func(context.Context) (string, error) {
			return tasks.Digest(key, work), nil
		}).Wait()
		v = c.Value
		if !c.Hit {
			source = sourceComputed
		}
	}
	if err != nil {
		s.unavailable(w, r, "cache", err)
		return
	}
	writeJSON(w, http.StatusOK, cachedBody{Key: key, Data: v, Source: source})
}

// getBounded is GetAsync(key) waited for at most the manager's OpTimeout.
func (s *Server) getBounded(ctx context.Context, key string) (string, error) {
	ctx, cancel := s.redisCtx(ctx)
	defer cancel()
	return s.m.GetAsync(ctx, key).WaitContext(ctx)
}

// checkKey checks a cache key from a request: 1 to MaxKeyBytes bytes of
// valid UTF-8 without control characters, outside the reserved prefixes.
// The error is the client's message.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("the cache key is empty")
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("the cache key is %d bytes long, over the %d-byte limit", len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return errors.New("the cache key is not valid UTF-8")
	case strings.IndexFunc(key, unicode.IsControl) >= 0:
		return fmt.Errorf("the cache key %q contains a control character", key)
	}
	for _, p := range reservedKeyPrefixes {
		if strings.HasPrefix(key, p) {
			return fmt.Errorf("cache keys beginning %q are reserved", p)
		}
	}
	return nil
}

// unavailable answers a failure of Redis or the queue (what) with 503 and
// logs it; a request whose client has gone away is only noted.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		fail(w, r, http.StatusServiceUnavailable, codeUnavailable, "the request was cancelled")
		return
	}
	s.log.Warn("http dependency failed", zap.String("request_id", stateOf(r).id), zap.String("dependency", what), zap.Error(err))
	fail(w, r, http.StatusServiceUnavailable, codeUnavailable, what+" unavailable")
}
