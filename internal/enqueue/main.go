// Package enqueue is the enqueue command: it puts tasks on their queues,
// one from the command line or many from a JSON Lines file, optionally
// waiting for a task's result; submits workflows (package workflow), reads
// their state and cancels them; and lists the task types. The public
// worker package runs it as `NAME enqueue` and cmd/enqueue as `enqueue`.
//
// Exit codes: 0 success, 2 bad usage or input (nothing was enqueued; an
// unknown workflow id), 1 a runtime failure (Redis unreachable, a task
// that failed or was archived or a workflow that failed or was cancelled
// under --wait, a bulk enqueue that did not enqueue everything, a workflow
// already finished under --cancel-workflow). --cancel: 0 every task
// cancelled, 2 an unknown task id (or bad input), else 1 (a task already
// finished, Redis failing).
package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/internal/buildinfo"
	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad usage or input; nothing was enqueued
)

// Params are what a run of the command reads and writes.
type Params struct {
	// Prog is the command's name in messages: "enqueue", or "reports
	// enqueue" for a program's own.
	Prog string
	// Registry holds the task types the program knows; others are looked
	// up in the task catalogue.
	Registry *tasks.Registry
	// Getenv reads the environment.
	Getenv func(string) string
	// Stdin, Stdout and Stderr; a nil Stdin is empty.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Run is the whole command: it parses args (without the program name),
// reads the environment only through p.Getenv and returns the exit code,
// so tests call it in-process.
func Run(ctx context.Context, p Params, args []string) int {
	stdin := p.Stdin
	if stdin == nil {
		stdin = eofReader{}
	}
	if p.Prog == "" {
		p.Prog = "enqueue"
	}
	if p.Registry == nil {
		p.Registry = tasks.Default()
	}
	c := &cli{
		prog:   p.Prog,
		reg:    p.Registry,
		getenv: p.Getenv,
		stdin:  stdin,
		stdout: p.Stdout,
		stderr: p.Stderr,
		now:    time.Now,
	}
	err := c.run(ctx, args)
	var inErr *inputError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &inErr):
		c.reportError(err, inErr.lines)
		return exitUsage
	default:
		c.reportError(err, nil)
		return exitFailure
	}
}

// cli is one run of the command.
type cli struct {
	prog   string // the command's name in messages
	reg    *tasks.Registry
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time
	// stateCheck, when set (tests), replaces stateCheck, the pause between
	// the state reads of a wait that follows events.
	stateCheck time.Duration

	f flags // set by parse
}

// inputError marks an error in the command line or its input: the command
// exits with exitUsage, and nothing was enqueued.
type inputError struct {
	err   error
	lines []lineError // bad lines of a --file, if that is what is wrong
}

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// badInput returns an *inputError formatted like fmt.Errorf.
func badInput(format string, args ...any) error {
	return &inputError{err: fmt.Errorf(format, args...)}
}

// lineError is what is wrong with one line of a --file.
type lineError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// reportError writes err to stderr and, under --json, also as a JSON object
// to stdout so that scripts reading stdout see it. Its control characters
// are escaped on stderr, as they are in the JSON.
func (c *cli) reportError(err error, lines []lineError) {
	fmt.Fprintf(c.stderr, "%s: %s\n", c.prog, termtext.Escape(err.Error()))
	for _, l := range lines {
		fmt.Fprintf(c.stderr, "  line %d: %s\n", l.Line, termtext.Escape(l.Error))
	}
	if c.f.json && !errors.As(err, new(silentError)) {
		writeJSON(c.stdout, struct {
			Error    string      `json:"error"`
			BadLines []lineError `json:"bad_lines,omitempty"`
		}{err.Error(), lines})
	}
}

func (c *cli) run(ctx context.Context, args []string) error {
	fs, err := c.parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		c.usage(c.stdout, fs)
		return nil
	}
	if errors.Is(err, errVersion) {
		fmt.Fprint(c.stdout, buildinfo.Text(c.prog))
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case scheduleMode(fs) != "":
		return c.traced(ctx, "schedule", func(ctx context.Context) error { return c.schedule(ctx, fs, scheduleMode(fs)) })
	case fs.Changed("cancel"):
		return c.traced(ctx, "cancel", func(ctx context.Context) error { return c.cancel(ctx, fs) })
	case c.f.list:
		return c.list(ctx, fs)
	case c.f.file != "":
		return c.traced(ctx, "bulk", func(ctx context.Context) error { return c.bulk(ctx, fs) })
	case fs.Changed("workflow"):
		return c.traced(ctx, "workflow", func(ctx context.Context) error { return c.submitWorkflow(ctx, fs) })
	case fs.Changed("workflow-status"):
		return c.workflowStatus(ctx, fs)
	case fs.Changed("cancel-workflow"):
		return c.traced(ctx, "cancel-workflow", func(ctx context.Context) error { return c.cancelWorkflow(ctx, fs) })
	default:
		return c.traced(ctx, "single", func(ctx context.Context) error { return c.single(ctx, fs) })
	}
}

// QuietRedis discards go-redis's log: the command reports Redis errors
// itself. Set it with redis.SetLogger in main.
type QuietRedis struct{}

// Printf discards its arguments.
func (QuietRedis) Printf(context.Context, string, ...any) {}

// eofReader is an empty stdin.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// silentError is an error whose details are already on stdout as JSON: it
// goes to stderr only.
type silentError struct{ err error }

func (e silentError) Error() string { return e.err.Error() }
func (e silentError) Unwrap() error { return e.err }

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
