package web_test

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/internal/metrics"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// queueList mirrors asynqmon's GET /monitoring/api/queues.
type queueList struct {
	Queues []struct {
		Queue  string `json:"queue"`
		Size   int    `json:"size"`
		Paused bool   `json:"paused"`
	} `json:"queues"`
}

// names returns the queue names, sorted.
func (l queueList) names() []string {
	var out []string
	for _, q := range l.Queues {
		out = append(out, q.Queue)
	}
	slices.Sort(out)
	return out
}

func TestDashboard(t *testing.T) {
	t.Parallel()
	b := setup(t)
	testDashboard(t, b, "")
}

// testDashboard enqueues a task on queues default and low and checks that
// the dashboard's page and API show them; cookie authenticates when set.
func testDashboard(t *testing.T, b *testBundle, cookie string) {
	t.Helper()
	for _, body := range []string{`{"payload":{"key":"a","work":1}}`, `{"payload":{"key":"b","work":1},"queue":"low"}`} {
		resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader, Body: body, Cookie: cookie})
		if resp.Status != http.StatusAccepted {
			t.Fatalf("enqueue: status %d: %s", resp.Status, resp.Body)
		}
	}

	resp := b.send(t, req{Path: "/monitoring/", Cookie: cookie})
	if resp.Status != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /monitoring/: status %d, type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"<title>Asynq - Monitoring</title>", `href="/monitoring/favicon.ico"`} {
		if !strings.Contains(string(resp.Body), want) {
			t.Errorf("dashboard page lacks %s", want)
		}
	}
	if resp := b.send(t, req{Path: "/monitoring", Cookie: cookie}); resp.Status/100 != 3 ||
		resp.Header.Get("Location") != "/monitoring/" {
		t.Errorf("GET /monitoring: status %d, Location %q; want a redirect to /monitoring/", resp.Status, resp.Header.Get("Location"))
	}

	resp = b.send(t, req{Path: "/monitoring/api/queues", Cookie: cookie})
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /monitoring/api/queues: status %d: %s", resp.Status, resp.Body)
	}
	got := decode[queueList](t, resp)
	if names := got.names(); !slices.Equal(names, []string{"default", "low"}) {
		t.Errorf("dashboard queues = %v, want [default low]", names)
	}
	for _, q := range got.Queues {
		if q.Size != 1 {
			t.Errorf("queue %s has size %d, want 1", q.Queue, q.Size)
		}
	}
}

func TestDashboardNeedsLogin(t *testing.T) {
	t.Parallel()
	b := setup(t, withAuth)

	resp := b.send(t, req{Path: "/monitoring/queues/default"})
	if resp.Status != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fmonitoring%2Fqueues%2Fdefault" {
		t.Errorf("GET /monitoring/queues/default: status %d, Location %q; want a redirect to the login page",
			resp.Status, resp.Header.Get("Location"))
	}
	resp = b.send(t, req{Path: "/monitoring/", Cookie: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	if resp.Status != http.StatusSeeOther {
		t.Errorf("GET /monitoring/ with an expired session: status %d, want 303", resp.Status)
	}
	wantError(t, b.send(t, req{Method: http.MethodPost, Path: "/monitoring/api/queues/default:pause"}), http.StatusUnauthorized, "unauthorized")

	testDashboard(t, b, b.login(t))
}

func TestDashboardWrites(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		giveReadOnly bool
		wantStatus   int
		wantPaused   bool
	}{
		{"allowed", false, http.StatusNoContent, true},
		{"read-only", true, http.StatusMethodNotAllowed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, withAuth, func(o *web.Options) { o.ReadOnlyDashboard = tt.giveReadOnly })
			cookie := b.login(t)
			if resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
				Body: `{"payload":{"key":"a","work":1}}`, Cookie: cookie}); resp.Status != http.StatusAccepted {
				t.Fatalf("enqueue: status %d: %s", resp.Status, resp.Body)
			}
			resp := b.send(t, req{Method: http.MethodPost, Path: "/monitoring/api/queues/default:pause", Cookie: cookie})
			if resp.Status != tt.wantStatus {
				t.Fatalf("pause: status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
			info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetQueueInfo("default")
			if err != nil {
				t.Fatal(err)
			}
			if info.Paused != tt.wantPaused {
				t.Errorf("paused = %v, want %v", info.Paused, tt.wantPaused)
			}
		})
	}
}

