package enqueue

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/config"
)

// flags holds the command's own flags; the connection settings are
// config's flags and reach the Config through config.Load.
type flags struct {
	payloadFile string
	opts        rawOptions // --queue, --delay, ... as typed
	wait        bool
	waitTimeout string
	file        string
	resend      string
	concurrency int
	batchSize   int // --batch-size: task lines per batch of --file (0: all)
	json        bool
	list        bool
	progress    string

	workflow       string // --workflow: JSON, @FILE or -
	workflowStatus string // --workflow-status ID
	cancelWorkflow string // --cancel-workflow ID
	cancel         string // --cancel [ID]: cancelNoValue when given without one (cancel.go)

	sched scheduleFlags // --schedule-put, --schedule-list, ... (schedule.go)

	args []string // positional: TYPE [PAYLOAD]
}

// Defaults of the command's own flags.
const (
	defaultConcurrency = 256
	maxConcurrency     = 1024
	defaultBatchSize   = 1000
)

// configFlagsShown are the config flags --help lists; the others (worker,
// web, cache tuning) still work but do not concern enqueueing.
var configFlagsShown = map[string]bool{
	"config":                         true,
	"redis-url":                      true,
	"redis-embedded-addr":            true,
	"redis-socket-timeout":           true,
	"redis-pool-size":                true,
	"redis-key-prefix":               true,
	"redis-tls-ca-file":              true,
	"redis-tls-cert-file":            true,
	"redis-tls-key-file":             true,
	"redis-tls-server-name":          true,
	"redis-tls-insecure-skip-verify": true,
}

