package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/tasks"
)

// enqueueTimeout bounds one run of the enqueue CLI under --wait.
const enqueueTimeout = 2 * time.Minute

// newcomerWorker starts the worker binary as the README's quick start runs
// it, with no Redis configured: it embeds an in-memory Redis. The only
// settings are the embedded Redis's address (a free port, not 6379, which
// other tests or the developer's Redis may hold; REDIS_EMBEDDED=true makes
// sure nothing already there is used instead) and no web process. It
// returns the worker and the embedded Redis's address.
func newcomerWorker(tb testing.TB, onTerminal bool) (*proctest.Proc, string) {
	tb.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(tb))
	env := []string{"REDIS_EMBEDDED=true", "REDIS_EMBEDDED_ADDR=" + addr, "HTTP_ADDR=off"}
	start := proctest.Start
	if onTerminal {
		start = proctest.StartTerminal
	}
	w := start(tb, proctest.BuildWorker(tb), env)
	if !w.WaitForLog("worker started", startTimeout) {
		tb.Fatalf("%s did not log \"worker started\" within %v", w, startTimeout)
	}
	return w, addr
}

// newcomerEnqueue runs the enqueue binary with args and, as its only
// setting, REDIS_EMBEDDED_ADDR=addr (the same as the worker's), and wants
// exit 0.
func newcomerEnqueue(tb testing.TB, onTerminal bool, addr string, args ...string) *proctest.Proc {
	tb.Helper()
	start := proctest.Start
	if onTerminal {
		start = proctest.StartTerminal
	}
	p := start(tb, proctest.BuildEnqueue(tb), []string{"REDIS_EMBEDDED_ADDR=" + addr}, args...)
	code, err := p.Wait(enqueueTimeout)
	if err != nil || code != 0 {
		tb.Fatalf("enqueue %s: exit %d, %v; output:\n%s", strings.Join(args, " "), code, err, p.Logs())
	}
	return p
}

// resultLine finds the line "result: {...}" that enqueue --wait prints and
// decodes its JSON into a T.
func resultLine[T any](tb testing.TB, out string) T {
	tb.Helper()
	var v T
	for _, line := range strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "result: "); ok {
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				tb.Fatalf("result %q: %v", rest, err)
			}
			return v
		}
	}
	tb.Fatalf("no \"result: \" line in the output:\n%s", out)
	return v
}

// TestNewcomer is the README's quick start with real processes: the worker
// run with nothing configured (so it embeds a Redis), and the enqueue CLI
// run in a second terminal with no Redis setting either, which finds the
// worker's Redis by itself. A data:process task waited for prints the
// computed result; the same key again comes from the cache; a cache:warm
// task waited for warms the keys, that one among them.
func TestNewcomer(t *testing.T) {
	t.Parallel()

	w, addr := newcomerWorker(t, false)
	// Which Redis it embeds depends on whether redis-server is on PATH;
	// the warning names it.
	if !w.WaitForLog("no Redis configured: started an EMBEDDED IN-MEMORY Redis: ", time.Second) ||
		!strings.Contains(w.Logs(), "; queued tasks and cached data are LOST when the worker exits. "+
			"For a real Redis, set REDIS_CONNECTION_URL=redis://host:6379") {
		t.Errorf("the worker does not say that it embeds an in-memory Redis:\n%s", w.Logs())
	}

	const key, work = "newcomer:report", 200_000
	want := tasks.ProcessDataResult{Key: key, Value: tasks.Digest(key, work), Source: tasks.SourceComputed}
	payload := fmt.Sprintf(`{"key": %q, "work": %d}`, key, work)

	first := newcomerEnqueue(t, false, addr, tasks.TypeProcessData, payload, "--wait")
	got := resultLine[tasks.ProcessDataResult](t, first.Stdout())
	got.TookMS = 0
	if got != want {
		t.Errorf("first data:process result %+v, want %+v", got, want)
	}
	if !strings.Contains(first.Stdout(), "completed after") {
		t.Errorf("first data:process output lacks \"completed after\":\n%s", first.Stdout())
	}

	second := newcomerEnqueue(t, false, addr, tasks.TypeProcessData, payload, "--wait")
	got = resultLine[tasks.ProcessDataResult](t, second.Stdout())
	got.TookMS = 0
	want.Source = tasks.SourceCache
	if got != want {
		t.Errorf("second data:process result %+v, want %+v (from the cache)", got, want)
	}

	warm := newcomerEnqueue(t, false, addr, tasks.TypeWarm,
		fmt.Sprintf(`{"keys": [%q, "newcomer:a", "newcomer:b"], "work": 1000}`, key), "--wait")
	if gotWarm, wantWarm := resultLine[tasks.WarmResult](t, warm.Stdout()), (tasks.WarmResult{Warmed: 3, Computed: 2, Cached: 1}); gotWarm != wantWarm {
		t.Errorf("cache:warm result %+v, want %+v", gotWarm, wantWarm)
	}

	// Each task ran once, on this worker. Its log reaches the test
	// through a pipe, perhaps after the CLI has seen the result.
	deadline := time.Now().Add(10 * time.Second)
	for len(w.LogLinesWithMsg("task done")) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(w.LogLinesWithMsg("task done")); n != 3 {
		t.Errorf("the worker logged %d \"task done\" lines, want 3:\n%s", n, w.Logs())
	}
}