// fakePrometheus is an httptest server that answers Prometheus's
// query_range API with answer and records the queries it was sent.
type fakePrometheus struct {
	*httptest.Server
	mu      sync.Mutex
	queries []url.Values // one per request, with the path under "path"
}

// fakePromAnswer is what fakePrometheus answers every query with.
const fakePromAnswer = `{"status":"success","data":{"resultType":"matrix","result":[]},"fake":"forgeq-test"}`

func newFakePrometheus(tb testing.TB) *fakePrometheus {
	tb.Helper()
	p := &fakePrometheus{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		q.Set("path", r.URL.Path)
		p.mu.Lock()
		p.queries = append(p.queries, q)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, fakePromAnswer)
	}))
	tb.Cleanup(p.Close)
	return p
}

// received returns the recorded queries.
func (p *fakePrometheus) received() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.queries)
}

// TestDashboardCharts points the dashboard's charts at a fake Prometheus
// and checks that asynqmon queries it from the server (its metrics API
// answers with what Prometheus said), and that every metric it asks for is
// one that our /metrics exports for our queues.
func TestDashboardCharts(t *testing.T) {
	t.Parallel()
	prom := newFakePrometheus(t)
	b := setup(t, func(o *web.Options) {
		x, err := metrics.New(metrics.Options{Manager: o.Manager, Inspector: asynq.NewInspectorFromRedisClient(o.Manager.Client())})
		if err != nil {
			t.Fatal(err)
		}
		o.Metrics = x.Handler()
		o.DashboardPrometheusURL = prom.URL + "/"
	})
	if resp := b.send(t, req{Method: http.MethodPost, Path: "/api/tasks/" + tasks.TypeProcessData, Header: jsonHeader,
		Body: `{"payload":{"key":"a","work":1}}`}); resp.Status != http.StatusAccepted {
		t.Fatalf("enqueue: status %d: %s", resp.Status, resp.Body)
	}

	// The page gives the browser the address (JavaScript-escaped), which
	// turns the charts on.
	resp := b.send(t, req{Path: "/monitoring/"})
	if page := string(resp.Body); !strings.Contains(page, "FLAG_PROMETHEUS_SERVER_ADDRESS") || !strings.Contains(page, prom.Listener.Addr().String()) {
		t.Errorf("dashboard page does not give the browser the Prometheus address %s", prom.Listener.Addr())
	}

	resp = b.send(t, req{Path: "/monitoring/api/metrics?duration=1800"})
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /monitoring/api/metrics: status %d: %s", resp.Status, resp.Body)
	}
	charts := decode[map[string]json.RawMessage](t, resp)
	for _, chart := range []string{"queue_size", "queue_latency_seconds", "tasks_processed_per_second", "pending_tasks_by_queue"} {
		if got := string(charts[chart]); got != fakePromAnswer {
			t.Errorf("chart %s = %s, want Prometheus's answer %s", chart, got, fakePromAnswer)
		}
	}

	got := prom.received()
	if len(got) == 0 {
		t.Fatal("Prometheus got no query")
	}
	scraped := b.send(t, req{Path: "/metrics"})
	if scraped.Status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", scraped.Status)
	}
	body := string(scraped.Body)
	names := regexp.MustCompile(`\b[a-z_]+\{`)
	asked := map[string]bool{}
	for _, q := range got {
		if q.Get("path") != "/api/v1/query_range" || q.Get("step") == "" || q.Get("start") == "" || q.Get("end") == "" {
			t.Errorf("Prometheus request %v, want a query_range with start, end and step", q)
		}
		ms := names.FindAllString(q.Get("query"), -1)
		if len(ms) == 0 {
			t.Errorf("query %q names no metric", q.Get("query"))
		}
		for _, m := range ms {
			name := strings.TrimSuffix(m, "{") // not rate(...): no brace follows it
			asked[name] = true
			if !regexp.MustCompile(`(?m)^` + name + `\{(.*,)?queue="default"[,}]`).MatchString(body) {
				t.Errorf("the dashboard queries %s (in %q), which /metrics does not export for queue default", name, q.Get("query"))
			}
		}
	}
	if len(asked) < 6 {
		t.Errorf("the dashboard queried %v; want asynqmon's six queue families", slices.Sorted(maps.Keys(asked)))
	}
}
