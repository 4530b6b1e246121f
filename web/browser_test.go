package web_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// chromiumPath is where Debian's chromium package installs the browser;
// .ci/run installs it when it is missing.
const chromiumPath = "/usr/bin/chromium"

// artifactsDirEnv names the directory that browser tests save their
// screenshots to; .ci/run sets it. Unset: the test's temp dir.
const artifactsDirEnv = "FORGEQ_ARTIFACTS_DIR"

// Bounds of the browser test: the whole browser session, and each step.
const (
	browserTimeout = 3 * time.Minute
	stepTimeout    = 30 * time.Second
)

// The queues the browser test fills, and how many pending tasks each gets.
var browserQueues = []struct {
	name    string
	pending int
}{
	{"browser-critical", 3},
	{"browser-reports", 2},
	{"browser-bulk", 5},
}

// TestBrowserDashboard drives a real Chromium through the login flow to
// the asynqmon dashboard, over plain HTTP to 127.0.0.1 with the worker's
// default Secure session cookie, which the browser must keep (Secure,
// HttpOnly) and send back; it checks that the dashboard shows the queues
// the test created, saving a screenshot as an artifact; it submits
// workflows from the logged-in page and follows them on the /workflows
// pages, which a worker on the same Redis runs to success, and cancels
// one with its page's button; then it checks that a wrong password shows
// an error and sets no session cookie. It runs on the test Redis, since
// the dashboard goes through asynq's own scripts.
//
//	REDIS_TEST_URL=redis://127.0.0.1:16379 FORGEQ_ARTIFACTS_DIR=/tmp/shots go test ./web -run BrowserDashboard -v
//
// It is not parallel: it flushes the dashboard's database, which
// TestIntegrationDashboard (parallel) uses too.
func TestBrowserDashboard(t *testing.T) {
	execPath := chromium(t)
	rdb := realRedis(t, dashboardDB)
	enqueueBrowserTasks(t, rdb)
	base := startServer(t, rdb, func(o *web.Options) {
		o.AuthUsername, o.AuthPassword = testUser, testPass
		// As the worker sets it by default (HTTP_COOKIE_SECURE=true):
		// browsers keep a Secure cookie from http://127.0.0.1, which they
		// treat as a secure context.
		o.CookieSecure = true
	})
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("base URL %s, want plain HTTP on 127.0.0.1", base)
	}
	tab := newBrowser(t, execPath)

	loggedIn := t.Run("login", func(t *testing.T) {
		// (a) The dashboard sends a browser without a session to the login page.
		resp := runStep(t, tab, chromedp.NavigateResponse(base+"/monitoring/"))
		if want := base + "/login?next=" + url.QueryEscape("/monitoring/"); resp.URL != want || resp.Status != 200 {
			t.Fatalf("GET /monitoring/ without a session ended at %s (status %d), want %s (200)", resp.URL, resp.Status, want)
		}
		doStep(t, tab,
			chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), testUser),
			chromedp.SendKeys(chromedp.ID("password"), testPass),
		)
		resp = runStep(t, tab, responseOf(chromedp.Click(chromedp.CSS(`button[type="submit"]`))))
		if want := base + "/monitoring/"; resp.URL != want || resp.Status != 200 {
			t.Fatalf("login ended at %s (status %d), want %s (200)", resp.URL, resp.Status, want)
		}
		c := sessionCookie(t, tab, base)
		if c == nil {
			t.Fatalf("no %s cookie after logging in", web.SessionCookie)
		}
		if !c.HTTPOnly || !c.Secure {
			t.Errorf("%s cookie the browser keeps: HttpOnly %v, Secure %v; want both", web.SessionCookie, c.HTTPOnly, c.Secure)
		}
		// The browser sends it back over plain HTTP to 127.0.0.1: the
		// dashboard's own API answers.
		status := runStep(t, tab, chromedp.Evaluate[int](`fetch("/monitoring/api/queues").then((r) => r.status)`,
			chromedp.EvalAwaitPromise))
		if status != 200 {
			t.Errorf("the dashboard's API from the logged-in page: status %d, want 200", status)
		}
	})
	if !loggedIn {
		return
	}

	t.Run("queues", func(t *testing.T) {
		// (b) asynqmon is a single-page app: its queue table fills in once
		// its API calls return.
		names := make([]string, len(browserQueues))
		for i, q := range browserQueues {
			names[i] = q.name
		}
		ctx, cancel := context.WithTimeout(tab, stepTimeout)
		defer cancel()
		_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](
			`(names) => !!document.body && names.every((n) => document.body.innerText.includes(n))`,
			chromedp.WithPollingArgs(names),
			chromedp.WithPollingInterval(100*time.Millisecond),
			chromedp.WithPollingTimeout(stepTimeout),
		))
		if err != nil {
			text, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			if shot, err := chromedp.Run(tab, chromedp.CaptureScreenshot()); err == nil {
				t.Logf("screenshot: %s", saveArtifact(t, "browser-dashboard-failed.png", shot))
			}
			t.Fatalf("the dashboard did not show the queues %v: %v; page text:\n%s", names, err, text)
		}
		// Each queue's row in the queue table (Queue, State, Size, ...)
		// gives its size: its pending tasks, plus the scheduled one.
		rows := runStep(t, tab, chromedp.Evaluate[map[string][]string](`Object.fromEntries(
			[...document.querySelectorAll("tbody tr")].map((tr) => [...tr.cells].map((td) => td.innerText.trim()))
				.filter((cells) => cells.length > 2).map((cells) => [cells[0], cells]))`))
		for i, q := range browserQueues {
			want := q.pending
			if i == 0 {
				want++ // the scheduled task
			}
			if cells := rows[q.name]; len(cells) < 3 || cells[2] != strconv.Itoa(want) {
				t.Errorf("queue table row of %s = %q, want size %d in its third cell", q.name, cells, want)
			}
		}

		// (c) A full-page screenshot, kept as an artifact, once the queue
		// size chart has drawn its bars (unchanged over three looks): they
		// grow in an animation that starts again whenever the viewport
		// changes size.
		fitViewport(t, tab)
		runStep(t, tab, chromedp.PollFunction[bool](`() => {
			const bars = [...document.querySelectorAll(".recharts-bar-rectangle path")]
				.map((p) => p.getBoundingClientRect().height.toFixed(1)).join(" ");
			window.forgeqStill = bars !== "" && bars === window.forgeqBars ? (window.forgeqStill || 0) + 1 : 0;
			window.forgeqBars = bars;
			return window.forgeqStill >= 2;
		}`, chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout)))
		shot := runStep(t, tab, chromedp.CaptureScreenshot())
		path := saveArtifact(t, "browser-dashboard.png", shot)
		t.Logf("dashboard screenshot: %s", path)
		checkScreenshot(t, shot)
	})

	t.Run("workflows", func(t *testing.T) {
		// (d) A worker on the same Redis runs the workflows the logged-in
		// browser submits through the API (same origin, with its session
		// cookie); the /workflows pages follow them.
		startWorkflowWorker(t, redistest.URL(t, dashboardDB))
		got := submitFromPage(t, tab, base, addThenGroup)

		doStep(t, tab, chromedp.Navigate(base+"/workflows"))
		link := runStep(t, tab, chromedp.Evaluate[string](
			`(document.querySelector('#workflows tr[data-id="`+got.ID+`"] a') || {}).pathname || ""`))
		if link != "/workflows/"+got.ID {
			text, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("/workflows does not link workflow %s (link %q); page text:\n%s", got.ID, link, text)
		}
		resp := runStep(t, tab, responseOf(chromedp.Click(chromedp.CSS(`#workflows tr[data-id="`+got.ID+`"] a`))))
		if want := base + "/workflows/" + got.ID; resp.URL != want || resp.Status != 200 {
			t.Fatalf("the list's link went to %s (status %d), want %s (200)", resp.URL, resp.Status, want)
		}
		// The page reloads itself until the workflow has finished.
		waitPage(t, tab, `document.getElementById("status").textContent`, "succeeded")
		steps := runStep(t, tab, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll("#steps tbody tr")].map((tr) => tr.dataset.path + " " + tr.cells[3].innerText.trim())`))
		want := []string{"0 succeeded", "1.m0 succeeded", "1.m1 succeeded", "1.cb succeeded"}
		if strings.Join(steps, ", ") != strings.Join(want, ", ") {
			t.Errorf("steps on the page: %q, want %q", steps, want)
		}
		bar := runStep(t, tab, chromedp.Evaluate[string](
			`(({value, max}) => value + "/" + max)(document.getElementById("progress"))`))
		if bar != "4/4" {
			t.Errorf("progress bar %s, want 4/4", bar)
		}
		if n := runStep(t, tab, chromedp.Evaluate[int](`document.querySelectorAll("#cancel, meta[http-equiv=refresh]").length`)); n != 0 {
			t.Errorf("the page of a finished workflow has %d Cancel buttons or refreshes, want none", n)
		}
		fitViewport(t, tab)
		shot := runStep(t, tab, chromedp.CaptureScreenshot())
		t.Logf("workflow screenshot: %s", saveArtifact(t, "browser-workflow.png", shot))

		// A workflow whose first step waits on a queue no worker serves,
		// cancelled with its page's button (a same-origin form post).
		held := submitFromPage(t, tab, base, `{"name":"held","workflow":{"chain":[`+
			`{"type":"wfe:add","payload":{"n":1},"queue":"browser-held"},{"type":"wfe:add","payload":{"n":2}}]}}`)
		doStep(t, tab, chromedp.Navigate(base+"/workflows/"+held.ID), chromedp.WaitVisible(chromedp.ID("cancel")))
		resp = runStep(t, tab, responseOf(chromedp.Click(chromedp.ID("cancel"))))
		if want := base + "/workflows/" + held.ID; resp.URL != want || resp.Status != 200 {
			t.Fatalf("Cancel ended at %s (status %d), want %s (200)", resp.URL, resp.Status, want)
		}
		waitPage(t, tab, `document.getElementById("status").textContent`, "cancelled")
		steps = runStep(t, tab, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll("#steps tbody tr")].map((tr) => tr.dataset.path + " " + tr.dataset.status)`))
		if want := []string{"0 cancelled", "1 waiting"}; strings.Join(steps, ", ") != strings.Join(want, ", ") {
			t.Errorf("steps of the cancelled workflow: %q, want %q", steps, want)
		}
		if msg := runStep(t, tab, chromedp.Text(chromedp.ID("error"))); msg != "cancelled over HTTP by "+testUser {
			t.Errorf("the cancelled workflow's error: %q, want who cancelled it", msg)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		// (e) In a browser context of its own, so with no cookies yet. Its
		// first Run opens its tab, which lives as long as that Run's
		// context: no step timeout there (the browser's deadline bounds it).
		ctx, cancel := chromedp.NewContext(tab, chromedp.WithNewBrowserContext())
		defer cancel()
		if err := chromedp.Do(ctx); err != nil {
			t.Fatalf("open a tab in a new browser context: %v", err)
		}
		doStep(t, ctx,
			chromedp.Navigate(base+"/login"),
			chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), testUser),
			chromedp.SendKeys(chromedp.ID("password"), testPass+" but wrong"),
		)
		resp := runStep(t, ctx, responseOf(chromedp.Click(chromedp.CSS(`button[type="submit"]`))))
		if want := base + "/login"; resp.URL != want || resp.Status != 401 {
			t.Errorf("wrong password ended at %s (status %d), want %s (401)", resp.URL, resp.Status, want)
		}
		msg := runStep(t, ctx, chromedp.Text(chromedp.CSS(`.error[role="alert"]`)))
		if !strings.Contains(msg, "wrong username or password") {
			t.Errorf("login page error = %q, want it to say wrong username or password", msg)
		}
		if c := sessionCookie(t, ctx, base); c != nil {
			t.Errorf("wrong password set a %s cookie", web.SessionCookie)
		}
		fitViewport(t, ctx)
		path := saveArtifact(t, "browser-login-wrong-password.png", runStep(t, ctx, chromedp.CaptureScreenshot()))
		t.Logf("wrong-password screenshot: %s", path)
	})
}

