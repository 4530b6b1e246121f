package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// syncBuffer is a bytes.Buffer that is safe for concurrent use.
type syncBuffer = proctest.Buffer

// miniredisURL starts a miniredis for the test and returns its URL.
func miniredisURL(tb testing.TB) string {
	tb.Helper()
	return "redis://" + miniredis.RunT(tb).Addr()
}

// realRedisURL returns the URL of test database db, flushed. Each database
// this file uses (20 and 21) belongs to one test.
func realRedisURL(tb testing.TB, db int) string {
	tb.Helper()
	url := redistest.URL(tb, db)
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return url
}

// getenv returns a getenv backed by m, with JSON logs and a short shutdown
// timeout unless m sets them: the process's own environment never leaks
// into the tests.
func getenv(m map[string]string) func(string) string {
	e := map[string]string{"LOG_FORMAT": "json", "WORKER_SHUTDOWN_TIMEOUT": "2s"}
	maps.Copy(e, m)
	return func(k string) string { return e[k] }
}

// runningApp is an App started by startApp.
type runningApp struct {
	worker.Started
	base   string // http://host:port of the web process
	stderr *syncBuffer

	cancel context.CancelFunc
	done   chan int // Run's exit code
	once   sync.Once
	code   int
}

// startApp runs app on the Redis at url with its web process on a free
// loopback port, env as its environment and args after those flags, and
// waits until it runs. Cleanup stops it and checks that Run returned 0.
func startApp(tb testing.TB, app *worker.App, url string, env map[string]string, args ...string) *runningApp {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningApp{stderr: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	started := make(chan worker.Started, 1)
	go func() {
		args := append([]string{"--redis-url", url, "--http-addr", "127.0.0.1:0"}, args...)
		r.done <- app.Run(ctx, args, worker.Env{
			Getenv:  getenv(env),
			Stdout:  io.Discard,
			Stderr:  r.stderr,
			Started: func(s worker.Started) { started <- s },
		})
	}()
	tb.Cleanup(func() {
		if code := r.stop(tb); code != 0 {
			tb.Errorf("Run returned %d, want 0; log:\n%s", code, r.stderr)
		}
	})
	select {
	case r.Started = <-started:
	case code := <-r.done:
		r.once.Do(func() { r.code = code })
		tb.Fatalf("Run returned %d before the worker started; log:\n%s", code, r.stderr)
	case <-time.After(30 * time.Second):
		tb.Fatalf("the worker did not start within 30s; log:\n%s", r.stderr)
	}
	r.base = "http://" + r.HTTPAddr
	return r
}

// stop cancels Run's ctx and returns its exit code; calling it again
// returns the same code.
func (r *runningApp) stop(tb testing.TB) int {
	tb.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.code = <-r.done:
		case <-time.After(30 * time.Second):
			r.code = -1
			tb.Errorf("Run did not return 30s after its ctx ended; log:\n%s", r.stderr)
		}
	})
	return r.code
}

// runApp runs app with args until it returns, which a failing run does at
// once, and returns its exit code, stdout and stderr.
func runApp(tb testing.TB, app *worker.App, env map[string]string, args ...string) (int, string, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	code := app.Run(ctx, args, worker.Env{Getenv: getenv(env), Stdout: &stdout, Stderr: &stderr})
	if ctx.Err() != nil {
		tb.Fatalf("Run(%q) still ran after 30s; stderr:\n%s", args, stderr.String())
	}
	return code, stdout.String(), stderr.String()
}

