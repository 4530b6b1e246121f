package metrics

import (
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// unmatchedRoute labels requests for which route returned "" (with the
// default route: requests no http.ServeMux pattern matched).
const unmatchedRoute = "unmatched"

// otherMethod labels requests with a non-standard method, so that clients
// cannot create label values at will.
const otherMethod = "OTHER"

// httpMetrics holds the instruments HTTPMiddleware updates.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(ns string) *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests served, by route pattern, method and status class (2xx, 4xx, ...).",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
}

// Describe implements prometheus.Collector.
func (m *httpMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.duration.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *httpMetrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.duration.Collect(ch)
}

// HTTPMiddleware returns middleware that counts requests in
// forgeq_http_requests_total and times them in
// forgeq_http_request_duration_seconds.
//
// A response that is an event stream (Content-Type text/event-stream, such
// as the web's task events) is counted when it ends but not timed: it
// lasts as long as the client follows it, which says nothing of how fast
// requests are served. An error answer of such a route (a 404 in JSON) is
// timed as any other.
//
// route names the route of a request. It is called after the handler
// returns, so it can read r.Pattern, which an http.ServeMux inside the
// middleware sets on the request it is given. It must return few distinct
// values (patterns, not paths). A nil route uses r.Pattern. An empty result
// is labelled "unmatched". Methods other than the standard ones are
// labelled "OTHER"; the code label is the status class ("2xx", "4xx", ...).
// A handler that panics counts as "5xx" and its panic goes on up. When the
// request runs in a sampled span (package telemetry), its duration
// observation carries the trace id as an exemplar.
//
// The returned middleware is safe for concurrent use.
func (x *Metrics) HTTPMiddleware(route func(*http.Request) string) func(http.Handler) http.Handler {
	if route == nil {
		route = func(r *http.Request) string { return r.Pattern }
	}
	m := x.http
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w}
			finished := false
			defer func() {
				code := sw.status
				switch {
				case !finished:
					code = http.StatusInternalServerError // panicked
				case code == 0:
					code = http.StatusOK // nothing written
				}
				name := route(r)
				if name == "" {
					name = unmatchedRoute
				}
				method := methodLabel(r.Method)
				m.requests.WithLabelValues(name, method, statusClass(code)).Inc()
				if !sw.stream {
					observe(r.Context(), m.duration.WithLabelValues(name, method), time.Since(start).Seconds())
				}
			}()
			next.ServeHTTP(sw, r)
			finished = true
		})
	}
}

// methodLabel returns method if it is a standard one, else "OTHER".
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return otherMethod
}

// statusClass returns "2xx" for 200 to 299, and so on.
func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "unknown"
	}
	return strconv.Itoa(code/100) + "xx"
}

// eventStream is the media type of Server-Sent Events responses.
const eventStream = "text/event-stream"

// statusWriter records the status code a handler sends, and whether the
// response is an event stream. Unwrap lets http.ResponseController reach
// the underlying writer's Flush, Hijack and deadlines.
type statusWriter struct {
	http.ResponseWriter
	status int
	stream bool // sent with Content-Type text/event-stream
}

// WriteHeader records the first final status code and passes it on.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.noteStatus(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 and passes b on.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.noteStatus(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush flushes the underlying writer when it can.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.noteStatus(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// noteStatus records code, the status sent, and the media type sent with it.
func (w *statusWriter) noteStatus(code int) {
	w.status = code
	mt, _, _ := mime.ParseMediaType(w.Header().Get("Content-Type"))
	w.stream = mt == eventStream
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
