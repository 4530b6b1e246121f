package worker

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health/ready" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	ctx := context.Background()
	run := func(args ...string) error {
		var out bytes.Buffer
		return run(ctx, args, func(string) string { return "" }, &out, &out)
	}

	if err := run("--probe", srv.URL+"/health/ready"); err != nil {
		t.Errorf("healthy: %v", err)
	}
	if err := run("--probe=" + srv.URL + "/health/ready"); err != nil {
		t.Errorf("healthy, = form: %v", err)
	}
	status = http.StatusServiceUnavailable
	err := run("--probe", srv.URL+"/health/ready")
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("unhealthy: %v, want an error naming 503", err)
	}
	var ue usageError
	if errors.As(err, &ue) {
		t.Error("an unhealthy answer is not a usage error")
	}
	if err := run("--probe", "http://127.0.0.1:1/health/ready"); err == nil {
		t.Error("closed port: no error")
	}
	for _, bad := range [][]string{{"--probe"}, {"--probe", "ftp://x/"}, {"--probe", "not a url"}} {
		if err := run(bad...); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}