// waitTask polls insp until the task is in state want and returns it. A
// task that is archived or retried instead fails the test at once.
func waitTask(tb testing.TB, insp *asynq.Inspector, queue, id string, want asynq.TaskState) *asynq.TaskInfo {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := insp.GetTaskInfo(queue, id)
		switch {
		case err != nil && !errors.Is(err, asynq.ErrTaskNotFound):
			tb.Fatalf("task %s/%s: %v", queue, id, err)
		case err != nil:
		case info.State == want:
			return info
		case want != asynq.TaskStateArchived && info.State == asynq.TaskStateArchived,
			want != asynq.TaskStateRetry && info.State == asynq.TaskStateRetry:
			tb.Fatalf("task %s/%s (%s) is %v, want %v; last error: %s", queue, id, info.Type, info.State, want, info.LastErr)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task %s/%s not %v within 15s", queue, id, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// response is what do read.
type response struct {
	status int
	body   string
}

// do sends a request to the app's web process; a nil auth sends no
// credentials, else basic auth with auth[0] and auth[1].
func (r *runningApp) do(tb testing.TB, method, path, body string, auth ...string) response {
	tb.Helper()
	req, err := http.NewRequest(method, r.base+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if len(auth) == 2 {
		req.SetBasicAuth(auth[0], auth[1])
	}
	client := &http.Client{Timeout: 10 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{res.StatusCode, string(b)}
}

// scrape reads /metrics and returns the samples of the named families (a
// histogram's _count and _sum included) as `name{labels}` → value, labels
// as Prometheus prints them: sorted by name.
func (r *runningApp) scrape(tb testing.TB, families ...string) map[string]float64 {
	tb.Helper()
	res := r.do(tb, http.MethodGet, "/metrics", "")
	if res.status != http.StatusOK {
		tb.Fatalf("GET /metrics: %d %s", res.status, res.body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(res.body, "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		series := line[:i]
		name, _, _ := strings.Cut(series, "{")
		if !slices.Contains(families, name) && !slices.Contains(families, strings.TrimSuffix(strings.TrimSuffix(name, "_count"), "_sum")) {
			continue
		}
		if strings.HasSuffix(name, "_bucket") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			tb.Fatalf("/metrics line %q: %v", line, err)
		}
		out[series] = v
	}
	return out
}

// logLines returns the app's JSON log lines with message msg.
func (r *runningApp) logLines(msg string) []map[string]any {
	return proctest.WithMsg(proctest.JSONLines(r.stderr.String()), msg)
}

// Payloads of the test's task types.
type (
	report struct {
		ID    int    `json:"id" help:"the report's id"`
		Title string `json:"title,omitempty"`
	}
	reportDone struct {
		ReportID int    `json:"report_id"`
		Key      string `json:"key"`
	}
	empty struct{}
)

// TestAppCustomTypes runs a program's own task types on miniredis and on
// Redis: a task enqueued with its typed handle runs with the process's
// cache, logger and enqueuer, and enqueues a follow-up task of another
// type that runs too.
func TestAppCustomTypes(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"miniredis", miniredisURL},
		{"redis", func(tb testing.TB) string { return realRedisURL(tb, 21) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			done := tasks.Define("test:report-done", "Says that a report is built.",
				func(ctx context.Context, deps tasks.Deps, p reportDone) ([]byte, error) {
					v, err := deps.Cache.Get(ctx, p.Key)
					if err != nil {
						return nil, fmt.Errorf("read %s: %w", p.Key, err)
					}
					return json.Marshal(map[string]any{"report_id": p.ReportID, "body": v})
				},
				asynq.Queue("low"), asynq.Retention(time.Hour))
			build := tasks.Define("test:report-build", "Builds a report.",
				func(ctx context.Context, deps tasks.Deps, p report) ([]byte, error) {
					if deps.Cache == nil || deps.Logger == nil || deps.Enqueuer == nil {
						return nil, fmt.Errorf("deps %+v: want cache, logger and enqueuer: %w", deps, asynq.SkipRetry)
					}
					deps.Logger.Info("building report")
					key := fmt.Sprintf("report:%d", p.ID)
					if err := deps.Cache.Set(ctx, key, "report "+p.Title, time.Hour); err != nil {
						return nil, err
					}
					info, err := done.Enqueue(ctx, deps.Enqueuer, reportDone{ReportID: p.ID, Key: key})
					if err != nil {
						return nil, err
					}
					return json.Marshal(map[string]string{"follow_up": info.ID})
				},
				asynq.Retention(time.Hour))

			app := worker.New("reports").Register(build, done)
			r := startApp(t, app, tt.url(t), nil)

			info, err := build.Enqueue(t.Context(), r.Client, report{ID: 7, Title: "Q3"})
			if err != nil {
				t.Fatal(err)
			}
			if info.Queue != "default" {
				t.Errorf("enqueued on %q, want the type's default queue", info.Queue)
			}
			built := waitTask(t, r.Inspector, info.Queue, info.ID, asynq.TaskStateCompleted)
			var got struct {
				FollowUp string `json:"follow_up"`
			}
			if err := json.Unmarshal(built.Result, &got); err != nil || got.FollowUp == "" {
				t.Fatalf("result %s (%v), want the follow-up's id", built.Result, err)
			}

			// The follow-up went to its type's queue and read what the
			// first handler cached.
			followed := waitTask(t, r.Inspector, "low", got.FollowUp, asynq.TaskStateCompleted)
			if followed.Type != done.Name() {
				t.Errorf("follow-up type = %q, want %q", followed.Type, done.Name())
			}
			if want := `{"body":"report Q3","report_id":7}`; string(followed.Result) != want {
				t.Errorf("follow-up result = %s, want %s", followed.Result, want)
			}
			if v, err := r.Manager.Get(t.Context(), "report:7"); err != nil || v != "report Q3" {
				t.Errorf("cache report:7 = %q, %v; want the handler's value", v, err)
			}
			if n := len(r.logLines("building report")); n != 1 {
				t.Errorf("%d \"building report\" log lines, want 1 (deps.Logger is the worker's)", n)
			}
		})
	}
}

// TestAppUse checks that App.Use middleware runs around the handler in
// the order given, and that a panicking middleware fails the task with
// outcome "panic" in the metrics.
func TestAppUse(t *testing.T) {
	t.Parallel()

	var (
		mu    sync.Mutex
		calls []string
	)
	record := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, s)
	}
	around := func(name string) asynq.MiddlewareFunc {
		return func(next asynq.Handler) asynq.Handler {
			return asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
				if _, ok := asynq.GetTaskID(ctx); !ok {
					return errors.New("no task id in ctx")
				}
				record(name + " before " + task.Type())
				err := next.ProcessTask(ctx, task)
				record(name + " after " + task.Type())
				return err
			})
		}
	}
	panics := func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
			if task.Type() == "test:mw-panic" {
				panic("middleware bug")
			}
			return next.ProcessTask(ctx, task)
		})
	}
	ok := tasks.Define("test:mw", "Runs.", func(context.Context, tasks.Deps, empty) ([]byte, error) {
		record("handler")
		return nil, nil
	}, asynq.Retention(time.Hour))
	never := tasks.Define("test:mw-panic", "Never runs: its middleware panics.", func(context.Context, tasks.Deps, empty) ([]byte, error) {
		record("panic handler")
		return nil, nil
	}, asynq.MaxRetry(0))

	app := worker.New("mw").Register(ok, never).Use(around("outer"), around("inner"), panics)
	r := startApp(t, app, miniredisURL(t), nil)

	info, err := ok.Enqueue(t.Context(), r.Client, empty{})
	if err != nil {
		t.Fatal(err)
	}
	waitTask(t, r.Inspector, info.Queue, info.ID, asynq.TaskStateCompleted)
	info, err = never.Enqueue(t.Context(), r.Client, empty{})
	if err != nil {
		t.Fatal(err)
	}
	archived := waitTask(t, r.Inspector, info.Queue, info.ID, asynq.TaskStateArchived)
	if !strings.Contains(archived.LastErr, "middleware bug") {
		t.Errorf("last error %q, want the panic's value", archived.LastErr)
	}

	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	want := []string{
		"outer before test:mw", "inner before test:mw", "handler", "inner after test:mw", "outer after test:mw",
		"outer before test:mw-panic", "inner before test:mw-panic", // the panic unwinds past their "after"
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}

	samples := r.scrape(t, "forgeq_tasks_processed_total", "forgeq_tasks_failed_total")
	for series, want := range map[string]float64{
		`forgeq_tasks_processed_total{queue="default",task_type="test:mw"}`:                       1,
		`forgeq_tasks_failed_total{outcome="panic",queue="default",task_type="test:mw"}`:          0,
		`forgeq_tasks_processed_total{queue="default",task_type="test:mw-panic"}`:                 1,
		`forgeq_tasks_failed_total{outcome="panic",queue="default",task_type="test:mw-panic"}`:    1,
		`forgeq_tasks_failed_total{outcome="archived",queue="default",task_type="test:mw-panic"}`: 0,
	} {
		if v, ok := samples[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
}

// routesApp returns an App with routes on the process's services: PUT and
// GET a report's text in the cache through the manager's async side, and
// POST to enqueue a task of build.
func routesApp(build *tasks.Type[report]) *worker.App {
	return worker.New("reports").Register(build).
		Handle("PUT /reports/{id}", func(s worker.Services) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				body, err := io.ReadAll(req.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				if _, err := s.Manager.SetAsync(req.Context(), "report:"+req.PathValue("id"), string(body), time.Hour).Wait(); err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			})
		}).
		Handle("GET /reports/{id}", func(s worker.Services) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				v, err := s.Manager.GetAsync(req.Context(), "report:"+req.PathValue("id")).Wait()
				switch {
				case errors.Is(err, cachemgr.ErrMiss):
					http.NotFound(w, req)
				case err != nil:
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
				default:
					io.WriteString(w, v)
				}
			})
		}).
		Handle("POST /reports/{id}/build", func(s worker.Services) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				id, err := strconv.Atoi(req.PathValue("id"))
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				info, err := build.Enqueue(req.Context(), s.Client, report{ID: id})
				if err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
				w.WriteHeader(http.StatusAccepted)
				io.WriteString(w, info.ID)
			})
		})
}