// submitFromPage submits the workflow doc (its JSON form) with fetch from
// a page of the server at base in ctx's tab, as a script of the server's
// own origin would, and returns the 202 body. The page is /health/live:
// the HTML pages' Content-Security-Policy allows no script.
func submitFromPage(tb testing.TB, ctx context.Context, base, doc string) submitted {
	tb.Helper()
	doStep(tb, ctx, chromedp.Navigate(base+"/health/live"))
	type answer struct {
		Status int       `json:"status"`
		Body   submitted `json:"body"`
		Text   string    `json:"text"`
	}
	got := runStep(tb, ctx, chromedp.Evaluate[answer](`fetch("/api/workflows", {method: "POST",
		headers: {"Content-Type": "application/json"}, body: `+strconv.Quote(doc)+`})
		.then(async (r) => { const text = await r.text(); return {status: r.status, text, body: r.ok ? JSON.parse(text) : {}}; })`,
		chromedp.EvalAwaitPromise))
	if got.Status != 202 || got.Body.ID == "" {
		tb.Fatalf("POST /api/workflows from the page: status %d: %s", got.Status, got.Text)
	}
	return got.Body
}

// waitPage evaluates js, an expression of a string, on the page of ctx's
// tab until it is want, across the page's reloads.
func waitPage(tb testing.TB, ctx context.Context, js, want string) {
	tb.Helper()
	deadline := time.Now().Add(stepTimeout)
	var (
		got string
		err error
	)
	for time.Now().Before(deadline) {
		// A reload in the middle of an evaluation fails it: try again.
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err = chromedp.Run(tctx, chromedp.Evaluate[string](js))
		cancel()
		if err == nil && got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	tb.Fatalf("%s = %q (%v), want %q; page text:\n%s", js, got, err, want, text)
}

// chromium returns the path of Debian's chromium. When it is missing, it
// skips the test, or fails it under CI, where .ci/run installs it.
func chromium(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath(chromiumPath)
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s: %v: .ci/run must install Debian's chromium under CI", chromiumPath, err)
	}
	tb.Skipf("%s not found (apt-get install chromium to run): %v", chromiumPath, err)
	return ""
}

