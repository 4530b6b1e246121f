package web_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// The credentials of the tests that configure some.
const (
	testUser = "admin"
	testPass = "correct horse battery staple"
)

// withAuth configures the test credentials.
func withAuth(o *web.Options) {
	o.AuthUsername, o.AuthPassword = testUser, testPass
}

// testBundle is a server on a fresh miniredis, behind an httptest server.
type testBundle struct {
	srv  *web.Server
	ts   *httptest.Server
	mr   *miniredis.Miniredis
	rdb  redis.UniversalClient
	m    *cachemgr.Manager
	logs *observer.ObservedLogs
}

// setup returns a bundle whose server has the options that the mods
// make; Manager and Logger are filled in. Everything is closed in
// tb.Cleanup.
func setup(tb testing.TB, mods ...func(*web.Options)) *testBundle {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	return setupOn(tb, mr, rdb, mods...)
}

// setupOn is setup on a given client (mr may be nil).
func setupOn(tb testing.TB, mr *miniredis.Miniredis, rdb redis.UniversalClient, mods ...func(*web.Options)) *testBundle {
	tb.Helper()
	return setupPrefixed(tb, mr, rdb, "", mods...)
}

// setupPrefixed is setupOn with a manager whose KeyPrefix is prefix (""
// for the default), so that bundles sharing a database keep their cache
// values, sessions and rate limits apart.
func setupPrefixed(tb testing.TB, mr *miniredis.Miniredis, rdb redis.UniversalClient, prefix string, mods ...func(*web.Options)) *testBundle {
	tb.Helper()
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{KeyPrefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	core, logs := observer.New(zap.DebugLevel)
	o := web.Options{
		Manager: m,
		Logger:  zap.New(zapcore.NewTee(core, zaptest.NewLogger(tb).Core())),
	}
	for _, mod := range mods {
		mod(&o)
	}
	srv, err := web.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	tb.Cleanup(ts.Close)
	return &testBundle{srv: srv, ts: ts, mr: mr, rdb: rdb, m: m, logs: logs}
}

// response is what send got back.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// req describes a request for send. Header values are set as given;
// Cookie adds a session cookie.
type req struct {
	Method string
	Path   string
	Body   string
	Header map[string]string
	Cookie string
	User   string // basic auth, with Pass
	Pass   string
	// Chunked sends the body without a Content-Length.
	Chunked bool
}

// jsonHeader is the Content-Type of JSON bodies.
var jsonHeader = map[string]string{"Content-Type": "application/json"}

// send makes the request against b's server, without following redirects.
func (b *testBundle) send(tb testing.TB, q req) response {
	tb.Helper()
	return send(tb, b.ts.URL, q)
}

func send(tb testing.TB, base string, q req) response {
	tb.Helper()
	method := q.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if q.Body != "" {
		body = strings.NewReader(q.Body)
		if q.Chunked {
			body = struct{ io.Reader }{body}
		}
	}
	r, err := http.NewRequest(method, base+q.Path, body)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range q.Header {
		r.Header.Set(k, v)
	}
	if q.Cookie != "" {
		r.AddCookie(&http.Cookie{Name: web.SessionCookie, Value: q.Cookie})
	}
	if q.User != "" {
		r.SetBasicAuth(q.User, q.Pass)
	}
	return do(tb, r)
}

// do sends r without following redirects and reads the whole response.
func do(tb testing.TB, r *http.Request) response {
	tb.Helper()
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(r)
	if err != nil {
		tb.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", r.Method, r.URL, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// errorBody mirrors the one shape of error responses.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

// wantError checks that resp is an error response with status and code in
// the one JSON shape, with a message and the response's request id, and
// returns its message.
func wantError(tb testing.TB, resp response, status int, code string) string {
	tb.Helper()
	if resp.Status != status {
		tb.Fatalf("status = %d, want %d; body: %s", resp.Status, status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type = %q, want application/json", ct)
	}
	var got errorBody
	dec := json.NewDecoder(bytes.NewReader(resp.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		tb.Fatalf("body %s is not the error shape: %v", resp.Body, err)
	}
	if got.Error.Code != code {
		tb.Errorf("error code = %q, want %q (message %q)", got.Error.Code, code, got.Error.Message)
	}
	if got.Error.Message == "" {
		tb.Error("error message is empty")
	}
	if id := resp.Header.Get(web.RequestIDHeader); got.RequestID == "" || got.RequestID != id {
		tb.Errorf("request_id = %q, want the %s header %q", got.RequestID, web.RequestIDHeader, id)
	}
	return got.Error.Message
}

// decode decodes a JSON body into a T, failing on anything else.
func decode[T any](tb testing.TB, resp response) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(resp.Body, &v); err != nil {
		tb.Fatalf("decode %s: %v", resp.Body, err)
	}
	return v
}

// state returns what Redis holds, except the rate limiters' state (which
// every counted attempt changes): every key and its value. On a real
// Redis, only the keys of b's manager (its KeyPrefix) and asynq's count.
func (b *testBundle) state(tb testing.TB) string {
	tb.Helper()
	if b.mr == nil {
		return b.realState(tb)
	}
	var out strings.Builder
	keep := false
	for line := range strings.Lines(b.mr.Dump()) {
		if strings.HasPrefix(line, "- ") {
			keep = !strings.HasPrefix(line, "- rate:")
		}
		if keep {
			out.WriteString(line)
		}
	}
	return out.String()
}

// realState is state on a real Redis: each key of b's manager and of
// asynq, in order, with its type and its value (DUMP's serialization for
// anything but a string).
func (b *testBundle) realState(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	var keys []string
	for _, match := range []string{b.m.KeyPrefix() + "*", "asynq:*"} {
		iter := b.rdb.Scan(ctx, 0, match, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			tb.Fatalf("scan %s: %v", match, err)
		}
	}
	slices.Sort(keys)
	var out strings.Builder
	for _, k := range keys {
		typ, err := b.rdb.Type(ctx, k).Result()
		if err != nil {
			tb.Fatalf("type %s: %v", k, err)
		}
		var v string
		if typ == "string" {
			v, err = b.rdb.Get(ctx, k).Result()
		} else {
			v, err = b.rdb.Dump(ctx, k).Result()
			v = hex.EncodeToString([]byte(v))
		}
		if err != nil && !errors.Is(err, redis.Nil) { // redis.Nil: it expired meanwhile
			tb.Fatalf("read %s: %v", k, err)
		}
		fmt.Fprintf(&out, "%s %s %s\n", k, typ, v)
	}
	return out.String()
}

// elapse lets d pass for expiries in Redis: miniredis's clock moves on at
// once, a real Redis needs real time.
func (b *testBundle) elapse(d time.Duration) {
	if b.mr != nil {
		b.mr.FastForward(d)
		return
	}
	time.Sleep(d)
}

// login logs in through POST /login and returns the session id.
func (b *testBundle) login(tb testing.TB) string {
	tb.Helper()
	resp := b.send(tb, req{Method: http.MethodPost, Path: "/login", Header: jsonHeader,
		Body: `{"username":"` + testUser + `","password":"` + testPass + `"}`})
	if resp.Status != http.StatusOK {
		tb.Fatalf("login: status %d: %s", resp.Status, resp.Body)
	}
	for _, c := range (&http.Response{Header: resp.Header}).Cookies() {
		if c.Name == web.SessionCookie && c.Value != "" {
			return c.Value
		}
	}
	tb.Fatalf("login set no %s cookie", web.SessionCookie)
	return ""
}

// startWorker runs an asynq server with the handlers of forgeq's default
// task types on rdb until the test ends.
func startWorker(tb testing.TB, rdb redis.UniversalClient, m *cachemgr.Manager) {
	tb.Helper()
	startWorkerFor(tb, tasks.Default(), rdb, m)
}

// startWorkerFor is startWorker with the task types of reg.
func startWorkerFor(tb testing.TB, reg *tasks.Registry, rdb redis.UniversalClient, m *cachemgr.Manager) {
	tb.Helper()
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       4,
		Queues:            map[string]int{"default": 1, "low": 1},
		TaskCheckInterval: 20 * time.Millisecond,
		Logger:            zaptest.NewLogger(tb).Sugar(),
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(tasks.NewMux(reg, tasks.Deps{Cache: m})); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
}

// taskStatus mirrors the body of GET /api/tasks/{queue}/{id}.
type taskStatus struct {
	ID          string          `json:"id"`
	Queue       string          `json:"queue"`
	Type        string          `json:"type"`
	State       string          `json:"state"`
	Payload     json.RawMessage `json:"payload"`
	MaxRetry    int             `json:"max_retry"`
	Retried     int             `json:"retried"`
	LastError   string          `json:"last_error"`
	CompletedAt *time.Time      `json:"completed_at"`
	Result      json.RawMessage `json:"result"`
	Progress    *tasks.Progress `json:"progress"`
}

// waitState polls the status of a task until it is in state want.
func waitState(tb testing.TB, base, statusURL, want string) taskStatus {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp := send(tb, base, req{Path: statusURL})
		if resp.Status == http.StatusOK {
			st := decode[taskStatus](tb, resp)
			if st.State == want {
				return st
			}
			if time.Now().After(deadline) {
				tb.Fatalf("task %s is %s, want %s: %s", statusURL, st.State, want, resp.Body)
			}
		} else if time.Now().After(deadline) {
			tb.Fatalf("GET %s: status %d: %s", statusURL, resp.Status, resp.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) {
		o.Addr = "127.0.0.1:0"
		o.DrainDelay = 500 * time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := b.srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	base := "http://" + b.srv.Addr()
	if strings.HasSuffix(base, ":0") {
		t.Fatalf("Addr() = %q after Listen, want the bound port", b.srv.Addr())
	}
	ran := make(chan error, 1)
	go func() { ran <- b.srv.Run(ctx) }()

	if resp := send(t, base, req{Path: "/health/live"}); resp.Status != http.StatusOK {
		t.Fatalf("GET /health/live: status %d", resp.Status)
	}
	if resp := send(t, base, req{Path: "/health/ready"}); resp.Status != http.StatusOK {
		t.Fatalf("GET /health/ready: status %d: %s", resp.Status, resp.Body)
	}
	before := b.state(t)

	cancel()
	// During the drain delay the listener is open: readiness fails, live
	// passes, and new requests are refused with nothing enqueued.
	deadline := time.Now().Add(5 * time.Second)
	for send(t, base, req{Path: "/health/ready"}).Status != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/health/ready still passes after the ctx of Run ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if resp := send(t, base, req{Path: "/health/live"}); resp.Status != http.StatusOK {
		t.Errorf("GET /health/live while draining: status %d, want 200", resp.Status)
	}
	resp := send(t, base, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData,
		Header: jsonHeader, Body: `{"payload":{"key":"k","work":1}}`})
	wantError(t, resp, http.StatusServiceUnavailable, "shutting_down")
	if diff := cmp.Diff(before, b.state(t)); diff != "" {
		t.Errorf("Redis changed by a request refused while draining (-before +after):\n%s", diff)
	}

	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run = %v, want nil after a clean shutdown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its ctx ended")
	}
	if _, err := http.Get(base + "/health/live"); err == nil {
		t.Error("the server still answers after Run returned")
	}
	if err := b.srv.Run(context.Background()); !errors.Is(err, web.ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func TestRunFailsWhenAddrIsTaken(t *testing.T) {
	t.Parallel()
	first := setup(t, func(o *web.Options) { o.Addr = "127.0.0.1:0" })
	if err := first.srv.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // Run with an ended ctx closes the listener
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := first.srv.Run(ctx); err != nil {
			t.Error(err)
		}
	})
	second := setup(t, func(o *web.Options) { o.Addr = first.srv.Addr() })
	if err := second.srv.Run(context.Background()); err == nil {
		t.Fatal("Run on a taken address = nil, want an error")
	}
}