// TestAppHandle serves a program's own routes with the process's
// services, behind the access log, the metrics and, with credentials
// configured, authentication.
func TestAppHandle(t *testing.T) {
	t.Parallel()

	newBuild := func() *tasks.Type[report] {
		return tasks.Define("test:report-build", "Builds a report.",
			func(ctx context.Context, deps tasks.Deps, p report) ([]byte, error) { return []byte("built"), nil },
			asynq.Retention(time.Hour))
	}

	t.Run("services, log and metrics", func(t *testing.T) {
		t.Parallel()
		build := newBuild()
		r := startApp(t, routesApp(build), miniredisURL(t), nil)

		for _, tt := range []struct {
			method, path, body string
			wantStatus         int
			wantBody           string
		}{
			{http.MethodGet, "/reports/1", "", http.StatusNotFound, "404 page not found"}, // as a JSON error body
			{http.MethodPut, "/reports/1", "first report", http.StatusNoContent, ""},
			{http.MethodGet, "/reports/1", "", http.StatusOK, "first report"},
		} {
			if res := r.do(t, tt.method, tt.path, tt.body); res.status != tt.wantStatus || !strings.Contains(res.body, tt.wantBody) {
				t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.path, res.status, res.body, tt.wantStatus, tt.wantBody)
			}
		}
		// The route's handler enqueues with the process's client.
		res := r.do(t, http.MethodPost, "/reports/9/build", "")
		if res.status != http.StatusAccepted {
			t.Fatalf("POST /reports/9/build: %d %s", res.status, res.body)
		}
		if info := waitTask(t, r.Inspector, "default", res.body, asynq.TaskStateCompleted); string(info.Result) != "built" {
			t.Errorf("result %q, want built", info.Result)
		}

		got := r.scrape(t, "forgeq_http_requests_total")
		for series, want := range map[string]float64{
			`forgeq_http_requests_total{code="2xx",method="GET",route="GET /reports/{id}"}`:         1,
			`forgeq_http_requests_total{code="4xx",method="GET",route="GET /reports/{id}"}`:         1,
			`forgeq_http_requests_total{code="2xx",method="PUT",route="PUT /reports/{id}"}`:         1,
			`forgeq_http_requests_total{code="2xx",method="POST",route="POST /reports/{id}/build"}`: 1,
		} {
			if v := got[series]; v != want {
				t.Errorf("%s = %v, want %v; all: %v", series, v, want, got)
			}
		}
		var routes []string
		for _, l := range r.logLines("http request") {
			routes = append(routes, fmt.Sprint(l["method"], " ", l["route"], " ", l["status"]))
		}
		for _, want := range []string{"GET GET /reports/{id} 404", "PUT PUT /reports/{id} 204", "GET GET /reports/{id} 200", "POST POST /reports/{id}/build 202"} {
			if !slices.Contains(routes, want) {
				t.Errorf("access log has no %q; it has %q", want, routes)
			}
		}
	})

	t.Run("authentication", func(t *testing.T) {
		t.Parallel()
		const user, password = "admin", "correct horse battery staple"
		r := startApp(t, routesApp(newBuild()), miniredisURL(t), map[string]string{
			"HTTP_AUTH_USERNAME": user, "HTTP_AUTH_PASSWORD": password,
		})
		for _, tt := range []struct {
			name       string
			method     string
			auth       []string
			wantStatus int
		}{
			{"no credentials", http.MethodPut, nil, http.StatusUnauthorized},
			{"wrong password", http.MethodPut, []string{user, "guess"}, http.StatusUnauthorized},
			{"basic auth", http.MethodPut, []string{user, password}, http.StatusNoContent},
			{"no credentials", http.MethodGet, nil, http.StatusUnauthorized},
			{"basic auth", http.MethodGet, []string{user, password}, http.StatusOK},
		} {
			if res := r.do(t, tt.method, "/reports/2", "secret report", tt.auth...); res.status != tt.wantStatus {
				t.Errorf("%s %s: %d %s, want %d", tt.name, tt.method, res.status, res.body, tt.wantStatus)
			}
		}
	})

	t.Run("web process off", func(t *testing.T) {
		t.Parallel()
		called := false
		app := worker.New("reports").Register(newBuild()).Handle("GET /reports", func(worker.Services) http.Handler {
			called = true
			return http.NotFoundHandler()
		})
		r := startApp(t, app, miniredisURL(t), nil, "--http-addr", "off")
		if r.HTTPAddr != "" || called {
			t.Errorf("HTTPAddr %q, handler func called %v; want none with HTTP_ADDR off", r.HTTPAddr, called)
		}
		warned := r.logLines("HTTP_ADDR is off: the routes added with App.Handle are not served")
		if len(warned) != 1 || fmt.Sprint(warned[0]["routes"]) != "[GET /reports]" {
			t.Errorf("warnings %v, want one naming the route", warned)
		}
	})

	t.Run("bad routes", func(t *testing.T) {
		t.Parallel()
		ok := func(worker.Services) http.Handler { return http.NotFoundHandler() }
		for _, tt := range []struct {
			name         string
			givePatterns []string
			giveHandler  func(worker.Services) http.Handler
			wantErr      string
		}{
			{"built-in route", []string{"GET /health/live"}, ok, `"GET /health/live"`},
			{"built-in prefix", []string{"/monitoring/"}, ok, `"/monitoring/"`},
			{"twice", []string{"GET /reports", "GET /reports"}, ok, `"GET /reports"`},
			{"malformed", []string{"GET reports"}, ok, `"GET reports"`},
			{"no handler", []string{"GET /reports"}, func(worker.Services) http.Handler { return nil }, `"GET /reports"`},
			{"nil handler func", []string{"GET /reports"}, nil, `"GET /reports"`},
		} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				app := worker.New("reports").Register(newBuild())
				for _, p := range tt.givePatterns {
					app.Handle(p, tt.giveHandler)
				}
				code, _, stderr := runApp(t, app, nil, "--redis-url", miniredisURL(t), "--http-addr", "127.0.0.1:0")
				if code != 2 || !strings.Contains(stderr, tt.wantErr) {
					t.Errorf("Run = %d, stderr:\n%s\nwant 2 and a message naming %s", code, stderr, tt.wantErr)
				}
			})
		}
	})
}

