package enqueue

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/internal/proctest"
)

func TestPercentBar(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	c := &cli{stderr: &buf}
	c.f.progress = "always"
	bar := c.newPercentBar("data:process pending")
	bar.set(42.4, "computing: 42 of 100 rounds")
	bar.println("enqueue: attempt 1 of 2 failed: boom")
	bar.set(150, "computed and cached") // clamped to 100
	bar.finish(true, "done")
	bar.close() // a no-op after finish
	out := buf.String()
	for _, want := range []string{"data:process pending", "42%", "computing: 42 of 100 rounds", "attempt 1 of 2 failed: boom", "100%", "computed and cached"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q: %q", want, out)
		}
	}
	if strings.Contains(out, "done") {
		t.Errorf("finish replaced the task's last message with done: %q", out)
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("bar output does not end its line: %q", out)
	}
}

func TestPercentBarOff(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	c := &cli{stderr: &buf} // not a terminal: no bar under "auto"
	c.f.progress = "auto"
	bar := c.newPercentBar("x")
	bar.set(50, "half")
	bar.println("a retry note")
	bar.finish(true, "done")
	if got := buf.String(); got != "a retry note\n" {
		t.Errorf("output = %q, want only the note", got)
	}
}

// TestPercentBarAutoOnTerminal: under the default --progress auto, a
// terminal on stderr gets the bar, unless --json asks for output for
// programs.
func TestPercentBarAutoOnTerminal(t *testing.T) {
	t.Parallel()
	ptmx, tty := proctest.Terminal(t)
	read := make(chan string, 1)
	go func() {
		var buf bytes.Buffer
		b := make([]byte, 4096)
		for !strings.Contains(buf.String(), "\n") {
			n, err := ptmx.Read(b)
			buf.Write(b[:n])
			if err != nil {
				break
			}
		}
		read <- buf.String()
	}()

	c := &cli{stderr: tty}
	c.f.progress = "auto"
	c.f.json = true
	if c.showProgress() {
		t.Error("a bar under --json")
	}
	c.f.json = false
	if !c.showProgress() {
		t.Fatal("no bar on a terminal under --progress auto")
	}
	bar := c.newPercentBar("data:process active")
	bar.set(37, "computing: 37 of 100 rounds")
	bar.finish(true, "done")

	select {
	case out := <-read:
		for _, want := range []string{"37% |", "computing: 37 of 100 rounds", "100% |" + strings.Repeat("█", 30) + "|"} {
			if !strings.Contains(out, want) {
				t.Errorf("terminal output lacks %q: %q", want, out)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the bar wrote no line to the terminal within 5s")
	}
}
