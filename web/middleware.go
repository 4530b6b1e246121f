package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/telemetry"
)

// The request's way through the handler, outermost first:
//
//	tracing      the request's server span (Options.Telemetry), when tracing is on
//	observe      request id, security headers, access log, last-resort panic recovery
//	Middleware   Options.Middleware (metrics), when set
//	recoverer    panics into 500 JSON, seen by Middleware
//	gate         503 once shutdown has begun (except /health/)
//	limitBody    413 for bodies over MaxBodyBytes
//	crossOrigin  403 for cross-origin browser requests that change state
//	             (and, per route, for those of the cache-aside GET: see crossSiteGET)
//	shapeErrors  the router's and asynqmon's plain-text errors into JSON
//	mux          the routes; per route: rate limit, authentication

// RequestIDHeader carries the request id in and out: a valid incoming id
// (1 to 128 of A-Z a-z 0-9 . _ : -) is kept, otherwise one is generated.
const RequestIDHeader = "X-Request-ID"

const maxRequestID = 128

// reqState is what the layers learn about one request. It is only touched
// by the request's goroutine.
type reqState struct {
	id    string
	route string // the pattern of the route that served it; "" for none

	// Filled in by identify on first use.
	identified bool
	user       string
	authErr    error
	bySession  bool // authenticated by its session cookie (see recheck)
}

type stateKey struct{}

// stateOf returns the state observe attached to r.
func stateOf(r *http.Request) *reqState {
	if st, ok := r.Context().Value(stateKey{}).(*reqState); ok {
		return st
	}
	return &reqState{}
}

// requestIDs makes request ids: a random per-process prefix and a counter,
// unique without a round trip to crypto/rand per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (g *requestIDs) next() string {
	return g.prefix + strconv.FormatUint(g.n.Add(1), 36)
}

// validRequestID reports whether an incoming id may be kept.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := range len(id) {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// observe is the outermost layer: it gives the request its id and state,
// sets the headers every response carries, logs the request once it is
// done (never its cookies or credentials) and recovers a panic that got
// past every inner layer.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = s.ids.next()
		}
		st := &reqState{id: id}
		// The request id goes on into the tasks the request enqueues
		// (telemetry.Inject) and their log lines.
		r = r.WithContext(context.WithValue(telemetry.WithRequestID(r.Context(), id), stateKey{}, st))
		h := w.Header()
		h.Set(RequestIDHeader, id)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		rec := &recorder{ResponseWriter: w}
		defer func() {
			s.recoverPanic(rec, r, recover())
			status := rec.status
			if status == 0 {
				status = http.StatusOK // nothing written: net/http sends 200
			}
			route := st.route
			if route == "" {
				route = "unmatched"
			}
			span := trace.SpanFromContext(r.Context())
			if span.IsRecording() {
				// The tracing layer named it before the router matched.
				span.SetName(route)
				span.SetAttributes(attribute.String("http.route", route), attribute.String("forgeq.request_id", id))
			}
			fields := []zap.Field{
				zap.String("request_id", id),
				zap.String("method", r.Method),
				zap.String("route", route),
				zap.String("path", r.URL.Path),
				zap.Int("status", status),
				zap.Int64("bytes", rec.bytes),
				zap.Duration("took", time.Since(start)),
				zap.String("remote_ip", s.clientIP(r)),
			}
			if st.user != "" {
				fields = append(fields, zap.String("user", st.user))
			}
			fields = append(fields, telemetry.TraceFields(r.Context())...)
			if status >= 500 {
				s.log.Warn("http request", fields...)
			} else {
				s.log.Info("http request", fields...)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// recoverer turns a panic below it into a 500 JSON error, so the layers
// above it (Options.Middleware) see an ordinary response.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		defer func() { s.recoverPanic(rec, r, recover()) }()
		next.ServeHTTP(rec, r)
	})
}

// recoverPanic handles the value p recovered while serving r: it logs it
// and answers 500 unless the response has begun. http.ErrAbortHandler is
// passed on: it asks net/http to abort the response.
func (s *Server) recoverPanic(w *recorder, r *http.Request, p any) {
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		panic(p)
	}
	s.log.Error("http handler panic",
		zap.String("request_id", stateOf(r).id),
		zap.String("method", r.Method),
		zap.String("path", r.URL.Path),
		zap.String("panic", fmt.Sprint(p)),
		zap.StackSkip("stack", 2))
	if w.status == 0 {
		fail(w, r, http.StatusInternalServerError, codeInternal, "internal server error")
	}
}

// recorder notes the status and size of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush passes through to the connection.
func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// gate answers 503 to every request but the health checks once shutdown
// has begun.
func (s *Server) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() && !strings.HasPrefix(r.URL.Path, "/health/") {
			w.Header().Set("Connection", "close")
			fail(w, r, http.StatusServiceUnavailable, codeShuttingDown, "the server is shutting down")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody refuses bodies over Options.MaxBodyBytes: at once when the
// declared length is over, else when a handler reads past the limit.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.o.MaxBodyBytes {
			w.Header().Set("Connection", "close")
			fail(w, r, http.StatusRequestEntityTooLarge, codeTooLarge,
				fmt.Sprintf("the request body is %d bytes, over the %d-byte limit", r.ContentLength, s.o.MaxBodyBytes))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// crossOrigin refuses cross-origin browser requests with unsafe methods
// (POST, PUT, PATCH, DELETE), which a session cookie would otherwise
// authenticate: see http.CrossOriginProtection. Requests from other
// clients (no Sec-Fetch-Site or Origin header) pass.
func (s *Server) crossOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.cop.Check(r); err != nil {
			fail(w, r, http.StatusForbidden, codeCrossOrigin, "cross-origin request refused: "+err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossSiteGET refuses cross-origin browser requests of every method, as
// crossOrigin refuses those with unsafe ones: for GET routes that compute
// or write (the cache-aside route), which a page of another site could
// otherwise make a browser run with its SameSite=Lax session cookie, by a
// link or a redirect. Sec-Fetch-Site cross-site or same-site, or without
// it an Origin other than the server's, is a 403 cross_origin; requests
// from other clients (no Sec-Fetch-Site or Origin header) pass.
func (s *Server) crossSiteGET(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// CrossOriginProtection lets safe methods through unchecked; ask
		// it about the request as if it were a POST.
		asPost := r.WithContext(r.Context())
		asPost.Method = http.MethodPost
		if err := s.cop.Check(asPost); err != nil {
			fail(w, r, http.StatusForbidden, codeCrossOrigin, "cross-origin request refused: "+err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientIP returns the address of the client: the connection's peer,
// without port; or, when the peer is one of Options.TrustedProxies, the
// rightmost address of X-Forwarded-For that is not a trusted proxy (each
// proxy appends the address it got the request from, so addresses left of
// the first untrusted one are whatever the client chose to send). When
// X-Forwarded-For is absent, holds only trusted proxies or has an entry
// that is not an address where the walk reaches it, the client is the
// last trusted address seen.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(s.o.TrustedProxies) == 0 {
		return host
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(peer) {
		return host
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return client.String()
			}
			client = a.Unmap()
			if !s.trusted(client) {
				return client.String()
			}
		}
	}
	return client.String()
}

// trusted reports whether a is one of Options.TrustedProxies.
func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
