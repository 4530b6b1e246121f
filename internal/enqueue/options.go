package enqueue

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
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

	DedupKey      *string
	DedupMode     *string
	DedupRelease  *string
	DedupMaxDelay *string
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
	set(&o.DedupKey, line.DedupKey)
	set(&o.DedupMode, line.DedupMode)
	set(&o.DedupRelease, line.DedupRelease)
	set(&o.DedupMaxDelay, line.DedupMaxDelay)
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
	dedup     *tasks.Dedup // nil: none
}

// parse reads o and checks it at time now with the rules of every enqueue
// (tasks.CheckOption). name turns an option's name ("max_retry") into how
// the user wrote it ("--max-retry" or `field "max_retry"`); each error
// names it and the bad value as given.
func (o rawOptions) parse(now time.Time, name func(string) string) (taskOptions, []error) {
	var (
		t    taskOptions
		errs []error
	)
	fail := func(opt, val string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s %q: %s", name(opt), val, fmt.Sprintf(format, args...)))
	}
	// named records err, the error of a tasks check, naming opt and raw.
	named := func(opt, raw string, err error) bool {
		var oe *tasks.OptionError
		if errors.As(err, &oe) {
			errs = append(errs, oe.Named(name(opt), raw))
			return false
		}
		return err == nil
	}
	// check applies the rule of every enqueue to ao, given as raw.
	check := func(opt, raw string, ao asynq.Option) bool {
		return named(opt, raw, tasks.CheckOption(ao, now))
	}
	duration := func(opt string, v *string, option func(time.Duration) asynq.Option) (time.Duration, bool) {
		if v == nil {
			return 0, false
		}
		d, err := parseSignedDuration(*v)
		if err != nil {
			fail(opt, *v, "%v", err)
			return 0, false
		}
		return d, check(opt, *v, option(d))
	}

	if o.Queue != nil && check("queue", *o.Queue, asynq.Queue(*o.Queue)) {
		t.queue = *o.Queue
	}
	if o.ID != nil && check("id", *o.ID, asynq.TaskID(*o.ID)) {
		t.id = *o.ID
	}
	if o.Group != nil {
		check("group", *o.Group, asynq.Group(*o.Group))
	}
	if o.Delay != nil && o.At != nil {
		errs = append(errs, fmt.Errorf("%s %q and %s %q: give one or the other", name("delay"), *o.Delay, name("at"), *o.At))
	}
	if d, ok := duration("delay", o.Delay, asynq.ProcessIn); ok {
		t.delay = d
	}
	if o.At != nil {
		at, err := time.Parse(time.RFC3339, strings.TrimSpace(*o.At))
		switch {
		case err != nil:
			fail("at", *o.At, "want an RFC 3339 time such as %q", now.Add(time.Hour).UTC().Format(time.RFC3339))
		case check("at", *o.At, asynq.ProcessAt(at)):
			t.at = at
		}
	}
	// asynq.MaxRetry makes a negative number 0: check the number itself.
	if o.MaxRetry != nil && named("max_retry", strconv.Itoa(*o.MaxRetry), tasks.CheckMaxRetry(*o.MaxRetry)) {
		t.maxRetry = o.MaxRetry
	}
	if d, ok := duration("timeout", o.Timeout, asynq.Timeout); ok {
		t.timeout = d
	}
	if o.Deadline != nil {
		at, err := parseDeadline(*o.Deadline, now)
		switch {
		case err != nil:
			fail("deadline", *o.Deadline, "%v", err)
		case check("deadline", *o.Deadline, asynq.Deadline(at)):
			t.deadline = at
		}
	}
	if d, ok := duration("unique", o.Unique, asynq.Unique); ok {
		t.unique = d
	}
	if r, ok := duration("retention", o.Retention, asynq.Retention); ok {
		t.retention = &r
	}
	t.dedup = o.parseDedup(t, now, name, &errs)
	return t, errs
}

// parseDedup reads and checks the dedup options of o (tasks.CheckDedup),
// for a task with the options t, and returns nil when none is given.
func (o rawOptions) parseDedup(t taskOptions, now time.Time, name func(string) string, errs *[]error) *tasks.Dedup {
	if o.DedupKey == nil && o.DedupMode == nil && o.DedupRelease == nil && o.DedupMaxDelay == nil {
		return nil
	}
	if o.DedupKey == nil {
		for _, g := range []struct {
			opt string
			v   *string
		}{{"dedup_mode", o.DedupMode}, {"dedup_release", o.DedupRelease}, {"dedup_max_delay", o.DedupMaxDelay}} {
			if g.v != nil {
				*errs = append(*errs, fmt.Errorf("%s %q: needs %s", name(g.opt), *g.v, name("dedup_key")))
				return nil
			}
		}
	}
	d := tasks.Dedup{Key: *o.DedupKey}
	raw := map[string]string{"dedup_key": *o.DedupKey}
	if o.DedupMode != nil {
		d.Mode, raw["dedup_mode"] = tasks.DedupMode(*o.DedupMode), *o.DedupMode
	}
	if o.DedupRelease != nil {
		d.Release, raw["dedup_release"] = tasks.DedupRelease(*o.DedupRelease), *o.DedupRelease
	}
	if o.DedupMaxDelay != nil {
		raw["dedup_max_delay"] = *o.DedupMaxDelay
		md, err := parseSignedDuration(*o.DedupMaxDelay)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s %q: %v", name("dedup_max_delay"), *o.DedupMaxDelay, err))
			return nil
		}
		d.MaxDelay = md
	}
	delay := t.delay
	if !t.at.IsZero() {
		delay = t.at.Sub(now)
	}
	if err := tasks.CheckDedup(d, delay); err != nil {
		var oe *tasks.OptionError
		if errors.As(err, &oe) {
			err = oe.Named(name(oe.Option), raw[oe.Option])
		}
		*errs = append(*errs, err)
		return nil
	}
	if t.unique > 0 {
		*errs = append(*errs, fmt.Errorf("%s %q and %s: give one or the other", name("dedup_key"), d.Key, name("unique")))
		return nil
	}
	return &d
}

// parseDeadline reads an RFC 3339 time or a duration from now.
func parseDeadline(s string, now time.Time) (time.Time, error) {
	if at, err := time.Parse(time.RFC3339, strings.TrimSpace(s)); err == nil {
		return at, nil
	}
	d, err := parseSignedDuration(s)
	if err != nil {
		return time.Time{}, errors.New("want an RFC 3339 time or a duration from now (\"10m\")")
	}
	return now.Add(d), nil
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
	d, err := parseSignedDuration(s)
	if err == nil && d < 0 {
		return 0, errNegative
	}
	return d, err
}

// parseSignedDuration reads a duration as parseDuration does, negative
// ones too: the options leave their range to tasks.CheckOption.
func parseSignedDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty; want a duration such as \"90s\" or a number of seconds")
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
			return 0, errors.New("not a usable number of seconds")
		}
		return time.Duration(secs * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration; want Go's form (\"90s\", \"1h30m\") or a number of seconds")
	}
	return d, nil
}

// flagName is rawOptions.parse's name for flags.
func flagName(opt string) string { return "--" + strings.ReplaceAll(opt, "_", "-") }

// fieldName is rawOptions.parse's name for --file lines.
func fieldName(opt string) string { return fmt.Sprintf("field %q", opt) }
