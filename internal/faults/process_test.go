package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/tasks"
)

// startTimeout bounds how long a worker may take to log "worker started":
// a -race binary on a busy machine.
const startTimeout = 60 * time.Second

// secureRedis starts a private redis-server that needs a password and
// returns it with the URL the processes use.
func secureRedis(tb testing.TB, args ...string) (*proctest.Redis, string) {
	tb.Helper()
	pw := newSecret(tb)
	r := proctest.RedisServer(tb, append([]string{"--requirepass", pw}, args...)...)
	watch(tb.Name()+": redis-server", func() string {
		if p := r.Proc(); p != nil {
			return p.Logs()
		}
		return ""
	})
	return r, "redis://:" + pw + "@" + r.Addr()
}

// worker is a running worker process.
type worker struct {
	*proctest.Proc
	base string // http://host:port of its web process; "" when off
}

// startWorker runs the worker binary on the Redis at url, logging JSON,
// with its web process on a free port (API rate limit off) unless env sets
// HTTP_ADDR=off, and env after that (later entries win). It waits for
// "worker started".
func startWorker(tb testing.TB, url string, env ...string) *worker {
	tb.Helper()
	return startWorkerBin(tb, proctest.BuildWorker(tb), url, env...)
}

// startWorkerBin is startWorker with another worker binary: a program
// built on worker.App, such as the workflow tests' testdata/wfworker.
func startWorkerBin(tb testing.TB, bin, url string, env ...string) *worker {
	tb.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(tb))
	all := append([]string{
		"REDIS_CONNECTION_URL=" + url,
		"REDIS_EMBEDDED=false",
		"LOG_FORMAT=json",
		"HTTP_ADDR=" + addr,
		"HTTP_RATE_LIMIT=off",
	}, env...)
	p := proctest.Start(tb, bin, all)
	watchProc(tb, p)
	if p.WaitForMsg("worker started", startTimeout) == nil {
		tb.Fatalf("%s did not start within %v", p, startTimeout)
	}
	// The sweep for passwords is only worth something if the worker
	// shows where its password would be.
	if u, err := neturl.Parse(url); err == nil {
		if _, ok := u.User.Password(); ok {
			ls := p.LogLinesWithMsg("worker starting")
			if shown, _ := ls[0]["redis"].(string); !strings.Contains(shown, "xxxxx") {
				tb.Errorf("%s logged its Redis URL as %q, want the password redacted", p, shown)
			}
		}
	}
	w := &worker{Proc: p}
	for _, e := range all {
		if v, ok := strings.CutPrefix(e, "HTTP_ADDR="); ok {
			w.base = "http://" + v
			if v == "off" {
				w.base = ""
			}
		}
	}
	return w
}

// stop sends SIGTERM and waits up to timeout for the exit code.
func (w *worker) stop(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	if err := w.Signal(os.Interrupt); err != nil {
		tb.Fatal(err)
	}
	code, err := w.Wait(timeout)
	if err != nil {
		tb.Fatal(err)
	}
	return code
}

// cliResult is one run of the enqueue binary.
type cliResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// runEnqueue runs the enqueue binary against url with args and waits up to
// timeout for it.
func runEnqueue(tb testing.TB, url string, timeout time.Duration, env []string, args ...string) cliResult {
	tb.Helper()
	all := append([]string{"REDIS_CONNECTION_URL=" + url, "LOG_FORMAT=json"}, env...)
	bin := proctest.BuildEnqueue(tb)
	start := time.Now()
	p := proctest.Start(tb, bin, all, args...)
	watchProc(tb, p)
	code, err := p.Wait(timeout)
	if err != nil {
		tb.Fatalf("enqueue %v: %v", args, err)
	}
	return cliResult{code: code, stdout: p.Stdout(), stderr: p.Stderr(), took: time.Since(start)}
}

// fileTask is one line of an enqueue --file.
type fileTask struct {
	Type      string            `json:"type"`
	Payload   tasks.ProcessData `json:"payload"`
	ID        string            `json:"id"`
	Retention string            `json:"retention"`
	Delay     string            `json:"delay,omitempty"`
}