// enqueueBrowserTasks fills the queues of browserQueues with pending
// data:process tasks, and puts one scheduled task on the first. No worker
// runs, so they stay where they are.
func enqueueBrowserTasks(tb testing.TB, rdb redis.UniversalClient) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	// A client on a shared connection must not be closed: the connection
	// belongs to rdb.
	client := asynq.NewClientFromRedisClient(rdb)
	enqueue := func(queue, key string, opts ...asynq.Option) {
		tb.Helper()
		task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: key, Work: 1}, append(opts, asynq.Queue(queue))...)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := client.EnqueueContext(ctx, task); err != nil {
			tb.Fatalf("enqueue on %s: %v", queue, err)
		}
	}
	for _, q := range browserQueues {
		for i := range q.pending {
			enqueue(q.name, q.name+":"+string(rune('a'+i)))
		}
	}
	enqueue(browserQueues[0].name, "later", asynq.ProcessIn(time.Hour))
}

// startServer runs a web.Server with the options that the mods make on a
// new manager over rdb, listening on a free loopback port, until the test
// ends; it returns the server's base URL.
func startServer(tb testing.TB, rdb redis.UniversalClient, mods ...func(*web.Options)) string {
	tb.Helper()
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	o := web.Options{Addr: "127.0.0.1:0", Manager: m, Logger: zaptest.NewLogger(tb)}
	for _, mod := range mods {
		mod(&o)
	}
	return runWeb(tb, o)
}

