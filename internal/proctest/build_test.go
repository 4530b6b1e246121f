package proctest_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/internal/proctest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := proctest.RemoveBuilds(); err != nil {
		println(err.Error())
	}
	os.Exit(code)
}

func TestBuild(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		giveBin  func(testing.TB) string
		wantHelp string
	}{
		{name: "worker", giveBin: proctest.BuildWorker, wantHelp: "Usage: worker"},
		{name: "enqueue", giveBin: proctest.BuildEnqueue, wantHelp: "enqueue puts forgeq tasks on their queues"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			path := tt.giveBin(t)
			if again := tt.giveBin(t); again != path {
				t.Errorf("second build: %q, want the first's %q", again, path)
			}
			p := proctest.Start(t, path, nil, "--help")
			code, err := p.Wait(time.Minute)
			if err != nil || code != 0 {
				t.Fatalf("--help: exit %d, %v; output:\n%s", code, err, p.Logs())
			}
			if !strings.Contains(p.Stdout(), tt.wantHelp) {
				t.Errorf("--help stdout lacks %q:\n%s", tt.wantHelp, p.Stdout())
			}
		})
	}
}