// enqueueFile enqueues data:process tasks with the CLI's --file, each kept
// for an hour once done, and fails the test unless the CLI enqueued all of
// them. It returns their ids.
func enqueueFile(tb testing.TB, url string, lines []fileTask) []string {
	tb.Helper()
	var b strings.Builder
	ids := make([]string, 0, len(lines))
	for _, l := range lines {
		l.Type = tasks.TypeProcessData
		if l.Retention == "" {
			l.Retention = "1h"
		}
		j, err := json.Marshal(l)
		if err != nil {
			tb.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
		ids = append(ids, l.ID)
	}
	path := filepath.Join(tb.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	res := runEnqueue(tb, url, time.Minute, nil, "--file", path, "--progress", "never")
	if res.code != 0 {
		tb.Fatalf("enqueue --file: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	return ids
}

// processTasks returns n data:process lines with ids prefix-0... and the
// work of work(i).
func processTasks(prefix string, n int, work func(i int) int) []fileTask {
	out := make([]fileTask, n)
	for i := range out {
		id := fmt.Sprintf("%s-%d", prefix, i)
		out[i] = fileTask{ID: id, Payload: tasks.ProcessData{Key: id, Work: work(i)}}
	}
	return out
}

// redisClient returns a client for url, closed at cleanup.
func redisClient(tb testing.TB, url string) *redis.Client {
	tb.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	o.MaxRetries = -1
	rdb := redis.NewClient(o)
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// inspector returns an asynq inspector on url.
func inspector(tb testing.TB, url string) *asynq.Inspector {
	tb.Helper()
	return asynq.NewInspectorFromRedisClient(redisClient(tb, url))
}

// taskInfos returns the state of each id in queue; a missing task has no
// entry.
func taskInfos(tb testing.TB, in *asynq.Inspector, queue string, ids []string) map[string]*asynq.TaskInfo {
	tb.Helper()
	out := make(map[string]*asynq.TaskInfo, len(ids))
	for _, id := range ids {
		info, err := in.GetTaskInfo(queue, id)
		if err == nil {
			out[id] = info
		}
	}
	return out
}

// countStates counts the tasks of infos by state.
func countStates(infos map[string]*asynq.TaskInfo) map[asynq.TaskState]int {
	out := map[asynq.TaskState]int{}
	for _, i := range infos {
		out[i.State]++
	}
	return out
}

// waitUntil polls cond every interval until it holds, for at most timeout,
// and reports whether it held.
func waitUntil(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// waitCompleted waits up to timeout until every id in queue is completed.
func waitCompleted(tb testing.TB, in *asynq.Inspector, queue string, ids []string, timeout time.Duration) {
	tb.Helper()
	var states map[asynq.TaskState]int
	ok := waitUntil(timeout, 200*time.Millisecond, func() bool {
		states = countStates(taskInfos(tb, in, queue, ids))
		return states[asynq.TaskStateCompleted] == len(ids)
	})
	if !ok {
		tb.Fatalf("after %v, of %d tasks: %v", timeout, len(ids), states)
	}
}

// httpResult is one HTTP answer.
type httpResult struct {
	status int
	body   []byte
	took   time.Duration
	err    error
}

// httpClient has no keep-alive, so that a request after the server stopped
// listening fails to connect instead of reusing a connection.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// get sends GET url with the given timeout; the body goes to the sweep.
func get(url string, timeout time.Duration) httpResult {
	return send(http.MethodGet, url, "", timeout)
}

// send sends a request with a JSON body (none when body is "") and the
// given timeout; the response body goes to the sweep.
func send(method, url, body string, timeout time.Duration) httpResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return httpResult{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return httpResult{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	res := httpResult{status: resp.StatusCode, body: b, took: time.Since(start), err: err}
	if resp.StatusCode/100 != 2 {
		watchText(method+" "+url, string(b))
	}
	return res
}

// workPerSecond is how many data:process rounds one core does per second
// in this build mode (race or not), which the binaries share.
var workPerSecond = sync.OnceValue(func() float64 {
	const probe = 400_000
	start := time.Now()
	tasks.Digest("calibrate", probe)
	return probe / time.Since(start).Seconds()
})

// workFor returns the data:process work that keeps one core busy for about d.
func workFor(d time.Duration) int {
	return max(1, min(int(workPerSecond()*d.Seconds()), tasks.MaxWork))
}
