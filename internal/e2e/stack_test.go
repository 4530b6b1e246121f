package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// stackTarget is a Redis the whole stack runs on.
type stackTarget struct {
	url     string      // REDIS_CONNECTION_URL
	env     []string    // further Redis settings of every process
	tlsConf *tls.Config // for the test's own client
	secrets []string    // what must appear in no output
}

// httpUser is the web process's login in the whole-stack test.
const httpUser = "e2e"

// TestWholeStack runs a worker with its web process on a Redis reached over
// TLS, and on one reached as an ACL user restricted to cache:, asynq: and
// rate: keys. The enqueue CLI enqueues a task and waits for its result, the
// web process enqueues and reports a task, serves the cache-aside route,
// health and the dashboard's API, all on that Redis. Nothing may be refused
// by the ACL, and no password may appear in any output.
func TestWholeStack(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		give func(testing.TB) stackTarget
	}{
		{
			name: "tls",
			give: func(tb testing.TB) stackTarget {
				url, ca := redistest.TLS(tb)
				conf, err := config.TLS{CAFile: ca}.Config()
				if err != nil {
					tb.Fatal(err)
				}
				return stackTarget{url: url, env: []string{"REDIS_TLS_CA_FILE=" + ca}, tlsConf: conf}
			},
		},
		{
			name: "acl",
			give: func(tb testing.TB) stackTarget {
				url := redistest.ACLURL(tb)
				u, err := neturl.Parse(url)
				if err != nil {
					tb.Fatalf("parse %s: %v", redistest.EnvACLURL, err)
				}
				pw, ok := u.User.Password()
				if !ok || pw == "" {
					tb.Fatalf("%s has no password", redistest.EnvACLURL)
				}
				return stackTarget{url: url, secrets: []string{pw}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			target := tt.give(t)
			name := uniqueName(t)
			httpPass := randomHex(t)
			secrets := append([]string{httpPass}, target.secrets...)
			m := manager(t, target.url, target.tlsConf)
			t.Cleanup(func() { removeQueue(t, m, name, name) })

			addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
			env := workerEnv(target.url, name, append([]string{
				"HTTP_ADDR=" + addr,
				"HTTP_AUTH_USERNAME=" + httpUser,
				"HTTP_AUTH_PASSWORD=" + httpPass,
			}, target.env...)...)
			w := startWorkers(t, 1, env)[0]
			web := &webClient{base: "http://" + addr, pass: httpPass}
			web.waitReady(t, 30*time.Second)

			// The CLI: enqueue, wait, print the result.
			cliKey := name + ":cli"
			cli := runEnqueue(t, append([]string{"REDIS_CONNECTION_URL=" + target.url}, target.env...),
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
				t.Errorf("enqueue --wait: state %q, result %+v; want completed with the value %s",
					got.State, got.Result, tasks.Digest(cliKey, 1000))
			}

			// The web process: enqueue over HTTP, then read the task.
			webKey := name + ":web"
			body := fmt.Sprintf(`{"payload":{"key":%q,"work":1000},"queue":%q,"id":%q}`, webKey, name, name+"-web")
			code, resp := web.do(t, http.MethodPost, "/api/tasks/"+tasks.TypeProcessData, body)
			if code != http.StatusAccepted {
				t.Fatalf("POST /api/tasks: %d %s", code, resp)
			}
			var enq struct {
				StatusURL string `json:"status_url"`
			}
			if err := json.Unmarshal(resp, &enq); err != nil || enq.StatusURL == "" {
				t.Fatalf("POST /api/tasks answered %s: %v", resp, err)
			}
			web.waitCompleted(t, enq.StatusURL, tasks.Digest(webKey, 1000), 60*time.Second)

			// The cache-aside route: computed, then cached.
			for _, want := range []string{`"source":"computed"`, `"source":"cache"`} {
				code, resp := web.do(t, http.MethodGet, "/api/cache/"+name+":aside?work=100", "")
				if code != http.StatusOK || !bytes.Contains(resp, []byte(want)) {
					t.Errorf("GET /api/cache: %d %s; want 200 with %s", code, resp, want)
				}
			}

			// The dashboard's API on the shared client.
			for _, path := range []string{
				"/monitoring/api/queues",
				"/monitoring/api/queues/" + name,
				"/monitoring/api/queues/" + name + "/completed_tasks",
				"/monitoring/api/queue_stats",
				"/monitoring/api/servers",
				"/monitoring/api/redis_info",
			} {
				code, resp := web.do(t, http.MethodGet, path, "")
				if code != http.StatusOK {
					t.Errorf("GET %s: %d %s", path, code, resp)
				}
				if path == "/monitoring/api/queues" && !bytes.Contains(resp, []byte(`"`+name+`"`)) {
					t.Errorf("GET %s does not list queue %s: %s", path, name, resp)
				}
			}
			if code, resp := web.do(t, http.MethodGet, "/health/redis", ""); code != http.StatusOK {
				t.Errorf("GET /health/redis: %d %s", code, resp)
			}
			// The queue collector reads asynq's statistics through the
			// same Redis.
			code, resp = web.do(t, http.MethodGet, "/metrics", "")
			for _, want := range []string{
				fmt.Sprintf(`forgeq_queue_tasks{queue=%q,state="completed"} 2`, name),
				"forgeq_queue_scrape_errors_total 0",
			} {
				if code != http.StatusOK || !bytes.Contains(resp, []byte(want)) {
					t.Errorf("GET /metrics: %d, no line %s", code, want)
				}
			}

			stopWorkers(t, []*proctest.Proc{w})

			outputs := map[string]string{
				w.String():       w.Logs(),
				cli.String():     cli.Logs(),
				"HTTP responses": web.transcript(),
			}
			for where, text := range outputs {
				for i, s := range secrets {
					if strings.Contains(text, s) {
						t.Errorf("%s: holds secret #%d (%s)", where, i, []string{"HTTP password", "Redis password"}[min(i, 1)])
					}
				}
				for _, line := range strings.Split(text, "\n") {
					// INFO's errorstat_NOPERM counts every client's refusals
					// on the shared server (other tests provoke some); only
					// a NOPERM error of our own counts.
					if strings.Contains(strings.ReplaceAll(line, "errorstat_NOPERM", ""), "NOPERM") {
						t.Errorf("%s: the Redis ACL refused a command: %s", where, line)
					}
				}
			}
			if msgs := problems(w); len(msgs) > 0 {
				t.Errorf("%s logged warnings or errors (message: count): %v", w, msgs)
			}
		})
	}
}

