package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/forgeq/forgeq/internal/redisurl"
	"github.com/forgeq/forgeq/tasks"
)

// The value parsers below return errors that name the value but not its
// source; Load adds the source in front.

// text renders a single value from any source as the text it would have in
// the environment. Maps and lists are errors.
func text(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 32), nil
	case map[string]any:
		return "", errors.New("want a single value, got a map")
	case []any:
		return "", errors.New("want a single value, got a list")
	default:
		return fmt.Sprint(v), nil
	}
}

// stringValue applies a string setting, checked and normalised by check
// when check is not nil.
func stringValue(field func(*Config) *string, check func(string) (string, error)) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := text(v)
		if err != nil {
			return err
		}
		if check != nil {
			if s, err = check(s); err != nil {
				return err
			}
		}
		*field(c) = s
		return nil
	}
}

// intValue applies a whole-number setting of at least min.
func intValue(field func(*Config) *int, min int, want string) func(*Config, any) error {
	return boundedIntValue(field, min, math.MaxInt, want)
}

// boundedIntValue is intValue with an upper bound too.
func boundedIntValue(field func(*Config) *int, min, max int, want string) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := text(v)
		if err != nil {
			return err
		}
		n, err := parseInt(s)
		if err != nil {
			return err
		}
		if n < min {
			return fmt.Errorf("%q is too small; %s", s, want)
		}
		if n > max {
			return fmt.Errorf("%q is too large; %s", s, want)
		}
		*field(c) = n
		return nil
	}
}

// durationValue applies a duration setting that must be positive. With
// none, the word "none" is accepted too and stored as NoExpiry.
func durationValue(field func(*Config) *time.Duration, none bool) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := text(v)
		if err != nil {
			return err
		}
		if none && strings.EqualFold(strings.TrimSpace(s), "none") {
			*field(c) = NoExpiry
			return nil
		}
		d, err := parseDuration(s)
		if err == nil && d <= 0 {
			err = fmt.Errorf("%q is not positive", s)
		}
		if err != nil {
			if none {
				return fmt.Errorf(`%w; want a duration ("1h"), seconds ("3600") or "none"`, err)
			}
			return fmt.Errorf(`%w; want a duration ("10s", "1m30s") or seconds ("10", "0.5")`, err)
		}
		*field(c) = d
		return nil
	}
}

// durationAtLeast applies a duration setting of at least least.
func durationAtLeast(field func(*Config) *time.Duration, least time.Duration) func(*Config, any) error {
	apply := durationValue(field, false)
	return func(c *Config, v any) error {
		if err := apply(c, v); err != nil {
			return err
		}
		if *field(c) < least {
			s, _ := text(v)
			return fmt.Errorf("%q is below the minimum of %v", s, least)
		}
		return nil
	}
}

// secretValue applies a string setting that is never shown: its errors
// leave the value out.
func secretValue(field func(*Config) *string) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := text(v)
		if err != nil {
			return err
		}
		*field(c) = s
		return nil
	}
}

// boolValue applies a boolean setting.
func boolValue(field func(*Config) *bool) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := text(v)
		if err != nil {
			return err
		}
		b, err := parseBool(s)
		if err != nil {
			return err
		}
		*field(c) = b
		return nil
	}
}

// queuesValue applies the queue list, given as "name=weight,..." or, in a
// file, as a map of names to weights.
func queuesValue(field func(*Config) *map[string]int) func(*Config, any) error {
	return func(c *Config, v any) error {
		var (
			q   map[string]int
			err error
		)
		if m, ok := v.(map[string]any); ok {
			q, err = queuesFromMap(m)
		} else {
			var s string
			if s, err = text(v); err == nil {
				q, err = parseQueues(s)
			}
		}
		if err != nil {
			return err
		}
		*field(c) = q
		return nil
	}
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

// parseBool accepts true/false, 1/0 and yes/no in any case.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean; want true/false, 1/0 or yes/no", s)
}

