package worker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

func TestWebOptions(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		give config.HTTP
		want web.Options
	}{
		{
			name: "defaults",
			give: config.HTTP{
				Addr: "127.0.0.1:8080", RateLimit: config.RateLimit{Rate: 100, Period: time.Second},
				LoginRateLimit: config.RateLimit{Rate: 5, Period: time.Minute},
				SessionTTL:     12 * time.Hour, CookieSecure: true, TaskRetention: 24 * time.Hour, ShutdownTimeout: 5 * time.Second,
			},
			want: web.Options{
				Addr: "127.0.0.1:8080", RateLimit: cachemgr.Limit{Rate: 100, Period: time.Second},
				LoginLimit: cachemgr.Limit{Rate: 5, Period: time.Minute},
				SessionTTL: 12 * time.Hour, CookieSecure: true, TaskRetention: 24 * time.Hour, ShutdownTimeout: 5 * time.Second,
			},
		},
		{
			name: "everything set, no rate limit",
			give: config.HTTP{
				Addr: "0.0.0.0:9000", AuthUsername: "admin", AuthPassword: "pw",
				LoginRateLimit: config.RateLimit{Rate: 20, Period: time.Hour},
				SessionTTL:     time.Hour, DashboardReadOnly: true, DashboardPrometheusURL: "http://prometheus:9090", MetricsAuth: true,
				TaskRetention: time.Minute, ShutdownTimeout: time.Second,
			},
			want: web.Options{
				Addr: "0.0.0.0:9000", AuthUsername: "admin", AuthPassword: "pw",
				LoginLimit: cachemgr.Limit{Rate: 20, Period: time.Hour},
				SessionTTL: time.Hour, ReadOnlyDashboard: true, DashboardPrometheusURL: "http://prometheus:9090", MetricsAuth: true,
				TaskRetention: time.Minute, ShutdownTimeout: time.Second,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if d := cmp.Diff(tt.want, webOptions(tt.give)); d != "" {
				t.Errorf("webOptions (-want +got)\n%s", d)
			}
		})
	}
}

// TestWebDefaults checks that the web process gets from the config's
// defaults what it would choose itself (the login limit with its burst
// left to the default of Rate), and the API rate limit.
func TestWebDefaults(t *testing.T) {
	t.Parallel()

	cfg, err := config.Load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := webOptions(cfg.HTTP)
	got := []any{o.Addr, o.SessionTTL, o.TaskRetention, o.ShutdownTimeout, o.RateLimit, o.CookieSecure, o.LoginLimit}
	login := web.DefaultLoginLimit
	if login.Burst != login.Rate {
		t.Fatalf("web.DefaultLoginLimit %+v has a burst other than its rate, which config cannot express", login)
	}
	want := []any{web.DefaultAddr, web.DefaultSessionTTL, web.DefaultTaskRetention, web.DefaultShutdownTimeout,
		cachemgr.Limit{Rate: 100, Period: time.Second}, true, cachemgr.Limit{Rate: login.Rate, Period: login.Period}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("addr, session TTL, retention, shutdown timeout, rate limit, secure cookie, login limit (-want +got)\n%s", d)
	}
}

// TestReadiness checks what /health/ready says about the worker as it
// starts, runs and shuts down.
func TestReadiness(t *testing.T) {
	t.Parallel()

	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var r readiness
	srv, err := web.New(web.Options{Manager: m, Ready: r.check})
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name       string
		give       func()
		wantStatus int
		wantWorker string
	}{
		{name: "starting", give: func() {}, wantStatus: http.StatusServiceUnavailable, wantWorker: "worker is starting"},
		{name: "running", give: r.running, wantStatus: http.StatusOK, wantWorker: "ok"},
		{name: "stopping", give: r.stopping, wantStatus: http.StatusServiceUnavailable, wantWorker: "worker is shutting down"},
		{name: "never running again", give: r.running, wantStatus: http.StatusServiceUnavailable, wantWorker: "worker is shutting down"},
	}
	for _, st := range steps {
		st.give()
		req := httptest.NewRequest(http.MethodGet, "/health/ready", nil)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", st.name, err, rec.Body)
		}
		if rec.Code != st.wantStatus || body.Checks["worker"] != st.wantWorker {
			t.Errorf("%s: %d %s, want %d with worker %q", st.name, rec.Code, rec.Body, st.wantStatus, st.wantWorker)
		}
	}
}