// ansiColour matches a terminal colour escape sequence.
var ansiColour = regexp.MustCompile("\x1b\\[[0-9;]*m")

// TestNewcomerOnTerminals is the quick start as a person sees it: worker and
// enqueue CLI each in a terminal, nothing configured. The worker logs in
// zap's console format with coloured levels, not JSON; enqueue --wait draws
// its progress bar (the default --progress auto) and prints the result.
func TestNewcomerOnTerminals(t *testing.T) {
	t.Parallel()

	w, addr := newcomerWorker(t, true)

	const key, work = "newcomer:tty", 100_000
	e := newcomerEnqueue(t, true, addr, tasks.TypeProcessData, fmt.Sprintf(`{"key": %q, "work": %d}`, key, work), "--wait")
	out := e.Stderr() // a terminal has one stream
	got := resultLine[tasks.ProcessDataResult](t, out)
	if got.Value != tasks.Digest(key, work) || got.Source != tasks.SourceComputed {
		t.Errorf("result %+v, want the computed value %s", got, tasks.Digest(key, work))
	}
	// The bar: 30 cells between pipes, redrawn in place with \r, full at
	// the end, with the handler's last message beside it.
	for _, want := range []string{"\r", "100% |" + strings.Repeat("█", 30) + "|", "computed and cached"} {
		if !strings.Contains(out, want) {
			t.Errorf("enqueue's terminal output lacks %q:\n%q", want, out)
		}
	}

	// The worker's log: console lines, "time<TAB>LEVEL<TAB>message<TAB>fields".
	if !w.WaitForLog("task done", 10*time.Second) {
		t.Fatalf("the worker logged no \"task done\":\n%s", w.Logs())
	}
	logs := w.Logs()
	if lines := proctest.JSONLines(logs); len(lines) > 0 {
		t.Errorf("the worker logs JSON on a terminal, e.g. %v", lines[0])
	}
	if !ansiColour.MatchString(logs) {
		t.Errorf("the worker's levels are not coloured on a terminal:\n%q", logs)
	}
	console := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3}\tINFO\ttask done\t\{.*"task_id": "[^"]+".*"task_type": "data:process"`)
	if !console.MatchString(ansiColour.ReplaceAllString(logs, "")) {
		t.Errorf("no console-format \"task done\" line with its fields in the worker's log:\n%s", logs)
	}
	if !strings.Contains(logs, "EMBEDDED IN-MEMORY Redis") {
		t.Errorf("the worker does not say that it embeds an in-memory Redis:\n%s", logs)
	}
}
