package web_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

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
