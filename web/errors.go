package web

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// ErrInvalidOptions wraps every Options value New rejects.
var ErrInvalidOptions = errors.New("web: invalid options")

// ErrNoCredentials is returned by New when Options.Addr is not a loopback
// address and no credentials are configured: the server would expose the
// dashboard and task enqueueing to the network without authentication.
var ErrNoCredentials = errors.New("web: refusing to listen beyond loopback without credentials")

// ErrRunning is returned by Run when the server is running or has run.
var ErrRunning = errors.New("web: server already started")

// The error codes of the JSON error body. Clients may switch on them.
const (
	codeBadRequest       = "bad_request"            // a malformed request in general
	codeMalformedJSON    = "malformed_json"         // the body is not the JSON it should be
	codeInvalidKey       = "invalid_key"            // a cache key outside the rules
	codeInvalidWork      = "invalid_work"           // ?work= is not an integer in range
	codeUnknownTaskType  = "unknown_task_type"      // POST /api/tasks/{type} with an unregistered type
	codeInvalidPayload   = "invalid_payload"        // the payload fails the type's validation
	codeInvalidOption    = "invalid_option"         // an enqueue option (queue, delay, ...) is bad
	codeInvalidTaskRef   = "invalid_task_ref"       // a queue or task id that cannot exist
	codeInvalidWorkflow  = "invalid_workflow"       // POST /api/workflows: the shape, a step's type, payload or options (the message names the step)
	codeInvalidParameter = "invalid_parameter"      // a query parameter (?limit=, ?offset=) out of range
	codeUnauthorized     = "unauthorized"           // no, a bad or an expired session or basic auth
	codeBadCredentials   = "invalid_credentials"    // wrong username or password
	codeCrossOrigin      = "cross_origin"           // a cross-origin browser request that changes state
	codeForbidden        = "forbidden"              // any other refusal
	codeNotFound         = "not_found"              // no such route or resource
	codeMethodNotAllowed = "method_not_allowed"     // the route exists, with other methods
	codeConflict         = "conflict"               // a task id, workflow id or unique lock is taken
	codeAlreadyFinished  = "already_finished"       // DELETE /api/workflows/{id} or /api/tasks/{queue}/{id} of a finished one
	codeTooLarge         = "request_too_large"      // the body is over MaxBodyBytes
	codeUnsupportedMedia = "unsupported_media_type" // a body in a format the route does not take
	codeRateLimited      = "rate_limited"           // over Options.RateLimit or Options.LoginLimit
	codeInternal         = "internal"               // a bug or a panic
	codeUnavailable      = "unavailable"            // Redis or the queue is unreachable
	codeShuttingDown     = "shutting_down"          // the server is draining
)

// errorBody is the one shape of every error response.
type errorBody struct {
	Error     errorDetail `json:"error"`
	RequestID string      `json:"request_id"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// codeOf returns the generic code of an HTTP status.
func codeOf(status int) string {
	switch status {
	case http.StatusBadRequest:
		return codeBadRequest
	case http.StatusUnauthorized:
		return codeUnauthorized
	case http.StatusForbidden:
		return codeForbidden
	case http.StatusNotFound:
		return codeNotFound
	case http.StatusMethodNotAllowed:
		return codeMethodNotAllowed
	case http.StatusConflict:
		return codeConflict
	case http.StatusRequestEntityTooLarge:
		return codeTooLarge
	case http.StatusUnsupportedMediaType:
		return codeUnsupportedMedia
	case http.StatusTooManyRequests:
		return codeRateLimited
	case http.StatusServiceUnavailable:
		return codeUnavailable
	}
	if status >= 500 {
		return codeInternal
	}
	return codeBadRequest
}

// fail writes the JSON error body with status, code and message.
func fail(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	writeJSON(w, status, errorBody{
		Error:     errorDetail{Code: code, Message: message},
		RequestID: stateOf(r).id,
	})
}

// shapeErrors makes every error response that next writes in another
// format than JSON or HTML (the router's 404 and 405, asynqmon's
// http.Error calls, gorilla/mux's bare 405) into the JSON error body,
// keeping its status and, as the message, its text.
func shapeErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &shapingWriter{ResponseWriter: w}
		defer func() { stateOf(r).route = r.Pattern }() // the router has set it by now, panic or not
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			return
		}
		msg := strings.TrimSpace(sw.text.String())
		switch {
		case r.Pattern == "" && sw.status == http.StatusNotFound:
			msg = fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)
		case r.Pattern == "" && sw.status == http.StatusMethodNotAllowed:
			msg = fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, w.Header().Get("Allow"))
		case msg == "":
			msg = http.StatusText(sw.status)
		}
		w.Header().Del("Content-Length")
		fail(w, r, sw.status, codeOf(sw.status), msg)
	})
}

// maxShapedText bounds the error text shapingWriter keeps.
const maxShapedText = 1 << 10

// shapingWriter holds back an error response whose body is plain text (or
// has no type) and keeps its text for shapeErrors.
type shapingWriter struct {
	http.ResponseWriter
	wrote  bool
	status int // the held-back status; 0 when passing through
	text   bytes.Buffer
}

func (w *shapingWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if status >= 400 && isPlain(w.Header().Get("Content-Type")) {
		w.status = status
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *shapingWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.status != 0 {
		if room := maxShapedText - w.text.Len(); room > 0 {
			w.text.Write(b[:min(len(b), room)])
		}
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes through, unless the response is held back.
func (w *shapingWriter) Flush() {
	if w.status == 0 {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *shapingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// isPlain reports whether contentType is empty or text/plain.
func isPlain(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err != nil || mt == "text/plain"
}