// parse reads args into c.f. It returns pflag.ErrHelp for --help and an
// *inputError for anything it cannot make sense of.
func (c *cli) parse(args []string) (*pflag.FlagSet, error) {
	fs := pflag.NewFlagSet("enqueue", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	f := &c.f
	var maxRetry int
	var queue, delay, at, timeout, deadline, unique, id, retention, group string
	var dedupKey, dedupMode, dedupRelease, dedupMaxDelay string

	fs.StringVar(&f.payloadFile, "payload-file", "", "read the payload from `FILE` (- for stdin)")
	fs.StringVar(&queue, "queue", "", "queue `NAME` (default: the task type's queue)")
	fs.StringVar(&delay, "delay", "", "run after `DURATION` (\"90s\", \"1h30m\" or seconds)")
	fs.StringVar(&at, "at", "", "run at `TIME`, RFC 3339 (\"2030-01-02T15:04:05Z\")")
	fs.IntVar(&maxRetry, "max-retry", 0, "retry a failing task at most `N` times (default: the task type's)")
	fs.StringVar(&timeout, "timeout", "", "cancel an attempt after `DURATION`")
	fs.StringVar(&deadline, "deadline", "", "cancel the task at `TIME` (RFC 3339) or after DURATION from now")
	fs.StringVar(&unique, "unique", "", "refuse a second task of the same type, payload and queue for `DURATION` (at least 1s)")
	fs.StringVar(&id, "id", "", "task `ID` (default: a random UUID); a task id already in use is an error")
	fs.StringVar(&retention, "retention", "", "keep the finished task and its result for `DURATION` (default 0, or 1h under --wait)")
	fs.StringVar(&group, "group", "", "not supported: refused, since the worker runs no group aggregator (`NAME`)")
	fs.StringVar(&dedupKey, "dedup-key", "", "deduplicate by `KEY` while the task waits: a second enqueue with it in the queue does what --dedup-mode says")
	fs.StringVar(&dedupMode, "dedup-mode", "", "with --dedup-key: `MODE` keep (default: return the waiting task), replace (its payload) or debounce (replace and push its run time back)")
	fs.StringVar(&dedupRelease, "dedup-release", "", "with --dedup-key: free the key when the task `WHEN`s: start (default) or finish")
	fs.StringVar(&dedupMaxDelay, "dedup-max-delay", "", "with --dedup-mode debounce: push the run time back at most `DURATION` past the first enqueue")
	fs.IntVar(&f.batchSize, "batch-size", defaultBatchSize, "with --file, enqueue `N` task lines per batch, each batch all or nothing (0: the whole file)")
	fs.BoolVar(&f.wait, "wait", false, "wait for the task, or the workflows, to finish and print the outcome; exit 1 if one fails")
	fs.StringVar(&f.waitTimeout, "wait-timeout", "", "give up waiting after `DURATION` (default: no limit)")
	fs.StringVar(&f.file, "file", "", "enqueue every task of the JSON Lines `FILE` (- for stdin), each line checked before any is enqueued")
	fs.StringVar(&f.resend, "resend", "", "with --file, write the lines not enqueued to `FILE` (default: next to the input, as NAME.resend.jsonl, when some were not)")
	fs.IntVar(&f.concurrency, "concurrency", defaultConcurrency, "enqueue up to `N` tasks of a --file at once")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of text")
	fs.StringVar(&f.workflow, "workflow", "", "submit the workflow `JSON` (@FILE reads a file, - stdin), checked before anything is written")
	fs.StringVar(&f.workflowStatus, "workflow-status", "", "print the state of workflow `ID` and its first 100 steps")
	fs.StringVar(&f.cancelWorkflow, "cancel-workflow", "", "cancel workflow `ID`: no further step starts")
	fs.StringVar(&f.cancel, "cancel", "", "cancel task `ID` (more ids as arguments, or from --file): remove it from its queue, or stop it where it runs")
	fs.Lookup("cancel").NoOptDefVal = cancelNoValue
	c.registerScheduleFlags(fs)
	fs.BoolVar(&f.list, "list", false, "list the task types, this program's and those running workers published, with their payload fields")
	fs.StringVar(&f.progress, "progress", "auto", "progress bar on stderr: `MODE` auto (on a terminal, not with --json), always or never")
	help := fs.BoolP("help", "h", false, "show this help")
	version := fs.Bool("version", false, "print the program's version and exit")

	cfs := pflag.NewFlagSet("config", pflag.ContinueOnError)
	cfs.SortFlags = false
	config.RegisterFlags(cfs)
	cfs.VisitAll(func(fl *pflag.Flag) {
		if !configFlagsShown[fl.Name] {
			fl.Hidden = true
		}
	})
	fs.AddFlagSet(cfs)

	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return fs, err
		}
		return fs, badInput("%v (see %s --help)", err, c.prog)
	}
	if *help {
		return fs, pflag.ErrHelp
	}
	if *version {
		return fs, errVersion
	}
	f.args = fs.Args()

	o := &f.opts
	for _, s := range []struct {
		name string
		val  string
		dst  **string
	}{
		{"queue", queue, &o.Queue}, {"delay", delay, &o.Delay}, {"at", at, &o.At},
		{"timeout", timeout, &o.Timeout}, {"deadline", deadline, &o.Deadline},
		{"unique", unique, &o.Unique}, {"id", id, &o.ID},
		{"retention", retention, &o.Retention}, {"group", group, &o.Group},
		{"dedup-key", dedupKey, &o.DedupKey}, {"dedup-mode", dedupMode, &o.DedupMode},
		{"dedup-release", dedupRelease, &o.DedupRelease}, {"dedup-max-delay", dedupMaxDelay, &o.DedupMaxDelay},
	} {
		if fs.Changed(s.name) {
			*s.dst = &s.val
		}
	}
	if fs.Changed("max-retry") {
		o.MaxRetry = &maxRetry
	}

	switch f.progress {
	case "auto", "always", "never":
	default:
		return fs, badInput("--progress %q: want auto, always or never", f.progress)
	}
	if f.batchSize < 0 {
		return fs, badInput("--batch-size %d: must not be negative", f.batchSize)
	}
	if f.concurrency < 1 || f.concurrency > maxConcurrency {
		return fs, badInput("--concurrency %d: want 1 to %d", f.concurrency, maxConcurrency)
	}
	return fs, c.checkCombinations(fs)
}

// errVersion is parse's answer to --version.
var errVersion = errors.New("enqueue: --version")

