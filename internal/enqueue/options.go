package enqueue

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// rawOptions are the task options as given, by a flag or by a field of a
// --file line; nil means not given.
type rawOptions struct {
	Queue     *string
	Delay     *string
	At        *string
	MaxRetry  *int
	Timeout   *string
	Deadline  *string
	Unique    *string
	ID        *string
	Retention *string
	Group     *string
}

// over returns o with every option that line gives replaced by line's.
// --delay and --at replace each other.
func (o rawOptions) over(line rawOptions) rawOptions {
	if line.Delay != nil || line.At != nil {
		o.Delay, o.At = line.Delay, line.At
	}
	set := func(dst **string, src *string) {
		if src != nil {
			*dst = src
		}
	}
	set(&o.Queue, line.Queue)
	set(&o.Timeout, line.Timeout)
	set(&o.Deadline, line.Deadline)
	set(&o.Unique, line.Unique)
	set(&o.ID, line.ID)
	set(&o.Retention, line.Retention)
	set(&o.Group, line.Group)
	if line.MaxRetry != nil {
		o.MaxRetry = line.MaxRetry
	}
	return o
}

// taskOptions are checked options.
type taskOptions struct {
	queue     string // "" : the task type's
	delay     time.Duration
	at        time.Time // zero: not given
	maxRetry  *int
	timeout   time.Duration
	deadline  time.Time
	unique    time.Duration
	id        string
	retention *time.Duration
}

// parse checks o at time now. name turns an option's name ("max_retry")
// into how the user wrote it ("--max-retry" or `field "max_retry"`); each
// error names it and the bad value.
func (o rawOptions) parse(now time.Time, name func(string) string) (taskOptions, []error) {
	var (
		t    taskOptions
		errs []error
	)
	fail := func(opt, val string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s %q: %s", name(opt), val, fmt.Sprintf(format, args...)))
	}
	nonBlank := func(opt string, v *string) string {
		if v == nil {
			return ""
		}
		if strings.TrimSpace(*v) == "" {
			fail(opt, *v, "must not be empty")
		}
		return *v
	}
	duration := func(opt string, v *string, min time.Duration, what string) (time.Duration, bool) {
		if v == nil {
			return 0, false
		}
		d, err := parseDuration(*v)
		switch {
		case err != nil:
			fail(opt, *v, "%v", err)
			return 0, false
		case d < min:
			fail(opt, *v, "%s", what)
			return 0, false
		}
		return d, true
	}

	t.queue = nonBlank("queue", o.Queue)
	t.id = nonBlank("id", o.ID)
	if o.Group != nil {
		// asynq leaves a grouped task in its group until an aggregator
		// merges the group, and the worker runs none: it would never run.
		fail("group", *o.Group, "task groups are not supported: the worker runs no group aggregator, so a grouped task would never run")
	}
	if o.Delay != nil && o.At != nil {
		errs = append(errs, fmt.Errorf("%s %q and %s %q: give one or the other", name("delay"), *o.Delay, name("at"), *o.At))
	}
	t.delay, _ = duration("delay", o.Delay, 0, "must not be negative")
	if o.At != nil {
		at, err := time.Parse(time.RFC3339, strings.TrimSpace(*o.At))
		switch {
		case err != nil:
			fail("at", *o.At, "want an RFC 3339 time such as %q", now.Add(time.Hour).UTC().Format(time.RFC3339))
		case !at.After(now):
			fail("at", *o.At, "is in the past (now is %s); use --delay 0 or leave it out to run now", now.UTC().Format(time.RFC3339))
		default:
			t.at = at
		}
	}
	if o.MaxRetry != nil {
		if *o.MaxRetry < 0 {
			fail("max_retry", strconv.Itoa(*o.MaxRetry), "must not be negative")
		} else {
			t.maxRetry = o.MaxRetry
		}
	}
	t.timeout, _ = duration("timeout", o.Timeout, time.Second, "want at least 1s (asynq counts whole seconds)")
	if o.Deadline != nil {
		t.deadline = parseDeadline(*o.Deadline, now, func(format string, args ...any) { fail("deadline", *o.Deadline, format, args...) })
	}
	t.unique, _ = duration("unique", o.Unique, time.Second, "want at least 1s (asynq's minimum)")
	if r, ok := duration("retention", o.Retention, 0, "must not be negative"); ok {
		t.retention = &r
	}
	return t, errs
}

// parseDeadline reads an RFC 3339 time or a duration from now.
func parseDeadline(s string, now time.Time, fail func(format string, args ...any)) time.Time {
	if at, err := time.Parse(time.RFC3339, strings.TrimSpace(s)); err == nil {
		if !at.After(now) {
			fail("is in the past (now is %s)", now.UTC().Format(time.RFC3339))
			return time.Time{}
		}
		return at
	}
	d, err := parseDuration(s)
	switch {
	case err != nil:
		fail("want an RFC 3339 time or a duration from now (\"10m\")")
		return time.Time{}
	case d <= 0:
		fail("must be in the future")
		return time.Time{}
	}
	return now.Add(d)
}

// asynq returns the asynq options of t, which override the task type's.
func (t taskOptions) asynq() []asynq.Option {
	var opts []asynq.Option
	if t.queue != "" {
		opts = append(opts, asynq.Queue(t.queue))
	}
	if t.delay > 0 {
		opts = append(opts, asynq.ProcessIn(t.delay))
	}
	if !t.at.IsZero() {
		opts = append(opts, asynq.ProcessAt(t.at))
	}
	if t.maxRetry != nil {
		opts = append(opts, asynq.MaxRetry(*t.maxRetry))
	}
	if t.timeout > 0 {
		opts = append(opts, asynq.Timeout(t.timeout))
	}
	if !t.deadline.IsZero() {
		opts = append(opts, asynq.Deadline(t.deadline))
	}
	if t.unique > 0 {
		opts = append(opts, asynq.Unique(t.unique))
	}
	if t.id != "" {
		opts = append(opts, asynq.TaskID(t.id))
	}
	if t.retention != nil {
		opts = append(opts, asynq.Retention(*t.retention))
	}
	return opts
}

// errNegative is parseDuration's error for a negative duration.
var errNegative = errors.New("must not be negative")

// parseDuration reads a Go duration ("1m30s") or a number of seconds
// ("90", "0.5"). A negative value is errNegative.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty; want a duration such as \"90s\" or a number of seconds")
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
			return 0, errors.New("not a usable number of seconds")
		}
		d = time.Duration(secs * float64(time.Second))
	} else {
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, errors.New("not a duration; want Go's form (\"90s\", \"1h30m\") or a number of seconds")
		}
	}
	if d < 0 {
		return 0, errNegative
	}
	return d, nil
}

// flagName is rawOptions.parse's name for flags.
func flagName(opt string) string { return "--" + strings.ReplaceAll(opt, "_", "-") }

// fieldName is rawOptions.parse's name for --file lines.
func fieldName(opt string) string { return fmt.Sprintf("field %q", opt) }
