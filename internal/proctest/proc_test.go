package proctest_test

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/internal/proctest"
)

// sh starts a shell running script.
func sh(tb testing.TB, script string, env ...string) *proctest.Proc {
	tb.Helper()
	return proctest.Start(tb, "/bin/sh", env, "-c", script)
}

func TestProcOutput(t *testing.T) {
	t.Parallel()

	p := sh(t, `echo "out $GREETING"; echo '{"msg":"task done","task_id":"a"}' >&2; echo 'not json' >&2; printf '{"msg":"last"}'`,
		"GREETING=hi")
	code, err := p.Wait(10 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("Wait: %d, %v", code, err)
	}
	if got, want := p.Stdout(), "out hi\n{\"msg\":\"last\"}"; got != want {
		t.Errorf("Stdout() = %q, want %q", got, want)
	}
	if !strings.Contains(p.Stderr(), "not json") {
		t.Errorf("Stderr() = %q, want it to hold %q", p.Stderr(), "not json")
	}
	want := []map[string]any{{"msg": "task done", "task_id": "a"}, {"msg": "last"}}
	if diff := cmp.Diff(want, p.JSONLogLines()); diff != "" {
		t.Errorf("JSONLogLines() (-want +got):\n%s", diff)
	}
	if got := p.LogLinesWithMsg("task done"); len(got) != 1 {
		t.Errorf("LogLinesWithMsg(task done) = %v, want one line", got)
	}
	file, err := os.ReadFile(p.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != p.Logs() {
		t.Errorf("log file %q, Logs() %q: want the same", file, p.Logs())
	}
}

func TestProcEnvIsolated(t *testing.T) {
	t.Setenv("PROCTEST_LEAK", "leaked")

	p := sh(t, `echo "[$PROCTEST_LEAK]"`)
	if _, err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := p.Stdout(); got != "[]\n" {
		t.Errorf("the child saw PROCTEST_LEAK: %q", got)
	}
}

func TestProcWait(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		give     string
		giveSig  os.Signal
		wantCode int
	}{
		{name: "exit 0", give: "exit 0", wantCode: 0},
		{name: "exit 3", give: "exit 3", wantCode: 3},
		{name: "trapped TERM", give: `trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done`, giveSig: syscall.SIGTERM, wantCode: 7},
		{name: "killed", give: `echo ready; exec sleep 30`, giveSig: syscall.SIGKILL, wantCode: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			p := sh(t, tt.give)
			if tt.giveSig != nil {
				if !p.WaitForLog("ready", 10*time.Second) {
					t.Fatalf("no ready line: %q", p.Logs())
				}
				if err := p.Signal(tt.giveSig); err != nil {
					t.Fatal(err)
				}
			}
			code, err := p.Wait(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
		})
	}
}

func TestProcTimeoutAndKill(t *testing.T) {
	t.Parallel()

	p := sh(t, "exec sleep 30")
	if _, err := p.Wait(50 * time.Millisecond); !errors.Is(err, proctest.ErrTimeout) {
		t.Fatalf("Wait on a sleeping process: %v, want ErrTimeout", err)
	}
	if p.WaitForLog("never", 50*time.Millisecond) {
		t.Error("WaitForLog found a line never written")
	}
	p.Kill()
	if !p.Exited() {
		t.Error("Exited() = false after Kill")
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Error("Signal after exit: no error")
	}
}

// TestStartTerminal: the process finds a terminal on stdin, stdout and
// stderr, of the promised size, and what it writes to either arrives
// through Stderr and Logs, up to its last byte.
func TestStartTerminal(t *testing.T) {
	t.Parallel()

	p := proctest.StartTerminal(t, "/bin/sh", nil, "-c",
		`for fd in 0 1 2; do [ -t $fd ] && echo "fd $fd is a terminal"; done; stty size; echo to-stderr >&2; printf 'no newline'`)
	code, err := p.Wait(10 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("Wait: %d, %v; output %q", code, err, p.Stderr())
	}
	out := strings.ReplaceAll(p.Stderr(), "\r\n", "\n")
	for _, want := range []string{"fd 0 is a terminal\n", "fd 1 is a terminal\n", "fd 2 is a terminal\n", "40 120\n", "to-stderr\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
	if !strings.HasSuffix(out, "no newline") {
		t.Errorf("output %q lacks its last bytes %q", out, "no newline")
	}
	if !strings.Contains(p.Logs(), "to-stderr") || p.Stdout() != "" {
		t.Errorf("Logs() = %q, Stdout() = %q; want the lines in Logs and nothing in Stdout", p.Logs(), p.Stdout())
	}
}