// webWorker is run, in this process, with its web process on.
type webWorker struct {
	base   string // http://127.0.0.1:port
	log    *logBuffer
	cancel context.CancelFunc
	done   chan error
}

// startWebWorker runs the worker with env (plus JSON logs, HTTP_ADDR
// 127.0.0.1:0 unless env sets one, and a short shutdown timeout) and waits
// until it takes tasks and serves HTTP. Cleanup stops it.
func startWebWorker(tb testing.TB, env map[string]string) *webWorker {
	tb.Helper()
	e := map[string]string{"LOG_FORMAT": "json", "HTTP_ADDR": "127.0.0.1:0", "WORKER_SHUTDOWN_TIMEOUT": "2s"}
	for k, v := range env {
		e[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &webWorker{log: &logBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- run(ctx, nil, func(k string) string { return e[k] }, io.Discard, w.log) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			tb.Errorf("run did not return 30s after cancel")
		}
		if tb.Failed() {
			tb.Logf("worker log:\n%s", w.log)
		}
	})
	w.log.waitMsg(tb, "worker started", 30*time.Second)
	listening := w.log.waitMsg(tb, "web listening", 10*time.Second)
	addr, _ := listening["addr"].(string)
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("web listening at %q: %v", addr, err)
	}
	w.base = "http://" + net.JoinHostPort("127.0.0.1", port)
	return w
}

// stop cancels run's ctx and returns its error.
func (w *webWorker) stop(tb testing.TB) error {
	tb.Helper()
	w.cancel()
	select {
	case err := <-w.done:
		w.done <- err // for Cleanup
		return err
	case <-time.After(30 * time.Second):
		tb.Fatalf("run did not return 30s after cancel; log:\n%s", w.log)
		return nil
	}
}

// response is what do read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// decode unmarshals the body into v.
func (r response) decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("body %q: %v", r.body, err)
	}
}

