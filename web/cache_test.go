package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// cachedBody mirrors the body of GET /api/cache/{key}.
type cachedBody struct {
	Key    string `json:"key"`
	Data   string `json:"data"`
	Source string `json:"source"`
}

func TestCacheAside(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		giveKey  string
		giveWork string // ?work=; "" for the default
		wantWork int
	}{
		{"default work", "report:1", "", web.DefaultComputeWork},
		{"given work", "report:2", "25", 25},
		{"unicode key", "bericht:übersicht", "3", 3},
		{"key with slashes", "reports/2026/03", "1", 1},
		{"longest key", string(make256()), "1", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			path := "/api/cache/" + url.PathEscape(tt.giveKey)
			if tt.giveWork != "" {
				path += "?work=" + tt.giveWork
			}
			want := cachedBody{Key: tt.giveKey, Data: tasks.Digest(tt.giveKey, tt.wantWork), Source: "computed"}

			resp := b.send(t, req{Path: path})
			if resp.Status != http.StatusOK {
				t.Fatalf("first GET: status %d: %s", resp.Status, resp.Body)
			}
			if diff := cmp.Diff(want, decode[cachedBody](t, resp)); diff != "" {
				t.Errorf("first GET (-want +got):\n%s", diff)
			}
			// It is stored where data:process tasks read and write it.
			if got, err := b.m.Get(context.Background(), tt.giveKey); err != nil || got != want.Data {
				t.Errorf("cache holds %q, %v; want %q", got, err, want.Data)
			}

			want.Source = "cache"
			resp = b.send(t, req{Path: path})
			if diff := cmp.Diff(want, decode[cachedBody](t, resp)); diff != "" {
				t.Errorf("second GET (-want +got):\n%s", diff)
			}
		})
	}
}

func make256() []byte {
	b := make([]byte, web.MaxKeyBytes)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func TestCacheAsideAnswersWhatIsCached(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.m.Set(context.Background(), "greeting", "hello", 0); err != nil {
		t.Fatal(err)
	}
	resp := b.send(t, req{Path: "/api/cache/greeting?work=99"})
	want := cachedBody{Key: "greeting", Data: "hello", Source: "cache"}
	if diff := cmp.Diff(want, decode[cachedBody](t, resp)); diff != "" {
		t.Errorf("GET (-want +got):\n%s", diff)
	}
}

// TestCacheAsideComputesOnce runs on miniredis and on the real Redis (see
// onEachRedis); it is not parallel for that reason.
func TestCacheAsideComputesOnce(t *testing.T) {
	onEachRedis(t, tasksDB, testCacheAsideComputesOnce)
}

func testCacheAsideComputesOnce(t *testing.T, setup setupFunc) {
	b := setup(t)
	const (
		callers = 20
		work    = web.MaxComputeWork // about 0.1s: long enough for the callers to overlap
	)
	before := b.m.Stats().Computations
	want := tasks.Digest("cold", work)

	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]cachedBody, callers)
		errs    = make([]error, callers)
	)
	for i := range callers {
		wg.Go(func() {
			<-start
			resp, err := http.Get(b.ts.URL + "/api/cache/cold?work=" + strconv.Itoa(work))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			errs[i] = json.NewDecoder(resp.Body).Decode(&results[i])
		})
	}
	close(start)
	wg.Wait()

	computed := 0
	for i := range callers {
		if errs[i] != nil || results[i].Data != want {
			t.Errorf("caller %d: %v, body %+v; want 200 with %q", i, errs[i], results[i], want)
		}
		if results[i].Source == "computed" {
			computed++
		}
	}
	t.Logf("%d of %d callers shared the computation, the others found its value cached", computed, callers)
	if got := b.m.Stats().Computations - before; got != 1 {
		t.Errorf("%d computations for %d concurrent requests of one cold key, want 1", got, callers)
	}
}

// TestCrossSiteCacheAsideIsRefused checks that a browser cannot be made to
// compute and store a value by a page of another site, as SameSite=Lax
// sends the session cookie on a top-level GET: the cache-aside route
// refuses cross-origin browser requests as the mutations do, while other
// clients and same-origin pages get their value. The program's own GET
// routes keep http.CrossOriginProtection's rule (safe methods pass).
func TestCrossSiteCacheAsideIsRefused(t *testing.T) {
	t.Parallel()
	const self = "self" // giveOrigin for the server's own origin
	tests := []struct {
		name       string
		giveMethod string
		givePath   string
		giveSite   string // Sec-Fetch-Site
		giveOrigin string
		wantStatus int
	}{
		{name: "cross-site", givePath: "/api/cache/x?work=1000", giveSite: "cross-site", wantStatus: http.StatusForbidden},
		{name: "cross-site HEAD", giveMethod: http.MethodHead, givePath: "/api/cache/x?work=1000", giveSite: "cross-site", wantStatus: http.StatusForbidden},
		{name: "same-site", givePath: "/api/cache/x", giveSite: "same-site", wantStatus: http.StatusForbidden},
		{name: "foreign origin, old browser", givePath: "/api/cache/x", giveOrigin: "https://evil.example", wantStatus: http.StatusForbidden},
		{name: "same-origin", givePath: "/api/cache/x", giveSite: "same-origin", wantStatus: http.StatusOK},
		{name: "typed into the address bar", givePath: "/api/cache/x", giveSite: "none", wantStatus: http.StatusOK},
		{name: "own origin, old browser", givePath: "/api/cache/x", giveOrigin: self, wantStatus: http.StatusOK},
		{name: "no browser headers", givePath: "/api/cache/x", wantStatus: http.StatusOK},
		{name: "program's GET route, cross-site", givePath: "/reports/1", giveSite: "cross-site", wantStatus: http.StatusOK},
		{name: "program's POST route, cross-site", giveMethod: http.MethodPost, givePath: "/reports/1", giveSite: "cross-site", wantStatus: http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
			b := setup(t, withAuth, func(o *web.Options) {
				o.Routes = []web.Route{{Pattern: "GET /reports/{id}", Handler: ok}, {Pattern: "POST /reports/{id}", Handler: ok}}
			})
			cookie := b.login(t)
			before := b.state(t)

			h := map[string]string{}
			if tt.giveSite != "" {
				h["Sec-Fetch-Site"] = tt.giveSite
			}
			switch tt.giveOrigin {
			case "":
			case self:
				h["Origin"] = b.ts.URL
			default:
				h["Origin"] = tt.giveOrigin
			}
			resp := b.send(t, req{Method: tt.giveMethod, Path: tt.givePath, Header: h, Cookie: cookie})
			if resp.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
			if tt.wantStatus != http.StatusForbidden {
				return
			}
			if tt.giveMethod != http.MethodHead {
				wantError(t, resp, http.StatusForbidden, "cross_origin")
			}
			if diff := cmp.Diff(before, b.state(t)); diff != "" {
				t.Errorf("Redis changed by a refused request (-before +after):\n%s", diff)
			}
		})
	}
}
