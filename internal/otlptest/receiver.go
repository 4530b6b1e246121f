package otlptest

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TracesPath is the path OTLP/HTTP exporters post traces to.
const TracesPath = "/v1/traces"

// maxBody bounds a request body, compressed and decompressed.
const maxBody = 32 << 20

// Content types of OTLP/HTTP.
const (
	contentProtobuf = "application/x-protobuf"
	contentJSON     = "application/json"
)

// Receiver is a running OTLP/HTTP trace endpoint on 127.0.0.1. It keeps
// every span it is sent. Its methods are safe for concurrent use; those
// taking a testing.TB fail that test, so call them from its goroutine.
type Receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	spans    Spans
	requests int
	errs     []error
	changed  chan struct{} // closed and replaced whenever a request arrives
}

// NewReceiver starts a receiver on 127.0.0.1 and a free port; cleanup
// closes it.
func NewReceiver(tb testing.TB) *Receiver {
	tb.Helper()
	r := &Receiver{changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	tb.Cleanup(r.srv.Close)
	return r
}

// NewReceiverAt starts a receiver listening on addr ("127.0.0.1:4318"
// for the OTLP/HTTP default endpoint); cleanup closes it. It returns an
// error, failing nothing, when it cannot listen there, so that the caller
// decides what a taken port means.
func NewReceiverAt(tb testing.TB, addr string) (*Receiver, error) {
	tb.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("otlptest: listen on %s: %w", addr, err)
	}
	r := &Receiver{changed: make(chan struct{})}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serveHTTP))
	r.srv.Listener.Close()
	r.srv.Listener = l
	r.srv.Start()
	tb.Cleanup(r.srv.Close)
	return r, nil
}

// URL returns the receiver's base URL, "http://127.0.0.1:port": the value
// of OTEL_EXPORTER_OTLP_ENDPOINT, to which exporters add /v1/traces.
func (r *Receiver) URL() string { return r.srv.URL }

// TracesURL returns the full URL of the traces endpoint: the value of
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, which exporters use as it is.
func (r *Receiver) TracesURL() string { return r.srv.URL + TracesPath }

// Endpoint returns "127.0.0.1:port", for otlptracehttp.WithEndpoint
// (with otlptracehttp.WithInsecure).
func (r *Receiver) Endpoint() string { return r.srv.Listener.Addr().String() }

// Port returns the receiver's TCP port.
func (r *Receiver) Port() int { return r.srv.Listener.Addr().(*net.TCPAddr).Port }

// Spans returns a copy of the spans received so far, in order of arrival.
func (r *Receiver) Spans() Spans {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(Spans(nil), r.spans...)
}

// Requests returns how many requests reached the receiver, including
// those it refused.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Errors returns why the requests the receiver refused were refused.
func (r *Receiver) Errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// Reset forgets the spans, requests and errors received so far.
func (r *Receiver) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans, r.requests, r.errs = nil, 0, nil
}

// WaitFor waits up to timeout until done returns true for the spans
// received so far, and returns those spans. It fails the test, printing
// what arrived, when timeout passes first. done is called with no lock
// held, once at the start and again after each request.
func (r *Receiver) WaitFor(tb testing.TB, timeout time.Duration, what string, done func(Spans) bool) Spans {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		spans := append(Spans(nil), r.spans...)
		changed := r.changed
		r.mu.Unlock()
		if done(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-timer.C:
			tb.Fatalf("otlptest: no %s after %v; %d spans received, %d requests, errors %v:\n%s",
				what, timeout, len(spans), r.Requests(), r.Errors(), spans)
			return nil
		}
	}
}

// WaitForSpans waits up to timeout until at least n spans have arrived,
// and returns every span received.
func (r *Receiver) WaitForSpans(tb testing.TB, n int, timeout time.Duration) Spans {
	tb.Helper()
	return r.WaitFor(tb, timeout, fmt.Sprintf("%d spans", n), func(ss Spans) bool { return len(ss) >= n })
}

// WaitForSpan waits up to timeout until a span for which match is true
// has arrived, and returns the first such span.
func (r *Receiver) WaitForSpan(tb testing.TB, timeout time.Duration, match func(Span) bool) Span {
	tb.Helper()
	ss := r.WaitFor(tb, timeout, "matching span", func(ss Spans) bool { return len(ss.Match(match)) > 0 }).Match(match)
	if len(ss) == 0 { // tb.Fatalf did not stop the goroutine
		return Span{}
	}
	return ss[0]
}

