package proctest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// failTail is how much of a process's output a failed test prints.
const failTail = 64 << 10

// Proc is a process started by Start. Its methods are safe for concurrent
// use; those that can fail report it with an error rather than failing the
// test, so they may be called from any goroutine.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	out     *output
	logFile string

	done    chan struct{} // closed when the process has exited
	waitErr error         // of cmd.Wait, set before done is closed
}

// Start starts the binary at path with args, its stdout and stderr
// captured. The process's environment is PATH, HOME and TMPDIR from the
// test's environment, then env ("KEY=value"; later entries win), so
// settings of the developer's shell do not leak in. Its stdin is empty
// and its working directory the test's.
//
// At cleanup a process still running is killed and waited for. When the
// test failed, the tail of the output is logged and, with
// FORGEQ_ARTIFACTS_DIR set, the whole output is copied there. A -race
// binary that reported a data race fails the test.
func Start(tb testing.TB, path string, env []string, args ...string) *Proc {
	tb.Helper()
	return start(tb, failTail, false, path, env, args...)
}

// start is Start, printing at most tail bytes of the output when the test
// fails, with the process on a pseudo-terminal when terminal is true (see
// StartTerminal).
func start(tb testing.TB, tail int, terminal bool, path string, env []string, args ...string) *Proc {
	tb.Helper()

	dir := tb.TempDir()
	logFile := filepath.Join(dir, filepath.Base(path)+".log")
	f, err := os.Create(logFile)
	if err != nil {
		tb.Fatal(err)
	}

	cmd := exec.Command(path, args...)
	cmd.Env = baseEnv()
	cmd.Env = append(cmd.Env, env...)
	out := &output{file: f}
	var term *terminalOutput
	if terminal {
		var err error
		if term, err = startOnTerminal(cmd, out.stream(&out.stderr)); err != nil {
			f.Close()
			tb.Fatalf("proctest: start %s on a terminal: %v", path, err)
		}
	} else {
		cmd.Stdout = out.stream(&out.stdout)
		cmd.Stderr = out.stream(&out.stderr)
		// A grandchild holding the output pipes open must not keep Wait
		// from returning once the process itself has exited.
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			f.Close()
			tb.Fatalf("proctest: start %s: %v", path, err)
		}
	}
	p := &Proc{
		name:    fmt.Sprintf("%s[%d]", filepath.Base(path), cmd.Process.Pid),
		cmd:     cmd,
		out:     out,
		logFile: logFile,
		done:    make(chan struct{}),
	}
	go func() {
		p.waitErr = cmd.Wait() // with pipes, returns after stdout and stderr are copied
		if term != nil {
			term.drain()
		}
		out.flush()
		close(p.done)
	}()

	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
			_ = cmd.Process.Kill()
			<-p.done
		}
		f.Close()
		logs := p.Logs()
		if strings.Contains(logs, "WARNING: DATA RACE") {
			tb.Errorf("proctest: %s reported a data race", p.name)
		}
		if tb.Failed() {
			shown := logs
			if len(shown) > tail {
				shown = "...\n" + shown[len(shown)-tail:]
			}
			tb.Logf("proctest: output of %s %s:\n%s", p.name, strings.Join(args, " "), shown)
			saveArtifact(tb, p.name, logs)
		}
	})
	return p
}