// runWeb runs a web.Server with o (Addr a free port) with Run, as
// cmd/worker does, until the test ends, and returns its base URL.
func runWeb(tb testing.TB, o web.Options) string {
	tb.Helper()
	srv, err := web.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Listen(ctx); err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("web server: %v", err)
		}
	})
	return "http://" + srv.Addr()
}

// newBrowser starts a headless Chromium at execPath with a new profile,
// with the flags this machine needs (no sandbox as root, no GPU, and no
// network beyond loopback: no background connections, updates or sync),
// and returns the context of its first tab. The browser lives until the
// test ends, browserTimeout at most.
func newBrowser(tb testing.TB, execPath string) context.Context {
	tb.Helper()
	profile := tb.TempDir() // removed after the browser has exited (cleanups run last-in first-out)
	var output browserOutput
	deadline, cancelDeadline := context.WithTimeout(context.Background(), browserTimeout)
	alloc, cancelAlloc := chromedp.NewExecAllocator(deadline,
		chromedp.ExecPath(execPath),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(viewportWidth, viewportHeight),
		chromedp.CombinedOutput(&output),
	)
	tab, cancelTab := chromedp.NewContext(alloc)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(tab, 10*time.Second)
		defer cancel()
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			tb.Logf("close browser: %v", err)
		}
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		cancelDeadline()
		if tb.Failed() {
			tb.Logf("browser output:\n%s", output.String())
		}
	})
	// The first Run starts the browser and lives as long as it: no step
	// timeout here, only the deadline of the whole session.
	if err := chromedp.Do(tab); err != nil {
		tb.Fatalf("start %s: %v\nbrowser output:\n%s", execPath, err, output.String())
	}
	return tab
}