// WaitForNames waits up to timeout until a span of every name in names
// has arrived, and returns every span received.
func (r *Receiver) WaitForNames(tb testing.TB, timeout time.Duration, names ...string) Spans {
	tb.Helper()
	return r.WaitFor(tb, timeout, fmt.Sprintf("spans named %q", names), func(ss Spans) bool {
		for _, n := range names {
			if len(ss.Named(n)) == 0 {
				return false
			}
		}
		return true
	})
}

// serveHTTP handles one export request.
func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	spans, contentType, status, err := decodeRequest(req)

	r.mu.Lock()
	r.requests++
	if err != nil {
		r.errs = append(r.errs, err)
	}
	r.spans = append(r.spans, spans...)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()

	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	// An empty ExportTraceServiceResponse: everything accepted.
	resp := &collectortracepb.ExportTraceServiceResponse{}
	var body []byte
	if contentType == contentJSON {
		body, err = protojson.Marshal(resp)
	} else {
		body, err = proto.Marshal(resp)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write(body)
}

// decodeRequest reads an OTLP/HTTP traces request. On error it returns the
// HTTP status to answer.
func decodeRequest(req *http.Request) (_ []Span, contentType string, status int, _ error) {
	if req.URL.Path != TracesPath {
		return nil, "", http.StatusNotFound, fmt.Errorf("otlptest: %s %s: not the traces endpoint %s", req.Method, req.URL.Path, TracesPath)
	}
	if req.Method != http.MethodPost {
		return nil, "", http.StatusMethodNotAllowed, fmt.Errorf("otlptest: %s %s: want POST", req.Method, req.URL.Path)
	}
	contentType, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || (contentType != contentProtobuf && contentType != contentJSON) {
		return nil, "", http.StatusUnsupportedMediaType,
			fmt.Errorf("otlptest: content type %q: want %s or %s", req.Header.Get("Content-Type"), contentProtobuf, contentJSON)
	}
	body, err := readBody(req)
	if err != nil {
		return nil, contentType, http.StatusBadRequest, err
	}
	var msg collectortracepb.ExportTraceServiceRequest
	if contentType == contentJSON {
		body, err = hexIDsToBase64(body)
		if err == nil {
			err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, &msg)
		}
	} else {
		err = proto.Unmarshal(body, &msg)
	}
	if err != nil {
		return nil, contentType, http.StatusBadRequest, fmt.Errorf("otlptest: decode %s: %w", contentType, err)
	}
	return spansOf(msg.GetResourceSpans()), contentType, http.StatusOK, nil
}

// readBody reads the body, gunzipping it when its Content-Encoding says so.
func readBody(req *http.Request) ([]byte, error) {
	var rd io.Reader = http.MaxBytesReader(nil, req.Body, maxBody)
	switch enc := strings.ToLower(req.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(rd)
		if err != nil {
			return nil, fmt.Errorf("otlptest: gzip body: %w", err)
		}
		defer zr.Close()
		rd = io.LimitReader(zr, maxBody+1)
	default:
		return nil, fmt.Errorf("otlptest: content encoding %q: want gzip or none", enc)
	}
	body, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("otlptest: read body: %w", err)
	}
	if len(body) > maxBody {
		return nil, errors.New("otlptest: body over 32 MiB")
	}
	return body, nil
}

// idKeys are the OTLP/JSON fields that hold ids, which OTLP/JSON writes in
// hex where protojson expects base64.
var idKeys = map[string]bool{"traceId": true, "spanId": true, "parentSpanId": true}

// hexIDsToBase64 rewrites the hex ids of an OTLP/JSON body as base64, so
// protojson can decode it.
func hexIDsToBase64(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("otlptest: decode JSON: %w", err)
	}
	if err := rewriteIDs(v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func rewriteIDs(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && idKeys[k] {
				b, err := hex.DecodeString(s)
				if err != nil {
					return fmt.Errorf("otlptest: %s %q is not hex: %w", k, s, err)
				}
				v[k] = base64.StdEncoding.EncodeToString(b)
				continue
			}
			if err := rewriteIDs(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := rewriteIDs(e); err != nil {
				return err
			}
		}
	}
	return nil
}