// checkCombinations rejects flags and arguments that do not go together.
func (c *cli) checkCombinations(fs *pflag.FlagSet) error {
	f := &c.f
	only := func(mode string, allowed ...string) error {
		ok := map[string]bool{"json": true, "progress": true, "help": true}
		for _, a := range allowed {
			ok[a] = true
		}
		var bad []string
		fs.Visit(func(fl *pflag.Flag) {
			if !ok[fl.Name] && !isConfigFlag(fl.Name) {
				bad = append(bad, "--"+fl.Name)
			}
		})
		if len(bad) > 0 {
			return badInput("%s cannot be combined with %s", mode, strings.Join(bad, ", "))
		}
		return nil
	}
	switch {
	case scheduleMode(fs) != "":
		return c.checkSchedule(scheduleMode(fs), only)
	case fs.Changed("cancel"):
		return c.checkCancel(fs, only)
	case f.list:
		if len(f.args) > 0 {
			return badInput("--list takes no arguments, got %q", f.args)
		}
		return only("--list", "list")
	case f.file != "":
		if len(f.args) > 0 {
			return badInput("--file takes no TYPE or PAYLOAD arguments, got %q: the types and payloads are in the file", f.args)
		}
		if f.waitTimeout != "" && !f.wait {
			return badInput("--wait-timeout %q needs --wait", f.waitTimeout)
		}
		// Task options given as flags are defaults for every task line; a
		// task id cannot be shared. --wait follows the file's workflows.
		return only("--file", "file", "resend", "concurrency", "queue", "delay", "at", "max-retry",
			"timeout", "deadline", "unique", "retention", "group", "wait", "wait-timeout",
			"dedup-key", "dedup-mode", "dedup-release", "dedup-max-delay", "batch-size")
	case fs.Changed("workflow"):
		if len(f.args) > 0 {
			return badInput("--workflow takes no TYPE or PAYLOAD arguments, got %q: the steps are in the workflow's JSON", f.args)
		}
		if f.workflow == "" || f.workflow == "@" {
			return badInput("--workflow %q: want the workflow's JSON, @FILE or - for stdin", f.workflow)
		}
		if f.waitTimeout != "" && !f.wait {
			return badInput("--wait-timeout %q needs --wait", f.waitTimeout)
		}
		// A workflow's steps carry their own options in its JSON.
		return only("--workflow", "workflow", "wait", "wait-timeout")
	case fs.Changed("workflow-status"), fs.Changed("cancel-workflow"):
		flag, id := "--workflow-status", f.workflowStatus
		if fs.Changed("cancel-workflow") {
			flag, id = "--cancel-workflow", f.cancelWorkflow
		}
		if len(f.args) > 0 {
			return badInput("%s takes no other arguments, got %q", flag, f.args)
		}
		if id == "" {
			return badInput("%s needs a workflow ID", flag)
		}
		return only(flag, flag[2:])
	}
	switch len(f.args) {
	case 0:
		return badInput("missing TYPE: usage: %[1]s TYPE [PAYLOAD], %[1]s --file FILE, %[1]s --workflow JSON or %[1]s --list (see %[1]s --help)", c.prog)
	case 1:
	case 2:
		if f.payloadFile != "" {
			return badInput("the payload is given twice: as the argument %q and with --payload-file %q", abbrev(f.args[1]), f.payloadFile)
		}
	default:
		return badInput("too many arguments %q: usage: enqueue TYPE [PAYLOAD] (quote the JSON payload)", f.args[2:])
	}
	if fs.Changed("concurrency") {
		return badInput("--concurrency only applies to --file")
	}
	if fs.Changed("resend") {
		return badInput("--resend only applies to --file")
	}
	if f.waitTimeout != "" && !f.wait {
		return badInput("--wait-timeout %q needs --wait", f.waitTimeout)
	}
	return nil
}

func isConfigFlag(name string) bool {
	if name == "config" {
		return true
	}
	for _, s := range config.Settings() {
		if s.Flag == "--"+name {
			return true
		}
	}
	return false
}

