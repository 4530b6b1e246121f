package proctest

import (
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/creack/pty"
)

// Size of the pseudo-terminal StartTerminal gives a process.
const (
	terminalRows = 40
	terminalCols = 120
)

// terminalDrainTimeout bounds how long a process's terminal output is still
// read after the process has exited.
const terminalDrainTimeout = 5 * time.Second

// StartTerminal is Start with the process's stdin, stdout and stderr on a
// new pseudo-terminal of 40 rows and 120 columns, as when a person runs it
// in a terminal window: a program that checks whether it writes to a
// terminal finds one, and its stdin is that terminal (it reads no input
// from it). The process leads its own session, with the terminal as its
// controlling terminal.
//
// A terminal merges stdout and stderr into one stream, which is what
// Stderr returns, raw (with the terminal's "\r\n" line ends and any escape
// sequences); Logs has its whole lines and Stdout is empty.
func StartTerminal(tb testing.TB, path string, env []string, args ...string) *Proc {
	tb.Helper()
	return start(tb, failTail, true, path, env, args...)
}

// Terminal opens a new pseudo-terminal for a test that hands tty to code
// of its own (as a logger's or a progress bar's output) and reads what it
// draws from ptmx. Cleanup closes both.
func Terminal(tb testing.TB) (ptmx, tty *os.File) {
	tb.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		tb.Fatalf("proctest: open a pseudo-terminal: %v", err)
	}
	tb.Cleanup(func() {
		tty.Close()
		ptmx.Close()
	})
	return ptmx, tty
}

// terminalOutput copies what a process writes to its terminal.
type terminalOutput struct {
	ptmx   *os.File      // the terminal's master side
	copied chan struct{} // closed when the copy has ended
}

// startOnTerminal starts cmd on a new pseudo-terminal and copies the
// terminal's output to w until the process and everything it started
// have closed the terminal.
func startOnTerminal(cmd *exec.Cmd, w io.Writer) (*terminalOutput, error) {
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: terminalRows, Cols: terminalCols})
	if err != nil {
		return nil, err
	}
	t := &terminalOutput{ptmx: ptmx, copied: make(chan struct{})}
	go func() {
		// Reading ends with EIO once no process has the terminal open.
		_, _ = io.Copy(w, ptmx)
		close(t.copied)
	}()
	return t, nil
}

// drain waits, after the process has exited, until its output has been
// read, and closes the terminal. A process it started that still holds the
// terminal open stops the wait after terminalDrainTimeout.
func (t *terminalOutput) drain() {
	select {
	case <-t.copied:
	case <-time.After(terminalDrainTimeout):
	}
	_ = t.ptmx.Close()
}
