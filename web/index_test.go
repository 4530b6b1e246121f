package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/web"
)

// indexBody mirrors the JSON body of GET /.
type indexBody struct {
	Name      string `json:"name"`
	Dashboard string `json:"dashboard"`
	Health    string `json:"health"`
	Routes    []struct {
		Method string `json:"method"`
		Path   string `json:"path"`
	} `json:"routes"`
}

func TestIndex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		giveAccept string
		wantType   string
	}{
		{name: "browser", giveAccept: "text/html,application/xhtml+xml,*/*;q=0.8", wantType: "text/html; charset=utf-8"},
		{name: "no Accept", wantType: "text/html; charset=utf-8"},
		{name: "JSON", giveAccept: "application/json", wantType: "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, withAuth)
			h := map[string]string{}
			if tt.giveAccept != "" {
				h["Accept"] = tt.giveAccept
			}
			resp := b.send(t, req{Path: "/", Header: h})
			if resp.Status != http.StatusOK {
				t.Fatalf("GET /: status %d: %s", resp.Status, resp.Body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tt.wantType {
				t.Errorf("Content-Type = %q, want %q", ct, tt.wantType)
			}
			if tt.wantType == "application/json" {
				got := decode[indexBody](t, resp)
				if got.Dashboard != "/monitoring/" || got.Health != "/health/ready" || len(got.Routes) == 0 {
					t.Errorf("GET / = %+v, want the dashboard, the readiness check and the routes", got)
				}
				return
			}
			for _, want := range []string{`href="/monitoring/"`, `href="/health/ready"`, "/api/cache/", "/api/tasks/", `href="/login"`} {
				if !strings.Contains(string(resp.Body), want) {
					t.Errorf("the index page lacks %s:\n%s", want, resp.Body)
				}
			}
		})
	}
}

func TestIndexKeepsOtherPathsUnknown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/nope", "/index.html", "/api/", "/health/"} {
		wantError(t, b.send(t, req{Path: path}), http.StatusNotFound, "not_found")
	}
}

func TestIndexGivesWayToTheProgramsRoot(t *testing.T) {
	t.Parallel()
	own := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("own root")) })
	for _, pattern := range []string{"GET /{$}", "/"} {
		t.Run(pattern, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(o *web.Options) { o.Routes = []web.Route{{Pattern: pattern, Handler: own}} })
			if resp := b.send(t, req{Path: "/"}); resp.Status != http.StatusOK || string(resp.Body) != "own root" {
				t.Errorf("GET /: status %d, body %q; want the program's root", resp.Status, resp.Body)
			}
		})
	}
}

func TestRunLogsTheDashboardURL(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.Addr = "127.0.0.1:0" })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	if err := b.srv.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { ran <- b.srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for b.logs.FilterMessage("web listening").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no web listening log line")
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := b.logs.FilterMessage("web listening").All()[0].ContextMap()
	want := map[string]any{"addr": b.srv.Addr(), "dashboard": "http://" + b.srv.Addr() + "/monitoring/"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("web listening fields (-want +got):\n%s", diff)
	}
}

func TestDashboardURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		giveAddr string
		want     string
	}{
		{"127.0.0.1:8080", "http://127.0.0.1:8080/monitoring/"},
		{"[::1]:8080", "http://[::1]:8080/monitoring/"},
		{"[::]:8080", "http://localhost:8080/monitoring/"},
		{"0.0.0.0:8080", "http://localhost:8080/monitoring/"},
		{":8080", "http://localhost:8080/monitoring/"},
		{"10.0.3.7:9000", "http://10.0.3.7:9000/monitoring/"},
	}
	for _, tt := range tests {
		if got := web.DashboardURL(tt.giveAddr); got != tt.want {
			t.Errorf("DashboardURL(%q) = %q, want %q", tt.giveAddr, got, tt.want)
		}
	}
}