// seconds matches a plain number of seconds, as the Python settings used.
var seconds = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$`)

// parseDuration accepts plain seconds ("10", "0.5") and Go durations
// ("10s", "1m30s").
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if seconds.MatchString(t) {
		f, err := strconv.ParseFloat(t, 64)
		ns := math.Round(f * float64(time.Second))
		if err != nil || math.Abs(ns) >= math.MaxInt64 {
			return 0, fmt.Errorf("%q is too long", s)
		}
		return time.Duration(ns), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration", s)
	}
	return d, nil
}

// checkQueueName checks a queue name the worker serves or a schedule
// entry enqueues on with the rule of every enqueue
// (tasks.CheckQueueName), so that the worker serves no queue a task could
// not be enqueued on, and the reverse.
func checkQueueName(name string) error {
	var oe *tasks.OptionError
	if err := tasks.CheckQueueName(name); errors.As(err, &oe) {
		return oe.Named("queue name", name)
	}
	return nil
}

// parseQueues parses "name=weight,name=weight".
func parseQueues(s string) (map[string]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%q has no queues; want name=weight,name=weight", s)
	}
	q := make(map[string]int)
	for _, entry := range strings.Split(s, ",") {
		name, weight, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("%q: entry %q is not name=weight", s, strings.TrimSpace(entry))
		}
		if err := addQueue(q, strings.TrimSpace(name), strings.TrimSpace(weight)); err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
	}
	return q, nil
}

// queuesFromMap checks a map of queue names to weights from a file.
func queuesFromMap(m map[string]any) (map[string]int, error) {
	if len(m) == 0 {
		return nil, errors.New("no queues; want at least one name: weight")
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	q := make(map[string]int)
	for _, name := range names {
		weight, err := text(m[name])
		if err == nil {
			err = addQueue(q, name, weight)
		} else {
			err = fmt.Errorf("queue %q: %w", name, err)
		}
		if err != nil {
			return nil, err
		}
	}
	return q, nil
}

func addQueue(q map[string]int, name, weight string) error {
	switch {
	case name == "":
		return fmt.Errorf("entry %q has no queue name", "="+weight)
	}
	if err := checkQueueName(name); err != nil {
		return err
	}
	if _, dup := q[name]; dup {
		return fmt.Errorf("queue %q is listed twice", name)
	}
	w, err := strconv.Atoi(weight)
	if err != nil {
		return fmt.Errorf("weight %q of queue %q is not a whole number", weight, name)
	}
	if w < 1 {
		return fmt.Errorf("weight %d of queue %q is too small; want 1 or more", w, name)
	}
	q[name] = w
	return nil
}

// checkURL checks a non-empty Redis URL. redisurl's error names the URL
// with its password redacted.
func checkURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if _, err := redisurl.Parse(s); err != nil {
		return "", err
	}
	return s, nil
}

// asynqPrefix is the namespace of asynq's own keys.
const asynqPrefix = "asynq:"

// checkKeyPrefix keeps cache keys out of asynq's namespace: a pattern
// delete under a prefix that overlaps "asynq:" could remove queues.
func checkKeyPrefix(p string) (string, error) {
	if p == "" {
		return "", errors.New(`"" is empty; the cache needs its own namespace apart from asynq's "asynq:" keys, such as "cache:"`)
	}
	if i := strings.IndexFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return "", fmt.Errorf("%q contains a space or control character", p)
	}
	if strings.HasPrefix(asynqPrefix, p) || strings.HasPrefix(p, asynqPrefix) {
		return "", fmt.Errorf("%q overlaps asynq's key namespace %q, so deleting cache keys could delete queues; choose another prefix, such as \"cache:\"", p, asynqPrefix)
	}
	return p, nil
}

// checkEmbedded normalises auto|true|false, with 1/0/yes/no for the last
// two.
func checkEmbedded(s string) (string, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return "auto", nil
	}
	b, err := parseBool(s)
	if err != nil {
		return "", fmt.Errorf("%q is not auto, true or false", s)
	}
	return strconv.FormatBool(b), nil
}

// checkAddr accepts host:port with a numeric port, or "" and "off" for no
// listener, stored as "".
func checkAddr(s string) (string, error) {
	if s == "" || strings.EqualFold(s, "off") {
		return "", nil
	}
	if _, err := checkHostPort(s); err != nil {
		return "", fmt.Errorf("%w (or off)", err)
	}
	return s, nil
}

// checkHostPort accepts host:port with a numeric port.
func checkHostPort(s string) (string, error) {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	return s, nil
}

// oneOf accepts one of words, in any case, and stores it in lower case.
func oneOf(words ...string) func(string) (string, error) {
	return func(s string) (string, error) {
		for _, w := range words {
			if strings.EqualFold(strings.TrimSpace(s), w) {
				return w, nil
			}
		}
		return "", fmt.Errorf("%q is not one of %s", s, strings.Join(words, ", "))
	}
}