// tick is the payload of the scheduled type.
type tick struct {
	N int `json:"n"`
}

// TestAppSchedule runs a periodic entry added with App.Schedule: its task
// is enqueued at each tick, with the entry's payload, and runs.
func TestAppSchedule(t *testing.T) {
	t.Parallel()

	got := make(chan string, 10)
	ticker := tasks.Define("test:tick", "Ticks.", func(ctx context.Context, _ tasks.Deps, p tick) ([]byte, error) {
		id, _ := asynq.GetTaskID(ctx)
		got <- fmt.Sprintf("n=%d id=%s", p.N, id)
		return nil, nil
	})
	app := worker.New("ticker").Register(ticker).
		Schedule(worker.Periodic{Name: "every-second", Spec: "@every 1s", Type: ticker.Name(), Payload: tick{N: 42}})
	startApp(t, app, miniredisURL(t), nil)

	select {
	case s := <-got:
		if !strings.HasPrefix(s, "n=42 id=sched:every-second:") {
			t.Errorf("scheduled task ran with %q, want n=42 and the entry's task id", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no scheduled task ran within 10s")
	}
}

// TestAppScheduleErrors checks that Run refuses bad entries with exit code
// 2, naming the entry, before it touches Redis.
func TestAppScheduleErrors(t *testing.T) {
	t.Parallel()

	ticker := tasks.Define("test:tick", "Ticks.", func(context.Context, tasks.Deps, tick) ([]byte, error) { return nil, nil })
	valid := worker.Periodic{Name: "hourly", Spec: "@every 1h", Type: ticker.Name(), Payload: tick{N: 1}}
	with := func(f func(*worker.Periodic)) worker.Periodic {
		p := valid
		f(&p)
		return p
	}
	tests := []struct {
		name        string
		givePeriod  []worker.Periodic
		giveEnv     map[string]string
		wantInError []string
	}{
		{
			name:        "unknown type",
			givePeriod:  []worker.Periodic{with(func(p *worker.Periodic) { p.Type = "no:such" })},
			wantInError: []string{`"hourly"`, `"no:such"`},
		},
		{
			name:        "payload of the wrong type",
			givePeriod:  []worker.Periodic{with(func(p *worker.Periodic) { p.Payload = map[string]any{"n": "one"} })},
			wantInError: []string{`"hourly"`, `"n"`},
		},
		{
			name:        "payload with an unknown field",
			givePeriod:  []worker.Periodic{with(func(p *worker.Periodic) { p.Payload = `{"m": 1}` })},
			wantInError: []string{`"hourly"`, `"m"`},
		},
		{
			name:        "payload that is not JSON",
			givePeriod:  []worker.Periodic{with(func(p *worker.Periodic) { p.Payload = func() {} })},
			wantInError: []string{`"hourly"`, "payload"},
		},
		{
			name:        "bad name",
			givePeriod:  []worker.Periodic{with(func(p *worker.Periodic) { p.Name = "every hour" })},
			wantInError: []string{`"every hour"`},
		},
		{
			name:        "bad spec",
			givePeriod:  []worker.Periodic{with(func(p *worker.Periodic) { p.Spec = "@every soon" })},
			wantInError: []string{`"hourly"`, "@every soon"},
		},
		{
			name:        "name used twice",
			givePeriod:  []worker.Periodic{valid, valid},
			wantInError: []string{`"hourly"`, "also used by"},
		},
		{
			name:        "name also in WORKER_SCHEDULE",
			givePeriod:  []worker.Periodic{valid},
			giveEnv:     map[string]string{"WORKER_SCHEDULE": `[{"name":"hourly","spec":"@every 2h","type":"test:tick","payload":{"n":2}}]`},
			wantInError: []string{`"hourly"`, "also used by", "WORKER_SCHEDULE"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := worker.New("ticker").Register(ticker)
			for _, p := range tt.givePeriod {
				app.Schedule(p)
			}
			// No Redis answers at this URL: the schedule is checked first.
			code, _, stderr := runApp(t, app, tt.giveEnv, "--redis-url", "redis://127.0.0.1:1", "--http-addr", "off")
			if code != 2 {
				t.Errorf("Run = %d, want 2; stderr:\n%s", code, stderr)
			}
			for _, want := range tt.wantInError {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not name %s:\n%s", want, stderr)
				}
			}
		})
	}
}

// TestAppRegisterTwice checks that a type name registered twice stops both
// the worker and the enqueue command with exit code 2, naming it.
func TestAppRegisterTwice(t *testing.T) {
	t.Parallel()

	handle := func(context.Context, tasks.Deps, empty) ([]byte, error) { return nil, nil }
	app := worker.New("twice").
		Register(tasks.Define("test:once", "Fine.", handle)).
		Register(tasks.Define("test:twice", "First.", handle), tasks.Define("test:twice", "Second.", handle))
	for _, args := range [][]string{
		{"--redis-url", "redis://127.0.0.1:1", "--http-addr", "off"},
		{"enqueue", "--list"},
	} {
		code, _, stderr := runApp(t, app, nil, args...)
		if code != 2 || !strings.Contains(stderr, `"test:twice"`) {
			t.Errorf("Run(%q) = %d, stderr:\n%s\nwant 2 and a message naming \"test:twice\"", args, code, stderr)
		}
	}
}

// TestAppEnqueue runs the enqueue command of a program: it lists the
// program's types and enqueues them, checking their payloads.
func TestAppEnqueue(t *testing.T) {
	t.Parallel()

	build := tasks.Define("test:report-build", "Builds a report.",
		func(context.Context, tasks.Deps, report) ([]byte, error) { return nil, nil }, asynq.Queue("low"))
	app := worker.New("reports").Register(build)
	mr := miniredis.RunT(t)
	url := "redis://" + mr.Addr()

	t.Run("list", func(t *testing.T) {
		code, stdout, stderr := runApp(t, app, nil, "enqueue", "--list", "--redis-url", url)
		if code != 0 {
			t.Fatalf("enqueue --list = %d; stderr:\n%s", code, stderr)
		}
		for _, want := range []string{"test:report-build (queue low)", "Builds a report.", "id", "integer", "required", "the report's id", "title"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("enqueue --list output has no %q:\n%s", want, stdout)
			}
		}
	})

	t.Run("payloads", func(t *testing.T) {
		tests := []struct {
			name        string
			givePayload string
			wantCode    int
			wantInError string // on stderr; "" for success
		}{
			{"valid", `{"id": 3, "title": "Q3"}`, 0, ""},
			{"wrong type", `{"id": "three"}`, 2, `"id"`},
			{"missing required field", `{"title": "Q3"}`, 2, `"id"`},
			{"unknown field", `{"id": 3, "ttle": "Q3"}`, 2, `"ttle"`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, _, stderr := runApp(t, app, nil, "enqueue", build.Name(), tt.givePayload, "--redis-url", url)
				if code != tt.wantCode || !strings.Contains(stderr, tt.wantInError) {
					t.Errorf("enqueue %s = %d, stderr:\n%s\nwant %d and a message naming %s", tt.givePayload, code, stderr, tt.wantCode, tt.wantInError)
				}
			})
		}
		// Only the valid task was enqueued, on its type's queue.
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rdb.Close() })
		pending, err := asynq.NewInspectorFromRedisClient(rdb).ListPendingTasks("low")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range pending {
			got = append(got, p.Type+" "+string(p.Payload))
		}
		if diff := cmp.Diff([]string{`test:report-build {"id":3,"title":"Q3"}`}, got); diff != "" {
			t.Errorf("pending tasks on low (-want +got):\n%s", diff)
		}
	})
}

