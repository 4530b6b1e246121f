package tasks

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
)

// Limits of the options a task may be given, wherever it is enqueued from
// (NewTask, the enqueue CLI, POST /api/tasks/{type}); CheckOption enforces
// them.
const (
	// MaxNameLen is the longest queue name or task id, in bytes.
	MaxNameLen = 128
	// MaxOptionDuration bounds a delay, a timeout, a unique lock and a
	// retention, and how far ahead a process-at time may be: 366 days.
	MaxOptionDuration = 366 * 24 * time.Hour
	// MaxRetryLimit is the largest retry limit a task may have.
	MaxRetryLimit = 1000
	// ProcessAtSkew is how far in the past a process-at time may be: a
	// time up to this old (clocks apart, a time computed just before)
	// runs the task now; an older one is refused as a mistake.
	ProcessAtSkew = time.Minute
)

// The rule texts of the name checks, shared with the worker's queue list
// (config's WORKER_QUEUES).
const (
	nameChars    = "A-Z a-z 0-9 . _ : -"
	ruleBadChar  = "has a character outside " + nameChars
	ruleNoName   = "is empty; want 1 to 128 of " + nameChars
	ruleTooLong  = "is %d bytes, over the %d-byte limit"
	ruleTooFar   = "want at most 366 days"
	ruleNegative = "must not be negative"
	rulePast     = "is in the past (now is %s)"
)

// ErrInvalidOption is wrapped by the error of an option asynq would not
// honour as given, or that breaks a rule of CheckOption.
var ErrInvalidOption = errors.New("tasks: invalid option")

// OptionError is the error of an option CheckOption, CheckQueueName or
// CheckTaskID refuses. It wraps ErrInvalidOption. Its message is
// `queue "bad queue!": has a character outside A-Z a-z 0-9 . _ : -`; an
// entry point that names options its own way (a flag, a JSON field) and
// has the value as the user wrote it renders it with Named, keeping Rule.
type OptionError struct {
	// Option names the option: queue, id, delay, process_at, deadline,
	// timeout, unique, max_retry, retention or group.
	Option string
	// Value is the value given, as text (a duration as Go prints it, a
	// time in RFC 3339).
	Value string
	// Rule is the rule the value breaks, e.g. "must not be negative".
	Rule string
}

// Error returns `<Option> "<Value>": <Rule>`, the value abbreviated past
// 64 bytes.
func (e *OptionError) Error() string { return e.Named(e.Option, e.Value).Error() }

// Unwrap returns ErrInvalidOption.
func (e *OptionError) Unwrap() error { return ErrInvalidOption }

// Named returns e as an entry point shows it: name is how the user gave
// the option ("--queue", `field "queue"`), value the text they wrote (a
// duration as "0.5" rather than 500ms). Its message is `<name> "<value>":
// <Rule>`, the value quoted as Go does and abbreviated past 64 bytes; it
// wraps e.
func (e *OptionError) Named(name, value string) error {
	return &namedOptionError{msg: fmt.Sprintf("%s %s: %s", name, quoteValue(value), e.Rule), err: e}
}

type namedOptionError struct {
	msg string
	err *OptionError
}

func (e *namedOptionError) Error() string { return e.msg }
func (e *namedOptionError) Unwrap() error { return e.err }

// quoteValue quotes v, abbreviated to its first 64 bytes (whole runes)
// and its length when it is longer: a 100 KB id is not echoed back.
func quoteValue(v string) string {
	const show = 64
	if len(v) <= show {
		return strconv.Quote(v)
	}
	cut := show
	for cut > show-utf8.UTFMax && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(v[:cut]), len(v))
}

// CheckQueueName checks a queue name as every enqueue and the worker's
// queue list do: 1 to MaxNameLen bytes of A-Z a-z 0-9 . _ : -, so that it
// is safe in Redis keys (no braces to upset a cluster's hash tags), URLs
// and logs. The error is an *OptionError.
func CheckQueueName(name string) error { return checkName("queue", name) }

// CheckTaskID checks a task id given to an enqueue: 1 to MaxNameLen
// bytes of A-Z a-z 0-9 . _ : -, as for queue names, so that it can be
// read back (GET /api/tasks/{queue}/{id}) and logged. The error is an
// *OptionError.
func CheckTaskID(id string) error { return checkName("id", id) }

