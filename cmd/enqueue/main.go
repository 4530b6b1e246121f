// Command enqueue puts forgeq tasks on their queues: one task from the
// command line, many from a JSON Lines file, optionally waiting for a task's
// result. It lists the task types with --list. Run it with --help for the
// flags and examples.
//
// Exit codes: 0 success, 2 bad usage or input (nothing was enqueued), 1 a
// runtime failure (Redis unreachable, a task that failed or was archived
// under --wait, a bulk enqueue that did not enqueue everything).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/tasks"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad usage or input; nothing was enqueued
)

func main() {
	// enqueue reports Redis errors itself; go-redis's own log lines about
	// them would only repeat them.
	redis.SetLogger(quietRedis{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command. It reads the environment only through getenv
// and returns the exit code, so tests call it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if stdin == nil {
		stdin = eofReader{}
	}
	c := &cli{
		reg:    tasks.Default(),
		getenv: getenv,
		stdin:  stdin,
		stdout: stdout,
		stderr: stderr,
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
	reg    *tasks.Registry
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time

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
// to stdout so that scripts reading stdout see it.
func (c *cli) reportError(err error, lines []lineError) {
	fmt.Fprintf(c.stderr, "enqueue: %v\n", err)
	if len(lines) > 0 {
		for _, l := range lines {
			fmt.Fprintf(c.stderr, "  line %d: %s\n", l.Line, l.Error)
		}
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
	if err != nil {
		return err
	}
	switch {
	case c.f.list:
		return c.list()
	case c.f.file != "":
		return c.bulk(ctx, fs)
	default:
		return c.single(ctx, fs)
	}
}

// quietRedis discards go-redis's log.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

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