// abbrev shortens s for an error message.
func abbrev(s string) string {
	const max = 60
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// waitTimeout parses --wait-timeout; 0 means no limit.
func (c *cli) waitTimeout() (time.Duration, error) {
	if c.f.waitTimeout == "" {
		return 0, nil
	}
	d, err := parseDuration(c.f.waitTimeout)
	if err != nil {
		return 0, badInput("--wait-timeout %q: %v", c.f.waitTimeout, err)
	}
	return d, nil
}

const usageText = `enqueue puts forgeq tasks on their queues and submits workflows.

Usage:
  enqueue [flags] TYPE [PAYLOAD]     one task; PAYLOAD is JSON (- reads stdin)
  enqueue [flags] --file FILE        every task and workflow of a JSON Lines file, checked first
  enqueue [--wait] --workflow JSON   one workflow (@FILE reads a file, - stdin)
  enqueue --workflow-status ID       a workflow's state and its first 100 steps
  enqueue --cancel-workflow ID       cancel a workflow
  enqueue --cancel ID [ID...]        cancel tasks (--file FILE: ids from a file)
  enqueue --list [--json]            the task types and their payload fields
  enqueue --schedule-put JSON        add or replace a periodic entry stored in Redis
  enqueue --schedule-list            the periodic entries stored in Redis
  enqueue --schedule-pause NAME      pause one (--schedule-resume, --schedule-remove)

The payload comes from the PAYLOAD argument, --payload-file, or stdin when it
is not a terminal; no payload at all means {}. It is checked against the task
type before anything is enqueued.

A TYPE this program does not define is looked up in the task catalogue that
running workers publish in Redis: the payload is checked against the JSON
Schema the worker published, and the task gets the published queue, retries
and timeout. --list shows the published types too, with the workers serving
them.

Examples:
  enqueue --list
  enqueue data:process '{"key": "report:1", "work": 1000}'
  enqueue data:process '{"key": "report:1", "work": 1000}' --wait
  echo '{"pattern": "user:*"}' | enqueue cache:invalidate --delay 30s
  enqueue cache:warm --payload-file warm.json --queue low --at 2030-01-02T03:00:00Z
  enqueue data:process '{"key": "r:2", "work": 5}' --id nightly-r2 --unique 1h --json
  enqueue --file tasks.jsonl --queue low
  enqueue --workflow @nightly.json --wait
  enqueue --workflow '{"workflow": {"chain": [{"type": "data:process", "payload": {"key": "a", "work": 1}}, {"type": "cache:warm", "payload": {"keys": ["a"], "work": 1}}]}}'
  enqueue --workflow-status nightly-2030-01-02 --json
  enqueue --cancel-workflow nightly-2030-01-02
  enqueue --schedule-put '{"name": "purge-tmp", "spec": "@every 30s", "type": "cache:invalidate", "payload": {"pattern": "tmp:*"}}'
  enqueue --schedule-pause purge-tmp
  enqueue --cancel 5f1c9e0a-4a4b-4d3e-9a57-2b8f4c1d2e3f --queue default
  enqueue --cancel --file ids.txt --json

A --file line is one JSON object:
  {"type": "data:process", "payload": {"key": "r:1", "work": 10}, "queue": "low",
   "delay": "10s", "id": "r-1", "max_retry": 3, "timeout": "5m"}
with the optional fields queue, delay, at, max_retry, timeout, deadline,
unique, id, retention, dedup_key, dedup_mode, dedup_release and
dedup_max_delay, named and parsed like the flags; a duration
is a string ("90s") or a number of seconds. Task flags given with --file are
defaults for every line. Every line is checked first: one bad line, a task id
used twice, the same unique task twice, or a task id its queue already has in
Redis, and nothing is enqueued (exit 2). The task lines then go in batches of
--batch-size lines (default 1000; 0: the whole file), one script per batch
(per queue on a cluster), each all or nothing. The check cannot see
uniqueness locks in Redis, dedup keys held by a running task, nor an id another
producer takes meanwhile: such a task fails its whole batch when it is
enqueued, the summary names its line, the other batches are enqueued, and the
exit code is 1. A
task id already in Redis with the same type and payload is that line,
enqueued before: it counts as enqueued. A Redis failure part-way (an error, or
no answer within REDIS_SOCKET_TIMEOUT) stops the run within about two socket
timeouts; the tasks enqueued before it stay, and the tasks whose writes were
in flight are looked up by id when Redis answers, or else counted as unknown.
The summary counts the tasks enqueued, failed, unknown and not attempted, and
the lines of all but the enqueued ones go to a resend file (--resend, default
NAME.resend.jsonl next to the input), each with its task id, so that
` + "`enqueue --file NAME.resend.jsonl`" + ` completes the run without enqueuing a
task twice.

Workflows: --workflow submits a chain or group of tasks as one workflow, in
the JSON form the HTTP API (POST /api/workflows) takes:
  {"workflow": {"chain": [
      {"type": "data:process", "payload": {"key": "r:1", "work": 10}},
      {"group": [
         {"type": "cache:warm", "payload": {"keys": ["r:1"], "work": 1}},
         {"chain": [{"type": "data:process", "payload": {"key": "r:2", "work": 5}},
                    {"type": "cache:invalidate", "payload": {"pattern": "r:*"}}]}],
       "callback": {"type": "data:process", "payload": {"key": "done", "work": 1}},
       "policy": "all_succeeded"}]},
   "id": "nightly-2030-01-02", "name": "nightly", "retention": "72h"}
A node is a task {"type", "payload", and optionally "queue", "max_retry",
"timeout", "deadline", "retention"}, a {"chain": [NODE, ...]} run one after
another, or a {"group": [NODE, ...]} run in parallel, with an optional
"callback" NODE run once all members finished and a "policy": all_succeeded
(the default: the callback runs only if every member succeeded) or always.
id (default: a random UUID; an id already in use is refused), name and
retention (how long the finished workflow stays readable) are optional.
Steps are named by their path: the root chain's steps 0, 1, ...; a group's
members 1.m0, 1.m1, its callback 1.cb; a nested chain's steps 1.m1.0. Every
step's type, payload and options are checked against this program's types and
the task catalogue before anything is written: a bad step is bad input naming
the step and its type (exit 2). The workflow's id is printed (with --json:
id, name, total, started, status_url). --list says which types take the
previous step's result ("takes previous result").

A --file line may hold a workflow instead of a task: {"workflow": NODE, "id":
..., "name": ..., "retention": ...}. It is checked with the other lines, all
before anything is enqueued; a bad one names its line and step. Each workflow
is submitted whole or not at all. Task flags given with --file apply to task
lines only. A workflow id already in Redis is a bad line.

--wait follows the workflow (with --file: every workflow of the file, once all
lines are in) with one bar of the steps done, on a terminal and not with
--json; then prints how it ended (the state as JSON with --json). It exits 0
when every workflow succeeded and 1 when one failed (naming the failed step
and its error), was cancelled, or --wait-timeout ran out.

Flags:
%s
Connection (flag, or environment variable as in the worker):
%s
Tracing (OpenTelemetry) is on when an OTEL_* variable turns it on, as in the
worker (OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318, OTEL_TRACES_EXPORTER,
OTEL_SERVICE_NAME, ...; see the README's Tracing): each run is a trace, or
continues the one in TRACEPARENT (and TRACESTATE, BAGGAGE), and the tasks it
enqueues carry it to their handlers. --wait follows the task's events and
reads its state once a second besides (as often as polling when the queue
has no event stream yet); with WORKER_EVENTS=false, set as the workers have
it, it polls the state instead.

With no Redis URL configured, enqueue connects to the Redis at
REDIS_EMBEDDED_ADDR (default 127.0.0.1:6379), the address where
` + "`go run ./cmd/worker`" + ` with the same settings uses a Redis or serves its
embedded one.

Exit codes: 0 success; 2 bad usage or input, nothing enqueued; 1 runtime
failure (Redis unreachable; under --wait, the task was archived, a workflow
failed or was cancelled, or the wait ended first; with --file, some lines
could not be enqueued while the others were).
  --workflow-status ID: 0 whatever the workflow's status; 2 no such workflow
    (never submitted, or its retention ran out); 1 Redis failure.
  --cancel-workflow ID: 0 cancelled; 2 no such workflow; 1 already finished
    (succeeded, failed or cancelled: nothing to cancel) or Redis failure.
  --cancel ID...: 0 every task cancelled; 2 an unknown task id, an id in
    several queues without --queue, or a bad --file line (then nothing is
    cancelled); 1 a task already finished (completed, archived or cancelled
    before) or Redis failure. A --file line is a task id or
    {"id": ..., "queue": ...}; without a queue, every queue is searched.
  --schedule-put, --schedule-pause, --schedule-resume, --schedule-remove,
  --schedule-list: 0 done; 2 an entry refused (nothing written) or a NAME
    no entry stored in Redis has; 1 Redis failure.
`

// usage writes --help to w.
func (c *cli) usage(w io.Writer, fs *pflag.FlagSet) {
	own := pflag.NewFlagSet("own", pflag.ContinueOnError)
	conn := pflag.NewFlagSet("conn", pflag.ContinueOnError)
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Hidden {
			return
		}
		if isConfigFlag(fl.Name) {
			conn.AddFlag(fl)
		} else {
			own.AddFlag(fl)
		}
	})
	own.SortFlags, conn.SortFlags = false, false
	text := strings.Replace(usageText, "enqueue puts", c.prog+" puts", 1)
	text = strings.ReplaceAll(text, "\n  enqueue ", "\n  "+c.prog+" ")
	fmt.Fprintf(w, text, own.FlagUsages(), conn.FlagUsages())
}