// TestAppHelp checks that --help names the program and its types, and the
// enqueue command's help names the program too.
func TestAppHelp(t *testing.T) {
	t.Parallel()

	handle := func(context.Context, tasks.Deps, empty) ([]byte, error) { return nil, nil }
	app := worker.New("reports").Register(tasks.Define("test:b", "B.", handle), tasks.Define("test:a", "A.", handle))
	for _, tt := range []struct {
		giveArgs []string
		wantOut  []string
	}{
		{[]string{"--help"}, []string{"Usage: reports [flags]", "reports enqueue [flags] TYPE", "(test:a, test:b)", "--redis-url"}},
		{[]string{"worker", "--help"}, []string{"Usage: reports [flags]"}},
		{[]string{"enqueue", "--help"}, []string{"reports enqueue"}},
	} {
		code, stdout, stderr := runApp(t, app, nil, tt.giveArgs...)
		if code != 0 {
			t.Errorf("Run(%q) = %d; stderr:\n%s", tt.giveArgs, code, stderr)
		}
		for _, want := range tt.wantOut {
			if !strings.Contains(stdout, want) {
				t.Errorf("Run(%q) output has no %q:\n%s", tt.giveArgs, want, stdout)
			}
		}
	}
}

// TestAppMetricsFromStart scrapes a worker on Redis before it has run any
// task: the task series of its type on each served queue, and the queue
// series of each served queue, which Redis does not know yet, are there
// with zero values.
func TestAppMetricsFromStart(t *testing.T) {
	t.Parallel()

	build := tasks.Define("test:report-build", "Builds a report.",
		func(context.Context, tasks.Deps, report) ([]byte, error) { return nil, nil })
	r := startApp(t, worker.New("reports").Register(build), realRedisURL(t, 20),
		map[string]string{"WORKER_QUEUES": "reports=2,default=1"})

	want := map[string]float64{`forgeq_tasks_in_progress{task_type="test:report-build"}`: 0}
	for _, q := range []string{"default", "reports"} {
		labels := fmt.Sprintf(`{queue=%q,task_type="test:report-build"}`, q)
		want["forgeq_tasks_processed_total"+labels] = 0
		want["forgeq_task_duration_seconds_count"+labels] = 0
		want["forgeq_task_duration_seconds_sum"+labels] = 0
		for _, outcome := range []string{"retry", "archived", "skip_retry", "canceled", "cancelled", "panic"} {
			want[fmt.Sprintf(`forgeq_tasks_failed_total{outcome=%q,queue=%q,task_type="test:report-build"}`, outcome, q)] = 0
		}
		for _, reason := range tasks.LimitReasons {
			want[fmt.Sprintf(`forgeq_tasks_postponed_total{queue=%q,reason=%q,task_type="test:report-build"}`, q, reason)] = 0
		}
		for _, state := range []string{"pending", "active", "scheduled", "retry", "archived", "completed", "aggregating"} {
			want[fmt.Sprintf(`forgeq_queue_tasks{queue=%q,state=%q}`, q, state)] = 0
		}
		for _, name := range []string{"forgeq_queue_latency_seconds", "forgeq_queue_processed_total", "asynq_queue_size", "asynq_tasks_processed_total"} {
			want[fmt.Sprintf("%s{queue=%q}", name, q)] = 0
		}
	}
	got := r.scrape(t, "forgeq_tasks_processed_total", "forgeq_tasks_failed_total", "forgeq_tasks_postponed_total", "forgeq_tasks_in_progress",
		"forgeq_task_duration_seconds", "forgeq_queue_tasks", "forgeq_queue_latency_seconds",
		"forgeq_queue_processed_total", "asynq_queue_size", "asynq_tasks_processed_total")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("series before the first task (-want +got):\n%s", diff)
	}
}