// randomHex returns 16 random bytes in hex.
func randomHex(tb testing.TB) string {
	tb.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// webClient calls the web process with basic auth and keeps what it
// answered.
type webClient struct {
	base string
	pass string
	log  strings.Builder
}

// do sends a request and returns the status code and the body.
func (c *webClient) do(tb testing.TB, method, path, body string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.SetBasicAuth(httpUser, c.pass)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	fmt.Fprintf(&c.log, "%s %s: %d %v %s\n", method, path, resp.StatusCode, resp.Header, b)
	return resp.StatusCode, b
}

// transcript returns every answer so far.
func (c *webClient) transcript() string { return c.log.String() }

// waitReady waits until /health/ready answers 200.
func (c *webClient) waitReady(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := c.do(tb, http.MethodGet, "/health/ready", "")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("/health/ready after %v: %d %s", timeout, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCompleted polls the task status at statusURL until the task has
// completed with the data:process value want.
func (c *webClient) waitCompleted(tb testing.TB, statusURL, want string, timeout time.Duration) {
	tb.Helper()
	if u, err := neturl.Parse(statusURL); err == nil && u.IsAbs() {
		statusURL = u.RequestURI()
	}
	deadline := time.Now().Add(timeout)
	for {
		code, body := c.do(tb, http.MethodGet, statusURL, "")
		var st struct {
			State  string                  `json:"state"`
			Result tasks.ProcessDataResult `json:"result"`
		}
		if code == http.StatusOK && json.Unmarshal(body, &st) == nil && st.State == "completed" {
			if st.Result.Value != want {
				tb.Errorf("task at %s: result %+v, want the value %s", statusURL, st.Result, want)
			}
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("task at %s not completed after %v: %d %s", statusURL, timeout, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