func checkName(option, v string) error {
	rule := ""
	switch {
	case v == "":
		rule = ruleNoName
	case len(v) > MaxNameLen:
		rule = fmt.Sprintf(ruleTooLong, len(v), MaxNameLen)
	default:
		for i := range len(v) {
			if c := v[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '-' || c == '_' || c == '.' || c == ':') {
				rule = ruleBadChar
				break
			}
		}
	}
	if rule == "" {
		return nil
	}
	return &OptionError{Option: option, Value: v, Rule: rule}
}

// CheckMaxRetry checks a retry limit: 0 to MaxRetryLimit. An entry point
// checks the number it was given with it before making the option, since
// asynq.MaxRetry turns a negative number into 0. The error is an
// *OptionError.
func CheckMaxRetry(n int) error {
	switch {
	case n < 0:
		return &OptionError{Option: "max_retry", Value: strconv.Itoa(n), Rule: ruleNegative}
	case n > MaxRetryLimit:
		return &OptionError{Option: "max_retry", Value: strconv.Itoa(n), Rule: "want at most 1000"}
	}
	return nil
}

// CheckOption checks one asynq option as every NewTask does, at now (the
// reference for process-at times and deadlines):
//
//   - queue: CheckQueueName; id (TaskID): CheckTaskID;
//   - delay (ProcessIn): 0 to MaxOptionDuration;
//   - process_at (ProcessAt): at most ProcessAtSkew in the past, at most
//     MaxOptionDuration ahead;
//   - deadline: in the future;
//   - timeout: 1s to MaxOptionDuration (asynq keeps whole seconds, and
//     reads 0 as its 30-minute default);
//   - unique: 1s (asynq's minimum) to MaxOptionDuration;
//   - max_retry: 0 to MaxRetryLimit (CheckMaxRetry);
//   - retention: 0 to MaxOptionDuration;
//   - group: refused, since a forgeq worker runs no group aggregator, so
//     asynq would keep a grouped task in its group and never run it.
//
// The error is an *OptionError, which wraps ErrInvalidOption.
func CheckOption(o asynq.Option, now time.Time) error {
	fail := func(option, value, rule string) error {
		return &OptionError{Option: option, Value: value, Rule: rule}
	}
	dur := func(option string, least time.Duration, under string) error {
		d, _ := o.Value().(time.Duration)
		switch {
		case d < least:
			return fail(option, d.String(), under)
		case d > MaxOptionDuration:
			return fail(option, d.String(), ruleTooFar)
		}
		return nil
	}
	switch o.Type() {
	case asynq.QueueOpt:
		s, _ := o.Value().(string)
		return CheckQueueName(s)
	case asynq.TaskIDOpt:
		s, _ := o.Value().(string)
		return CheckTaskID(s)
	case asynq.ProcessInOpt:
		return dur("delay", 0, ruleNegative)
	case asynq.ProcessAtOpt:
		t, _ := o.Value().(time.Time)
		switch {
		case t.Before(now.Add(-ProcessAtSkew)):
			return fail("process_at", t.Format(time.RFC3339Nano), fmt.Sprintf(rulePast, now.UTC().Format(time.RFC3339)))
		case t.Sub(now) > MaxOptionDuration:
			return fail("process_at", t.Format(time.RFC3339Nano), "is more than 366 days ahead")
		}
	case asynq.DeadlineOpt:
		if t, _ := o.Value().(time.Time); !t.After(now) {
			return fail("deadline", t.Format(time.RFC3339Nano), fmt.Sprintf(rulePast, now.UTC().Format(time.RFC3339)))
		}
	case asynq.TimeoutOpt:
		return dur("timeout", time.Second, "want at least 1s (asynq counts whole seconds, and would run the task with its 30m default)")
	case asynq.UniqueOpt:
		return dur("unique", time.Second, "want at least 1s (asynq's minimum)")
	case asynq.MaxRetryOpt:
		n, _ := o.Value().(int)
		return CheckMaxRetry(n)
	case asynq.RetentionOpt:
		return dur("retention", 0, ruleNegative)
	case asynq.GroupOpt:
		s, _ := o.Value().(string)
		return fail("group", s, "task groups are not supported (the worker runs no group aggregator, so a grouped task would never run)")
	}
	return nil
}

// checkOptions checks opts, a task type's defaults followed by the
// options of one enqueue, with CheckOption at now. The error wraps
// ErrInvalidOption and the *OptionError, and names the task type.
func checkOptions(typ string, opts []asynq.Option, now time.Time) error {
	for _, o := range opts {
		if err := CheckOption(o, now); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidOption, typ, err)
		}
	}
	return nil
}
