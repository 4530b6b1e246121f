package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// eventsDB is the database of REDIS_TEST_URL TestTaskEventsProcesses uses.
const eventsDB = 57

// sseEvent is one Server-Sent Event as the test reads it.
type sseEvent struct {
	id, name, data string
}

// readSSE opens path on the web process with lastID as Last-Event-ID
// ("" for none) and returns the events of the stream until the server ends
// it, and the response's status code.
func readSSE(t *testing.T, c *webClient, path, lastID string, timeout time.Duration) (int, []sseEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(httpUser, c.pass)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	var (
		out []sseEvent
		cur sseEvent
	)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.name != "" || cur.data != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data += strings.TrimPrefix(line, "data: ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("GET %s: stream ended with %v after %d events (%+v)", path, err, len(out), out)
	}
	return resp.StatusCode, out
}

// TestTaskEventsProcesses follows one task run by a real worker process
// the three ways a user can: the web's Server-Sent Events (from the start,
// then resumed with Last-Event-ID), events.Client.WaitResult from another
// process's point of view (this test's), and the enqueue CLI's --wait.
func TestTaskEventsProcesses(t *testing.T) {
	t.Parallel()
	url := redistest.URL(t, eventsDB)
	name := uniqueName(t)
	m := manager(t, url, nil)
	t.Cleanup(func() { removeQueue(t, m, name, name) })

	httpPass := randomHex(t)
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	startWorkers(t, 1, workerEnv(url, name,
		"HTTP_ADDR="+addr, "HTTP_AUTH_USERNAME="+httpUser, "HTTP_AUTH_PASSWORD="+httpPass))
	web := &webClient{base: "http://" + addr, pass: httpPass}
	web.waitReady(t, 30*time.Second)

	// WaitResult, started before the task exists would be ErrNotFound:
	// enqueue first, then wait from this process.
	key, work := name+":ev", 3_000_000
	id := name + "-ev"
	body := fmt.Sprintf(`{"payload":{"key":%q,"work":%d},"queue":%q,"id":%q}`, key, work, name, id)
	if code, resp := web.do(t, http.MethodPost, "/api/tasks/"+tasks.TypeProcessData, body); code != http.StatusAccepted {
		t.Fatalf("POST /api/tasks: %d %s", code, resp)
	}
	waited := make(chan error, 1)
	var result []byte
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var err error
		result, err = events.NewClient(m.Client(), events.ClientOptions{}).WaitResult(ctx, name, id)
		waited <- err
	}()

	path := "/api/tasks/" + name + "/" + id + "/events"
	code, evs := readSSE(t, web, path, "", time.Minute)
	if code != http.StatusOK || len(evs) == 0 {
		t.Fatalf("GET %s: %d with %d events", path, code, len(evs))
	}
	if evs[0].name != "state" {
		t.Errorf("first event %q, want the state snapshot", evs[0].name)
	}
	kinds := map[string]int{}
	var startedID string
	for _, e := range evs[1:] {
		kinds[e.name]++
		if e.name == string(events.Started) && startedID == "" {
			startedID = e.id
		}
	}
	last := evs[len(evs)-1]
	if last.name != string(events.Succeeded) {
		t.Fatalf("the stream ended with %q, want succeeded; events %+v", last.name, evs)
	}
	var done events.Event
	if err := json.Unmarshal([]byte(last.data), &done); err != nil {
		t.Fatalf("succeeded data %q: %v", last.data, err)
	}
	var res tasks.ProcessDataResult
	if err := json.Unmarshal(done.Result, &res); err != nil || res.Value != tasks.Digest(key, work) {
		t.Errorf("succeeded event result %s (%v), want the value %s", done.Result, err, tasks.Digest(key, work))
	}
	// A task enqueued before the stream opened may have started before
	// the snapshot; its progress reports come after (3M rounds report
	// several times).
	if kinds[string(events.Progress)] == 0 {
		t.Errorf("no progress event in %+v", evs)
	}

	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitResult: %v", err)
		}
		if err := json.Unmarshal(result, &res); err != nil || res.Value != tasks.Digest(key, work) {
			t.Errorf("WaitResult %s (%v), want the value %s", result, err, tasks.Digest(key, work))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WaitResult did not return within 30s of the succeeded event")
	}

	// Resumed from an event in the middle: the events after it, to the end.
	if startedID != "" {
		code, again := readSSE(t, web, path, startedID, 30*time.Second)
		if code != http.StatusOK || len(again) == 0 || again[len(again)-1].name != string(events.Succeeded) {
			t.Errorf("resumed after %s: %d, events %+v; want the rest ending with succeeded", startedID, code, again)
		}
		for _, e := range again {
			if e.name == "state" {
				t.Errorf("a resumed stream sent a state snapshot: %+v", again)
			}
		}
	}
	// Resumed after the final event: 204, so EventSource stops.
	if code, _ := readSSE(t, web, path, last.id, 30*time.Second); code != http.StatusNoContent {
		t.Errorf("resumed after the final event: %d, want 204", code)
	}

	// The CLI's --wait follows the same events to the result.
	cliKey := name + ":cli"
	cli := runEnqueue(t, []string{"REDIS_CONNECTION_URL=" + url},
		"--wait", "--json", "--wait-timeout", "60s", "--queue", name, "--id", name+"-cli",
		tasks.TypeProcessData, fmt.Sprintf(`{"key":%q,"work":1000}`, cliKey))
	var got struct {
		State  string                  `json:"state"`
		Result tasks.ProcessDataResult `json:"result"`
	}
	if err := json.Unmarshal([]byte(cli.Stdout()), &got); err != nil {
		t.Fatalf("enqueue --wait --json output %q: %v", cli.Stdout(), err)
	}
	if got.State != "completed" || got.Result.Value != tasks.Digest(cliKey, 1000) {
		t.Errorf("enqueue --wait: state %q, result %+v; want completed with %s", got.State, got.Result, tasks.Digest(cliKey, 1000))
	}
	// Its enqueued event and the worker's events are in the stream.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	seen := map[events.Kind]bool{}
	for e, err := range events.NewClient(m.Client(), events.ClientOptions{}).Watch(ctx, name, name+"-cli", "0") {
		if err != nil {
			t.Fatalf("watch the CLI's task: %v (seen %v)", err, seen)
		}
		seen[e.Kind] = true
		if seen[events.Enqueued] && seen[events.Started] && seen[events.Succeeded] {
			break
		}
	}
	if !seen[events.Enqueued] || !seen[events.Started] || !seen[events.Succeeded] {
		t.Errorf("the CLI's task's events: %v; want enqueued, started and succeeded", seen)
	}
}