// TestAppUseNil checks that a nil middleware stops Run with exit code 2
// instead of failing every task.
func TestAppUseNil(t *testing.T) {
	t.Parallel()

	handle := func(context.Context, tasks.Deps, empty) ([]byte, error) { return nil, nil }
	app := worker.New("mw").Register(tasks.Define("test:mw", "Runs.", handle)).Use(nil)
	code, _, stderr := runApp(t, app, nil, "--redis-url", "redis://127.0.0.1:1", "--http-addr", "off")
	if code != 2 || !strings.Contains(stderr, "middleware 1 is nil") {
		t.Errorf("Run = %d, stderr:\n%s\nwant 2 and a message about the nil middleware", code, stderr)
	}
}

// TestAppVersion checks --version for the worker and its enqueue command:
// the program's name, the module's version and the Go version.
func TestAppVersion(t *testing.T) {
	t.Parallel()

	app := worker.New("reports").Register(tasks.Builtin()...)
	for _, tt := range []struct {
		giveArgs  []string
		wantFirst string
	}{
		{[]string{"--version"}, "reports "},
		{[]string{"worker", "--version"}, "reports "},
		{[]string{"--log-level", "debug", "--version"}, "reports "},
		{[]string{"enqueue", "--version"}, "reports enqueue "},
	} {
		code, stdout, stderr := runApp(t, app, nil, tt.giveArgs...)
		if code != 0 {
			t.Errorf("Run(%q) = %d; stderr:\n%s", tt.giveArgs, code, stderr)
		}
		if !strings.HasPrefix(stdout, tt.wantFirst) {
			t.Errorf("Run(%q) output does not start with %q:\n%s", tt.giveArgs, tt.wantFirst, stdout)
		}
		if !strings.Contains(stdout, "go:       "+runtime.Version()) {
			t.Errorf("Run(%q) output lacks the Go version:\n%s", tt.giveArgs, stdout)
		}
	}
}

