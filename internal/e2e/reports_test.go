package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
)

// reportsDB is the database of REDIS_TEST_URL TestReportsExample uses (and
// flushes).
const reportsDB = 18

// reportBuild is the payload of the example's report:build tasks, as a
// producer without its Go types writes it.
func reportBuild(id string) string {
	return fmt.Sprintf(`{"report_id":%q,"account":"acme","from":"2024-02-27","to":"2024-03-01"}`, id)
}

// TestReportsExample runs the example program examples/reports, built as
// its own module, on the real Redis, and enqueues report:build tasks every
// way a producer can: the stock enqueue CLI, built without the example's
// types, which validates them against the task catalogue the example's
// worker publishes; the example's own `reports enqueue` command (with
// --wait and --list); the built-in POST /api/tasks/{type}; and the
// example's POST /reports. Each report is then read back complete through
// the example's GET /reports/{id}, the report:build tasks (kept an hour)
// through asynq's inspector, and the dashboard's API lists them.
func TestReportsExample(t *testing.T) {
	t.Parallel()
	url := redistest.URL(t, reportsDB)
	flushDB(t, url)
	bin := proctest.BuildModule(t, "../../examples/reports")

	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	env := []string{
		"REDIS_CONNECTION_URL=" + url,
		"LOG_FORMAT=json",
		"WORKER_SHUTDOWN_TIMEOUT=5s",
		"REPORT_DAY_WORK=1000",
	}
	w := proctest.Start(t, bin, env, "--http-addr", addr)
	if w.WaitForMsg("worker started", startTimeout) == nil {
		t.Fatalf("%s did not log \"worker started\" within %v", w, startTimeout)
	}
	// The catalogue: what the stock CLI validates the example's types
	// against.
	if w.WaitForMsg("task types published", 10*time.Second) == nil {
		t.Fatalf("%s did not publish its task types", w)
	}
	web := &webClient{base: "http://" + addr}
	web.waitReady(t, 30*time.Second)
	ids := map[string]string{} // report id -> how it was enqueued

	// (a) The stock enqueue CLI, built without the example's types.
	cli := runEnqueue(t, []string{"REDIS_CONNECTION_URL=" + url},
		"--id", "e2e-cli", "--retention", "1h", "report:build", reportBuild("cli"))
	ids["cli"] = cli.String()
	bad := proctest.Start(t, proctest.BuildEnqueue(t), []string{"REDIS_CONNECTION_URL=" + url, "LOG_FORMAT=json"},
		"report:build", `{"report_id":"nope","account":"acme","from":"2024-02-27"}`)
	if code, err := bad.Wait(time.Minute); err != nil || code != 2 {
		t.Errorf("enqueue with a payload lacking \"to\": exit %d, %v; want 2; output:\n%s", code, err, bad.Logs())
	}
	t.Logf("enqueue refused the payload lacking \"to\": %s", bad.Stderr())
	if !strings.Contains(bad.Stderr(), `"to"`) {
		t.Errorf("enqueue with a payload lacking \"to\": stderr does not name the field:\n%s", bad.Stderr())
	}

	// (b) The example's own enqueue command: --list, and --wait.
	list := runReports(t, bin, url, "enqueue", "--list")
	for _, typ := range []string{"report:build", "report:day", "report:cleanup"} {
		if !strings.Contains(list.Stdout(), typ) {
			t.Errorf("reports enqueue --list lacks %s:\n%s", typ, list.Stdout())
		}
	}
	waited := runReports(t, bin, url, "enqueue", "--wait", "--json", "--wait-timeout", "60s",
		"--id", "e2e-own", "report:build", reportBuild("own"))
	var got struct {
		State  string `json:"state"`
		Result struct {
			ReportID string `json:"report_id"`
			Days     int    `json:"days"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(waited.Stdout()), &got); err != nil {
		t.Fatalf("reports enqueue --wait --json printed %q: %v", waited.Stdout(), err)
	}
	if got.State != "completed" || got.Result.ReportID != "own" || got.Result.Days != 4 {
		t.Errorf("reports enqueue --wait: %+v, want completed with report own of 4 days", got)
	}
	ids["own"] = waited.String()

	// (c) Over HTTP: the built-in route and the example's.
	code, resp := web.do(t, http.MethodPost, "/api/tasks/report:build",
		fmt.Sprintf(`{"payload":%s,"id":"e2e-api","retention":"1h"}`, reportBuild("api")))
	if code != http.StatusAccepted {
		t.Fatalf("POST /api/tasks/report:build: %d %s", code, resp)
	}
	ids["api"] = "POST /api/tasks/report:build"
	code, resp = web.do(t, http.MethodPost, "/api/tasks/report:build", `{"payload":{"report_id":"x","account":"acme","from":"2024-02-27"}}`)
	if code != http.StatusBadRequest || !bytes.Contains(resp, []byte(`\"to\"`)) {
		t.Errorf("POST /api/tasks/report:build without \"to\": %d %s; want 400 naming the field", code, resp)
	}
	code, resp = web.do(t, http.MethodPost, "/reports", reportBuild("http"))
	if code != http.StatusAccepted {
		t.Fatalf("POST /reports: %d %s", code, resp)
	}
	ids["http"] = "POST /reports"

	// Every report completes, with the same figures whichever way it came.
	var totals []string
	for id, how := range ids {
		rep := waitReport(t, web, id, 60*time.Second)
		if rep.DaysDone != 4 || len(rep.Days) != 4 {
			t.Errorf("report %s (%s): %d of %d days, want 4", id, how, rep.DaysDone, rep.DaysTotal)
		}
		totals = append(totals, string(rep.Totals))
	}
	for _, tot := range totals[1:] {
		if tot != totals[0] {
			t.Errorf("reports of the same account and days differ: totals %v", totals)
			break
		}
	}

	// The report:build tasks kept an hour, as asynq has them.
	m := manager(t, url, nil)
	insp := asynq.NewInspectorFromRedisClient(m.Client())
	for _, id := range []string{"e2e-cli", "e2e-own", "e2e-api"} {
		ti, err := insp.GetTaskInfo("default", id)
		if err != nil {
			t.Errorf("task %s: %v", id, err)
			continue
		}
		if ti.State != asynq.TaskStateCompleted || ti.Type != "report:build" || !bytes.Contains(ti.Result, []byte(`"days":4`)) {
			t.Errorf("task %s: %s %s, result %s; want a completed report:build of 4 days", id, ti.State, ti.Type, ti.Result)
		}
	}

	// The dashboard's API lists the queue and the completed tasks.
	code, resp = web.do(t, http.MethodGet, "/monitoring/api/queues", "")
	if code != http.StatusOK || !bytes.Contains(resp, []byte(`"default"`)) {
		t.Errorf("GET /monitoring/api/queues: %d %s; want the queue default", code, resp)
	}
	code, resp = web.do(t, http.MethodGet, "/monitoring/api/queues/default/completed_tasks?page_size=100", "")
	if code != http.StatusOK {
		t.Errorf("GET /monitoring/api/queues/default/completed_tasks: %d %s", code, resp)
	}
	for _, id := range []string{"e2e-cli", "e2e-own", "e2e-api"} {
		if !bytes.Contains(resp, []byte(`"id":"`+id+`"`)) {
			t.Errorf("the dashboard's completed tasks lack %s: %s", id, resp)
		}
	}
	code, resp = web.do(t, http.MethodGet, "/monitoring/api/queues/default/tasks/e2e-api", "")
	if code != http.StatusOK || !bytes.Contains(resp, []byte(`"type":"report:build"`)) {
		t.Errorf("GET /monitoring/api/queues/default/tasks/e2e-api: %d %s", code, resp)
	}

	stopWorkers(t, []*proctest.Proc{w})
	if msgs := problems(w); len(msgs) > 0 {
		t.Errorf("%s logged warnings or errors (message: count): %v", w, msgs)
	}
}

// flushDB empties the database of url.
func flushDB(tb testing.TB, url string) {
	tb.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatalf("flush database %d: %v", opts.DB, err)
	}
}