// browserOutput collects what the browser prints; its copying goroutine
// and the test use it at once.
type browserOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *browserOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *browserOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// The size of the browser's viewport; fitViewport makes it taller when the
// page is.
const viewportWidth, viewportHeight = 1440, 900

// fitViewport makes the viewport of ctx's tab as tall as its page, so that
// a screenshot of the viewport (chromedp.CaptureScreenshot) shows the
// whole page. chromedp.FullScreenshot would do that by resizing the
// viewport for the capture, which restarts the dashboard's chart
// animations just before the picture is taken.
func fitViewport(tb testing.TB, ctx context.Context) {
	tb.Helper()
	h := runStep(tb, ctx, chromedp.Evaluate[int64](
		`Math.ceil(Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0))`))
	doStep(tb, ctx, chromedp.EmulateViewport(viewportWidth, max(h, viewportHeight)))
}

// runStep runs a on the tab of ctx within stepTimeout and fails the test
// on an error.
func runStep[T any](tb testing.TB, ctx context.Context, a chromedp.Action[T]) T {
	tb.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// doStep is runStep for steps without a value, run in order.
func doStep(tb testing.TB, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	runStep(tb, ctx, chromedp.Steps(steps...))
}

// responseOf runs the steps, waits for the page they load and returns the
// response of its document (after redirects).
func responseOf(steps ...chromedp.Action[chromedp.Void]) chromedp.Action[*network.Response] {
	return func(ctx context.Context, _ *chromedp.Target) (*network.Response, error) {
		return chromedp.RunResponse(ctx, steps...)
	}
}

// sessionCookie returns the browser's session cookie for base, or nil.
// The cookie is HttpOnly, so the page's script cannot see it: ask the
// browser.
func sessionCookie(tb testing.TB, ctx context.Context, base string) *network.Cookie {
	tb.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	res, err := chromedp.Call(sctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil {
		tb.Fatalf("get cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == web.SessionCookie {
			return c
		}
	}
	return nil
}

// saveArtifact writes data to name in $FORGEQ_ARTIFACTS_DIR (created if
// needed), or in the test's temp dir when that is unset, and returns the
// file's path.
func saveArtifact(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	dir := os.Getenv(artifactsDirEnv)
	if dir == "" {
		dir = tb.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("%s: %v", artifactsDirEnv, err)
	}
	path, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// checkScreenshot checks that shot is a PNG of a real page: at least
// 800×600 pixels, and not one flat colour (a blank or crashed page).
func checkScreenshot(tb testing.TB, shot []byte) {
	tb.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		tb.Fatalf("the screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() < 800 || b.Dy() < 600 {
		tb.Errorf("the screenshot is %dx%d, want at least 800x600", b.Dx(), b.Dy())
	}
	if n := colours(img, 64); n < 64 {
		tb.Errorf("the screenshot has only %d colours, want at least 64: a blank page?", n)
	}
}

// colours counts the distinct colours of img, stopping at limit.
func colours(img image.Image, limit int) int {
	seen := make(map[[4]uint32]bool)
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= limit {
				return len(seen)
			}
		}
	}
	return len(seen)
}