// TestBinaryVersion runs --version on both binaries: the module and, when
// the build recorded them, the commit it was built from.
func TestBinaryVersion(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		bin       string
		giveArgs  []string
		wantFirst string
	}{
		{proctest.BuildWorker(t), []string{"--version"}, "worker "},
		{proctest.BuildWorker(t), []string{"enqueue", "--version"}, "worker enqueue "},
		{proctest.BuildEnqueue(t), []string{"--version"}, "enqueue "},
	} {
		p := proctest.Start(t, tt.bin, nil, tt.giveArgs...)
		code, err := p.Wait(30 * time.Second)
		if err != nil || code != 0 {
			t.Fatalf("%s %q: exit %d, %v:\n%s", tt.bin, tt.giveArgs, code, err, p.Logs())
		}
		out := p.Stdout()
		for _, want := range []string{"module:   github.com/forgeq/forgeq", "go:       " + runtime.Version()} {
			if !strings.Contains(out, want) {
				t.Errorf("%q: output lacks %q:\n%s", tt.giveArgs, want, out)
			}
		}
		if !strings.HasPrefix(out, tt.wantFirst) {
			t.Errorf("%q: output does not start with %q:\n%s", tt.giveArgs, tt.wantFirst, out)
		}
	}
}

// TestAppNoTerminalEscapes: the worker's errors about its flags and
// settings never write the control characters of what was given raw.
func TestAppNoTerminalEscapes(t *testing.T) {
	t.Parallel()

	const evil = "\x1b]0;pwned\x07"
	app := worker.New("reports").Register(tasks.Builtin()...)
	for _, tt := range []struct {
		name     string
		giveArgs []string
		giveEnv  map[string]string
	}{
		{"unknown flag", []string{"--x" + evil}, nil},
		{"argument", []string{evil}, nil},
		{"flag value", []string{"--worker-concurrency", evil}, nil},
		{"setting", nil, map[string]string{"WORKER_QUEUES": "q=" + evil, "HTTP_ADDR": evil}},
		{"config file", []string{"--config", "/nonexistent/" + evil + ".yaml"}, nil},
		{"schedule", nil, map[string]string{"WORKER_SCHEDULE": `[{"name": "n", "spec": "@daily", "type": "x` + evil + `"}]`}},
		{"redis URL", []string{"--redis-url", "redis:/" + evil}, nil},
		{"enqueue", []string{"enqueue", "--x" + evil}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runApp(t, app, tt.giveEnv, tt.giveArgs...)
			if code != 2 {
				t.Errorf("Run = %d, want 2; stderr:\n%s", code, stderr)
			}
			if strings.ContainsAny(stdout+stderr, "\x1b\x07") {
				t.Errorf("raw ESC or BEL in the output: %q %q", stdout, stderr)
			}
		})
	}
}