// runReports runs the example's binary bin with args on url and wants
// exit 0.
func runReports(tb testing.TB, bin, url string, args ...string) *proctest.Proc {
	tb.Helper()
	p := proctest.Start(tb, bin, []string{"REDIS_CONNECTION_URL=" + url, "LOG_FORMAT=json"}, args...)
	code, err := p.Wait(2 * time.Minute)
	if err != nil || code != 0 {
		tb.Fatalf("reports %s: exit %d, %v; output:\n%s", strings.Join(args, " "), code, err, p.Logs())
	}
	return p
}

// exampleReport is what the example's GET /reports/{id} answers.
type exampleReport struct {
	Status    string            `json:"status"`
	DaysDone  int               `json:"days_done"`
	DaysTotal int               `json:"days_total"`
	Days      []json.RawMessage `json:"days"`
	Totals    json.RawMessage   `json:"totals"`
}

// waitReport polls GET /reports/{id} until the report is complete.
func waitReport(tb testing.TB, web *webClient, id string, timeout time.Duration) exampleReport {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := web.do(tb, http.MethodGet, "/reports/"+id, "")
		var rep exampleReport
		if code == http.StatusOK && json.Unmarshal(body, &rep) == nil && rep.Status == "complete" {
			return rep
		}
		if time.Now().After(deadline) {
			tb.Fatalf("report %s not complete after %v: %d %s", id, timeout, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