// noRedirects is an HTTP client that shows redirects instead of following
// them.
var noRedirects = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// do sends a request to the worker; a non-empty body is JSON. prepare, when
// not nil, adjusts the request.
func (w *webWorker) do(tb testing.TB, method, path, body string, prepare func(*http.Request)) response {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.base+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if prepare != nil {
		prepare(req)
	}
	res, err := noRedirects.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// scrapeResult is one GET /metrics: each sample line's series
// (`name{labels}`, labels as Prometheus prints them) and value.
type scrapeResult map[string]float64

// scrape reads /metrics.
func (w *webWorker) scrape(tb testing.TB) scrapeResult {
	tb.Helper()
	res := w.do(tb, http.MethodGet, "/metrics", "", nil)
	if res.status != http.StatusOK {
		tb.Fatalf("GET /metrics: %d %s", res.status, res.body)
	}
	out := scrapeResult{}
	for _, line := range strings.Split(string(res.body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			tb.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// value returns series's value, failing the test when it is missing.
func (s scrapeResult) value(tb testing.TB, series string) float64 {
	tb.Helper()
	v, ok := s[series]
	if !ok {
		tb.Errorf("/metrics has no %s", series)
	}
	return v
}

// get returns series's value, 0 when it is missing.
func (s scrapeResult) get(series string) float64 { return s[series] }

// enqueued is the 202 body of POST /api/tasks/{type}.
type enqueued struct {
	ID        string `json:"id"`
	Queue     string `json:"queue"`
	StatusURL string `json:"status_url"`
}

// taskStatus is the part of GET /api/tasks/{queue}/{id} the tests read.
type taskStatus struct {
	State  string          `json:"state"`
	Result json.RawMessage `json:"result"`
}

// waitCompleted polls the task's status URL until it is completed.
func (w *webWorker) waitCompleted(tb testing.TB, statusURL string, prepare func(*http.Request)) taskStatus {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		res := w.do(tb, http.MethodGet, statusURL, "", prepare)
		var st taskStatus
		if res.status == http.StatusOK {
			res.decode(tb, &st)
			if st.State == "completed" {
				return st
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("GET %s: not completed within 15s: %d %s", statusURL, res.status, res.body)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestRunWeb runs the worker with its web process on real Redis and goes
// through health, a task enqueued and followed over HTTP, /metrics, the
// dashboard and the shutdown.
func TestRunWeb(t *testing.T) {
	t.Parallel()

	url := flushedURL(t, 6)
	w := startWebWorker(t, map[string]string{"REDIS_CONNECTION_URL": url})
	if e := w.log.withMsg("worker starting"); len(e) != 1 || e[0]["http_addr"] != strings.TrimPrefix(w.base, "http://") || e[0]["http_auth"] != false {
		t.Errorf("worker starting = %v, want the bound http_addr and http_auth false", e)
	}

	t.Run("health", func(t *testing.T) {
		for _, tt := range []struct {
			path       string
			wantBody   string
			wantStatus int
		}{
			{"/health/live", `{"status":"ok"}`, http.StatusOK},
			{"/health/redis", `{"status":"healthy"}`, http.StatusOK},
			{"/health/ready", `{"status":"ready","checks":{"redis":"ok","server":"ok","worker":"ok"}}`, http.StatusOK},
		} {
			res := w.do(t, http.MethodGet, tt.path, "", nil)
			if res.status != tt.wantStatus || strings.TrimSpace(string(res.body)) != tt.wantBody {
				t.Errorf("GET %s: %d %s, want %d %s", tt.path, res.status, res.body, tt.wantStatus, tt.wantBody)
			}
		}
	})

	t.Run("task over HTTP, then metrics", func(t *testing.T) {
		res := w.do(t, http.MethodPost, "/api/tasks/"+tasks.TypeProcessData, `{"payload": {"key": "web:1", "work": 1000}}`, nil)
		if res.status != http.StatusAccepted {
			t.Fatalf("POST: %d %s", res.status, res.body)
		}
		// The default HTTP_RATE_LIMIT, 100/1s, reaches the web process.
		if got := res.header.Get("X-RateLimit-Limit"); got != "100" {
			t.Errorf("X-RateLimit-Limit = %q, want 100", got)
		}
		var task enqueued
		res.decode(t, &task)
		if task.Queue != "default" || task.StatusURL != "/api/tasks/default/"+task.ID {
			t.Errorf("enqueued %+v", task)
		}
		st := w.waitCompleted(t, task.StatusURL, nil)
		var result tasks.ProcessDataResult
		if err := json.Unmarshal(st.Result, &result); err != nil || result.Value != tasks.Digest("web:1", 1000) {
			t.Errorf("result %s (%v), want value %s", st.Result, err, tasks.Digest("web:1", 1000))
		}

		res = w.do(t, http.MethodGet, "/metrics", "", nil)
		if res.status != http.StatusOK {
			t.Fatalf("GET /metrics: %d %s", res.status, res.body)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^forgeq_cache_calls_total\{op="[a-z_]+"\} [1-9]`),
			regexp.MustCompile(`(?m)^forgeq_tasks_processed_total\{queue="default",task_type="data:process"\} 1$`),
			regexp.MustCompile(`(?m)^forgeq_task_duration_seconds_count\{queue="default",task_type="data:process"\} 1$`),
			regexp.MustCompile(`(?m)^forgeq_http_requests_total\{code="2xx",method="POST",route="POST /api/tasks/\{type\}"\} 1$`),
			regexp.MustCompile(`(?m)^forgeq_queue_tasks\{queue="default",state="completed"\} 1$`),
			regexp.MustCompile(`(?m)^process_resident_memory_bytes `),
		} {
			if !want.Match(res.body) {
				t.Errorf("/metrics has no line matching %s", want)
			}
		}
		// The failure series exist from the start, at zero.
		if !regexp.MustCompile(`(?m)^forgeq_tasks_failed_total\{outcome="retry",queue="default",task_type="data:process"\} 0$`).Match(res.body) {
			t.Error("/metrics has no zero failure series for data:process on default")
		}
		if regexp.MustCompile(`(?m)^forgeq_tasks_failed_total\{.*\} [1-9]`).Match(res.body) {
			t.Error("/metrics counts a failed task")
		}
	})

	t.Run("metrics move with traffic", func(t *testing.T) {
		before := w.scrape(t)
		// The cache-aside route: a miss that computes, then a hit.
		for _, wantSource := range []string{"computed", "cache"} {
			res := w.do(t, http.MethodGet, "/api/cache/web:graph?work=10", "", nil)
			if res.status != http.StatusOK || !strings.Contains(string(res.body), `"source":"`+wantSource+`"`) {
				t.Fatalf("GET /api/cache/web:graph: %d %s, want source %s", res.status, res.body, wantSource)
			}
		}
		// A key that holds a list: Redis answers GET with WRONGTYPE.
		rdb := redisClient(t, url)
		if err := rdb.RPush(t.Context(), cachemgr.DefaultKeyPrefix+"web:broken", "x").Err(); err != nil {
			t.Fatal(err)
		}
		if res := w.do(t, http.MethodGet, "/api/cache/web:broken", "", nil); res.status != http.StatusServiceUnavailable {
			t.Errorf("GET /api/cache/web:broken (a list in Redis): %d %s, want 503", res.status, res.body)
		}
		// A task waits on a paused queue.
		if res := w.do(t, http.MethodPost, "/monitoring/api/queues/low:pause", "", nil); res.status != http.StatusNoContent {
			t.Fatalf("pause low: %d %s", res.status, res.body)
		}
		enqueueStart := time.Now()
		res := w.do(t, http.MethodPost, "/api/tasks/"+tasks.TypeProcessData, `{"payload": {"key": "web:wait", "work": 10}, "queue": "low"}`, nil)
		if res.status != http.StatusAccepted {
			t.Fatalf("POST on queue low: %d %s", res.status, res.body)
		}
		var waiting enqueued
		res.decode(t, &waiting)

		// The queue metrics served are those of the last queue read, made
		// at most metrics.DefaultQueueScrapeInterval before: scrape until
		// one made after the enqueue is served.
		var after scrapeResult
		deadline := time.Now().Add(metrics.DefaultQueueScrapeInterval + 10*time.Second)
		for {
			after = w.scrape(t)
			if after.get(`forgeq_queue_tasks{queue="low",state="pending"}`) == 1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		scrapeEnd := time.Now()

		for _, tt := range []struct {
			series string
			want   float64 // at least this much more than before
		}{
			{`forgeq_cache_misses_total{op="get"}`, 1},
			{`forgeq_cache_hits_total{op="get"}`, 1},
			{`forgeq_cache_errors_total{op="get"}`, 1},
			{`forgeq_cache_misses_total{op="get_or_compute"}`, 1},
			{`forgeq_cache_operation_duration_seconds_count{op="get"}`, 3},
			{`forgeq_cache_operation_duration_seconds_count{op="get_or_compute"}`, 1},
			{`forgeq_http_request_duration_seconds_count{method="GET",route="GET /api/cache/{key...}"}`, 3},
			{`forgeq_http_requests_total{code="5xx",method="GET",route="GET /api/cache/{key...}"}`, 1},
		} {
			if d := after.value(t, tt.series) - before.get(tt.series); d < tt.want {
				t.Errorf("%s rose by %v, want at least %v", tt.series, d, tt.want)
			}
		}
		if d := after.value(t, `forgeq_cache_operation_duration_seconds_sum{op="get"}`) - before.get(`forgeq_cache_operation_duration_seconds_sum{op="get"}`); d <= 0 {
			t.Errorf("cache get latency sum rose by %v, want > 0", d)
		}
		// Every accepted async call has finished.
		if v := after.value(t, "forgeq_cache_async_in_flight"); v != 0 {
			t.Errorf("forgeq_cache_async_in_flight = %v after the requests returned, want 0", v)
		}
		// The waiting task's queue: its size, pause and latency, under our
		// names and under asynq's (for the dashboard's charts). The latency
		// is the task's age when the queues were read, between the enqueue
		// and the scrape.
		hi := scrapeEnd.Sub(enqueueStart).Seconds()
		for _, series := range []string{`forgeq_queue_latency_seconds{queue="low"}`, `asynq_queue_latency_seconds{queue="low"}`} {
			if v := after.value(t, series); v <= 0 || v > hi {
				t.Errorf("%s = %v, want the waiting task's age, in (0, %v]", series, v, hi)
			}
		}
		for series, want := range map[string]float64{
			`forgeq_queue_tasks{queue="low",state="pending"}`:         1,
			`forgeq_queue_paused{queue="low"}`:                        1,
			`asynq_tasks_enqueued_total{queue="low",state="pending"}`: 1,
			`asynq_queue_size{queue="low"}`:                           1,
			`asynq_queue_latency_seconds{queue="default"}`:            0,
		} {
			if v := after.value(t, series); v != want {
				t.Errorf("%s = %v, want %v", series, v, want)
			}
		}

		if res := w.do(t, http.MethodPost, "/monitoring/api/queues/low:resume", "", nil); res.status != http.StatusNoContent {
			t.Fatalf("resume low: %d %s", res.status, res.body)
		}
		w.waitCompleted(t, waiting.StatusURL, nil)
	})

	t.Run("dashboard", func(t *testing.T) {
		res := w.do(t, http.MethodGet, "/monitoring/", "", nil)
		if res.status != http.StatusOK || !strings.HasPrefix(res.header.Get("Content-Type"), "text/html") {
			t.Errorf("GET /monitoring/: %d %s", res.status, res.header.Get("Content-Type"))
		}
		res = w.do(t, http.MethodGet, "/monitoring/api/queues", "", nil)
		if res.status != http.StatusOK || !strings.Contains(string(res.body), `"queue":"default"`) {
			t.Errorf("GET /monitoring/api/queues: %d %s", res.status, res.body)
		}
	})

	if err := w.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(w.base, "http://"), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still listens after run returned", w.base)
	}
	// The web process and the asynq server both shut down before run
	// returns and closes the cache manager.
	var msgs []string
	for _, e := range w.log.entries() {
		msgs = append(msgs, e["msg"].(string))
	}
	stopped := indexFrom(msgs, "worker stopped", 0)
	for _, want := range []string{"web shutting down", "web stopped", "worker shutting down: no new tasks; running tasks may finish"} {
		if i := indexFrom(msgs, want, 0); i < 0 || stopped < 0 || i > stopped {
			t.Errorf("log has %q at %d, want it before \"worker stopped\" at %d; messages: %q", want, i, stopped, msgs)
		}
	}
}

// TestRunWebAuth runs the worker on every interface with credentials: every
// /api/ route and the dashboard want them, as basic auth or a login
// session.
func TestRunWebAuth(t *testing.T) {
	t.Parallel()

	const password = "correct horse battery staple"
	url := flushedURL(t, 7)
	w := startWebWorker(t, map[string]string{
		"REDIS_CONNECTION_URL": url,
		"HTTP_ADDR":            "0.0.0.0:0",
		"HTTP_AUTH_USERNAME":   "admin",
		"HTTP_AUTH_PASSWORD":   password,
		// Two attempts a minute: a right password clears the count, so
		// the test's own logins never hit it.
		"HTTP_LOGIN_RATE_LIMIT": "2/1m",
	})
	if e := w.log.withMsg("worker starting"); len(e) != 1 || e[0]["http_auth"] != true {
		t.Errorf("worker starting = %v, want http_auth true", e)
	}
	basic := func(user, pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pass) }
	}
	const body = `{"payload": {"key": "web:auth", "work": 10}}`
	path := "/api/tasks/" + tasks.TypeProcessData

	res := w.do(t, http.MethodPost, path, body, nil)
	var fail struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	res.decode(t, &fail)
	if res.status != http.StatusUnauthorized || fail.Error.Code != "unauthorized" || res.header.Get("WWW-Authenticate") == "" {
		t.Errorf("POST without credentials: %d %s %v, want 401 unauthorized with a challenge", res.status, res.body, res.header)
	}
	res = w.do(t, http.MethodPost, path, body, basic("admin", "wrong"))
	if res.status != http.StatusUnauthorized || !strings.Contains(string(res.body), `"invalid_credentials"`) {
		t.Errorf("POST with a wrong password: %d %s, want 401 invalid_credentials", res.status, res.body)
	}
	res = w.do(t, http.MethodPost, path, body, basic("admin", password))
	if res.status != http.StatusAccepted {
		t.Fatalf("POST with basic auth: %d %s, want 202", res.status, res.body)
	}
	var task enqueued
	res.decode(t, &task)
	// Reading a task needs credentials too: it shows the payload and the
	// result.
	res = w.do(t, http.MethodGet, task.StatusURL, "", nil)
	if res.status != http.StatusUnauthorized {
		t.Errorf("GET %s without credentials: %d %s, want 401", task.StatusURL, res.status, res.body)
	}
	w.waitCompleted(t, task.StatusURL, basic("admin", password))
	for _, path := range []string{"/api/cache/web:auth", "/api/task-types"} {
		if res := w.do(t, http.MethodGet, path, "", nil); res.status != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d %s, want 401", path, res.status, res.body)
		}
		if res := w.do(t, http.MethodGet, path, "", basic("admin", password)); res.status != http.StatusOK {
			t.Errorf("GET %s with basic auth: %d %s, want 200", path, res.status, res.body)
		}
	}

	// The dashboard sends a browser without a session to the login page.
	res = w.do(t, http.MethodGet, "/monitoring/", "", nil)
	if loc := res.header.Get("Location"); res.status != http.StatusSeeOther || !strings.HasPrefix(loc, "/login?next=") {
		t.Errorf("GET /monitoring/ without credentials: %d to %q, want 303 to the login page", res.status, loc)
	}
	res = w.do(t, http.MethodPost, "/login", `{"username": "admin", "password": "`+password+`"}`, nil)
	var session *http.Cookie
	for _, c := range (&http.Response{Header: res.header}).Cookies() {
		if c.Name == web.SessionCookie {
			session = c
		}
	}
	// HTTP_COOKIE_SECURE defaults to true: browsers keep the cookie over
	// HTTPS and on loopback.
	if res.status != http.StatusOK || session == nil || !session.Secure || !session.HttpOnly {
		t.Fatalf("POST /login: %d %s, cookie %+v; want 200 and a Secure, HttpOnly session cookie", res.status, res.body, session)
	}
	res = w.do(t, http.MethodGet, "/monitoring/", "", func(r *http.Request) { r.AddCookie(session) })
	if res.status != http.StatusOK {
		t.Errorf("GET /monitoring/ with a session: %d", res.status)
	}

	// HTTP_LOGIN_RATE_LIMIT: of three wrong passwords in a row at most two
	// are checked; then even the right one waits.
	for range 3 {
		res = w.do(t, http.MethodGet, "/api/task-types", "", basic("admin", "wrong"))
	}
	if res.status != http.StatusTooManyRequests || res.header.Get("Retry-After") == "" {
		t.Errorf("third wrong password a minute with HTTP_LOGIN_RATE_LIMIT=2/1m: %d %s, want 429 with Retry-After", res.status, res.body)
	}
	if res = w.do(t, http.MethodGet, "/api/task-types", "", basic("admin", password)); res.status != http.StatusTooManyRequests {
		t.Errorf("the right password after that: %d %s, want 429", res.status, res.body)
	}

	if err := w.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if strings.Contains(w.log.String(), password) {
		t.Error("the log shows the password")
	}
}

// TestRunWebAddrInUse: an HTTP_ADDR someone else listens on stops the
// worker before it takes a task.
func TestRunWebAddrInUse(t *testing.T) {
	t.Parallel()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	redisAddr := freeAddr(t)
	log := &logBuffer{}
	err = run(context.Background(), nil, env(map[string]string{
		"REDIS_EMBEDDED_ADDR": redisAddr, "HTTP_ADDR": taken, "LOG_FORMAT": "json",
	}), io.Discard, log)
	if err == nil {
		t.Fatal("run succeeded on an address in use")
	}
	for _, want := range []string{`HTTP_ADDR "` + taken + `"`, "address already in use", "or off for no web process"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	var ue usageError
	if errors.As(err, &ue) {
		t.Errorf("error is a usage error (exit 2), want exit 1: %v", err)
	}
	if e := log.withMsg("worker started"); len(e) != 0 {
		t.Errorf("the worker started: %v", e)
	}
	refuses(t, redisAddr) // the embedded Redis is gone
}

func TestBinaryRefusesExposedWebWithoutCredentials(t *testing.T) {
	t.Parallel()

	w := startWorker(t, map[string]string{"HTTP_ADDR": "0.0.0.0:0", "REDIS_CONNECTION_URL": "redis://127.0.0.1:1"})
	if code := w.wait(t, 30*time.Second); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	for _, want := range []string{
		`worker: web: refusing to listen beyond loopback without credentials: HTTP_ADDR "0.0.0.0:0" is not a loopback address`,
		"set HTTP_AUTH_USERNAME and HTTP_AUTH_PASSWORD",
	} {
		if !strings.Contains(w.log.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, w.log)
		}
	}
	if strings.Contains(w.log.String(), "unreachable") {
		t.Errorf("the worker tried Redis first:\n%s", w.log)
	}
}
