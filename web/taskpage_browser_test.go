package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/forgeqtest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// taskPageDB is the test Redis database of TestBrowserTaskPage.
const taskPageDB = 46

// stepsArgs is the payload of the browser test's task type.
type stepsArgs struct {
	Name string `json:"name"`
}

// TestBrowserTaskPage drives a real Chromium to the page of a task that a
// real worker runs on the test Redis, with its events on: the handler
// reports progress through tasks.Deps.ReportProgress and, after each
// report, waits until the page shows it, so the page must follow the
// task's events as they come (it never reloads); then the page shows the
// task's result. The page is behind the login, as the workflows pages.
//
//	REDIS_TEST_URL=redis://127.0.0.1:16379 FORGEQ_ARTIFACTS_DIR=/tmp/shots go test ./web -run BrowserTaskPage -v
func TestBrowserTaskPage(t *testing.T) {
	t.Parallel()
	execPath := chromium(t)
	rdb := realRedis(t, taskPageDB)

	// The handler reports each step, then holds the task until the test
	// has seen the step on the page.
	type step struct {
		percent float64
		message string
	}
	steps := []step{{30, "reading the input"}, {70, "writing the report"}}
	reported := make(chan step)
	proceed := make(chan struct{})
	stepsType := tasks.Define("browser:steps", "Reports progress in steps, each held until the test goes on.",
		func(ctx context.Context, deps tasks.Deps, p stepsArgs) ([]byte, error) {
			for _, s := range steps {
				if err := deps.ReportProgress(ctx, s.percent, s.message); err != nil {
					return nil, err
				}
				select {
				case reported <- s:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				select {
				case <-proceed:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return json.Marshal(map[string]any{"report": p.Name, "pages": 42})
		}, asynq.MaxRetry(0), asynq.Retention(time.Hour))
	w := forgeqtest.StartWorker(t, worker.New("taskpage").Register(stepsType), forgeqtest.WorkerOptions{Env: map[string]string{
		"REDIS_CONNECTION_URL": redistest.URL(t, taskPageDB),
		"REDIS_EMBEDDED":       "",
	}})
	base := startServer(t, rdb, withAuth)
	tab := newBrowser(t, execPath)

	task, err := stepsType.NewTask(stepsArgs{Name: "weekly"}, asynq.TaskID("browser-steps-1"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := w.Client().EnqueueContext(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	page := "/tasks/" + info.Queue + "/" + info.ID
	next := func(want step) {
		t.Helper()
		select {
		case got := <-reported:
			if got != want {
				t.Fatalf("reported %+v, want %+v", got, want)
			}
		case <-time.After(stepTimeout):
			t.Fatalf("the handler did not report %+v within %v", want, stepTimeout)
		}
	}
	next(steps[0])

	// The page sends a browser without a session to the login page,
	// which sends it back.
	resp := runStep(t, tab, chromedp.NavigateResponse(base+page))
	if want := base + "/login?next=" + url.QueryEscape(page); resp.URL != want {
		t.Fatalf("GET %s without a session ended at %s, want %s", page, resp.URL, want)
	}
	doStep(t, tab,
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), testUser),
		chromedp.SendKeys(chromedp.ID("password"), testPass),
	)
	resp = runStep(t, tab, responseOf(chromedp.Click(chromedp.CSS(`button[type="submit"]`))))
	if resp.URL != base+page || resp.Status != 200 {
		t.Fatalf("login ended at %s (status %d), want %s (200)", resp.URL, resp.Status, base+page)
	}
	// A mark that a reload would wipe out.
	runStep(t, tab, chromedp.Evaluate[bool](`window.forgeqMark = true`))

	shown := func(s step) {
		t.Helper()
		waitPage(t, tab, `document.getElementById("percent").textContent + " " + document.getElementById("message").textContent`,
			fmt.Sprintf("%.0f%% %s", s.percent, s.message))
	}
	// The first step, in the state the page read; the second comes as an
	// event while the page is open.
	shown(steps[0])
	waitPage(t, tab, `document.getElementById("task").dataset.live`, "live")
	if st := runStep(t, tab, chromedp.Text(chromedp.ID("state"))); st != "active" {
		t.Errorf("state %q while the task runs, want active", st)
	}
	proceed <- struct{}{}
	next(steps[1])
	shown(steps[1])
	if v := runStep(t, tab, chromedp.Evaluate[float64](`document.getElementById("progress").value`)); v != 70 {
		t.Errorf("progress bar at %v, want 70", v)
	}
	proceed <- struct{}{}

	// The end: the state, the full bar, the result; the stream closed.
	waitPage(t, tab, `document.getElementById("state").textContent`, "completed")
	waitPage(t, tab, `document.getElementById("task").dataset.live`, "ended")
	result := runStep(t, tab, chromedp.Text(chromedp.ID("result")))
	var got map[string]any
	if err := json.Unmarshal([]byte(result), &got); err != nil || got["report"] != "weekly" || got["pages"] != float64(42) {
		t.Errorf("result on the page %q (%v), want the handler's", result, err)
	}
	if v := runStep(t, tab, chromedp.Evaluate[float64](`document.getElementById("progress").value`)); v != 100 {
		t.Errorf("progress bar at %v once succeeded, want 100", v)
	}
	kinds := runStep(t, tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#events li")].map((li) => li.dataset.kind)`))
	if want := "state progress succeeded"; strings.Join(kinds, " ") != want {
		t.Errorf("events on the page: %q, want %q", kinds, want)
	}
	if !runStep(t, tab, chromedp.Evaluate[bool](`window.forgeqMark === true`)) {
		t.Error("the page reloaded: it should follow the events")
	}
	fitViewport(t, tab)
	shot := runStep(t, tab, chromedp.CaptureScreenshot())
	t.Logf("task page screenshot: %s", saveArtifact(t, "browser-task-page.png", shot))
}