// baseEnv returns the variables every process inherits from the test.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// saveArtifact copies a failed test's process output to
// FORGEQ_ARTIFACTS_DIR, when set.
func saveArtifact(tb testing.TB, name, logs string) {
	dir := os.Getenv("FORGEQ_ARTIFACTS_DIR")
	if dir == "" {
		return
	}
	safe := strings.NewReplacer("/", "_", " ", "_", "[", "-", "]", "").Replace(tb.Name() + "-" + name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Logf("proctest: save output of %s: %v", name, err)
		return
	}
	dst := filepath.Join(dir, safe+".log")
	if err := os.WriteFile(dst, []byte(logs), 0o644); err != nil {
		tb.Logf("proctest: save output of %s: %v", name, err)
		return
	}
	tb.Logf("proctest: output of %s saved in %s", name, dst)
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// String returns the binary's name and the pid, as "worker[1234]".
func (p *Proc) String() string { return p.name }

// LogFile returns the path of the file the output is also written to. It is
// in the test's temp dir, so it is removed when the test ends.
func (p *Proc) LogFile() string { return p.logFile }

// Signal sends sig to the process. Sending to a process that has exited is
// an error.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("proctest: signal %s to %s: %w", sig, p.name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process and waits for it to exit. Killing a
// process that has already exited does nothing.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Done returns a channel closed when the process has exited and its output
// has been read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ErrTimeout is returned by Wait when the process is still running.
var ErrTimeout = errors.New("proctest: process still running")

// Wait waits up to timeout for the process to exit and returns its exit
// code: -1 when a signal killed it. It returns ErrTimeout when the process
// is still running after timeout, and another error when waiting failed.
func (p *Proc) Wait(timeout time.Duration) (exitCode int, err error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		return -1, fmt.Errorf("%w: %s after %v", ErrTimeout, p.name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0, nil
	case errors.As(p.waitErr, &ee):
		return ee.ExitCode(), nil
	default:
		return -1, fmt.Errorf("proctest: wait for %s: %w", p.name, p.waitErr)
	}
}

// Logs returns the output so far, stdout and stderr interleaved by line.
func (p *Proc) Logs() string { return p.out.all() }

// Stdout returns what the process wrote to stdout so far.
func (p *Proc) Stdout() string { return p.out.get(&p.out.stdout) }

// Stderr returns what the process wrote to stderr so far.
func (p *Proc) Stderr() string { return p.out.get(&p.out.stderr) }

// WaitForLog waits up to timeout until the output contains substr, and
// reports whether it does. It returns early, false, when the process exits
// without having written it.
func (p *Proc) WaitForLog(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.Logs(), substr) {
			return true
		}
		if p.Exited() {
			return strings.Contains(p.Logs(), substr)
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitForMsg waits up to timeout until a JSON log line has "msg" equal to
// msg, and returns the first such line, or nil when none came (or the
// process exited without writing one).
func (p *Proc) WaitForMsg(msg string, timeout time.Duration) map[string]any {
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited()
		if ls := p.LogLinesWithMsg(msg); len(ls) > 0 {
			return ls[0]
		}
		if exited || time.Now().After(deadline) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// JSONLogLines returns the lines of the output so far that are JSON
// objects, decoded, in order; other lines are skipped.
func (p *Proc) JSONLogLines() []map[string]any { return JSONLines(p.Logs()) }

// JSONLines returns the lines of text that are JSON objects, decoded, in
// order; other lines are skipped. It reads a zap JSON log.
func JSONLines(text string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 || b[0] != '{' {
			continue
		}
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// LogLinesWithMsg returns the JSON log lines whose "msg" is msg.
func (p *Proc) LogLinesWithMsg(msg string) []map[string]any {
	return WithMsg(p.JSONLogLines(), msg)
}

// WithMsg returns the lines whose "msg" is msg.
func WithMsg(lines []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// output collects a process's stdout and stderr. Each stream is kept on
// its own, and both go, a whole line at a time, to one interleaved log and
// its file. It is safe for concurrent use.
type output struct {
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	log    bytes.Buffer
	file   *os.File
	parts  []*lineWriter
}

// lineWriter is one stream of an output.
type lineWriter struct {
	o       *output
	raw     *bytes.Buffer
	partial []byte // the stream's unfinished last line
}

func (o *output) stream(raw *bytes.Buffer) io.Writer {
	w := &lineWriter{o: o, raw: raw}
	o.parts = append(o.parts, w)
	return w
}

func (w *lineWriter) Write(b []byte) (int, error) {
	o := w.o
	o.mu.Lock()
	defer o.mu.Unlock()
	w.raw.Write(b)
	w.partial = append(w.partial, b...)
	if i := bytes.LastIndexByte(w.partial, '\n'); i >= 0 {
		o.appendLog(w.partial[:i+1])
		w.partial = append(w.partial[:0], w.partial[i+1:]...)
	}
	return len(b), nil
}

// appendLog adds whole lines to the log; o.mu is held.
func (o *output) appendLog(b []byte) {
	o.log.Write(b)
	if o.file != nil {
		_, _ = o.file.Write(b)
	}
}

// flush moves unfinished last lines to the log, once the process is gone.
func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.parts {
		if len(w.partial) > 0 {
			o.appendLog(append(w.partial, '\n'))
			w.partial = nil
		}
	}
}

func (o *output) all() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.log.String()
}

func (o *output) get(b *bytes.Buffer) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return b.String()
}
