package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// keySchedule is the key of the schedule setting.
const keySchedule = "worker.schedule"

// ScheduleEntry is one periodic task of [Worker.Schedule]: at every tick of
// Spec, a task of Type with Payload is enqueued.
//
// In the environment (WORKER_SCHEDULE) and in a flag the schedule is a JSON
// list; in a config file it is a list of maps:
//
//	worker:
//	  schedule:
//	    - name: purge-tmp
//	      spec: "@every 30s"
//	      type: cache:invalidate
//	      payload: {pattern: "tmp:*"}
//	      queue: low
//
// [Load] checks the shape of each entry, its name, spec and queue, and that
// the payload is a JSON object. Whether Type exists and Payload suits it is
// for the caller to check against its task registry; Source names the entry
// in such errors.
type ScheduleEntry struct {
	// Name identifies the entry: unique, of A-Z a-z 0-9 _ . -, and part of
	// the ID of every task it enqueues, so renaming an entry makes its next
	// tick a new task.
	Name string
	// Spec is "@every <duration>" (whole seconds, at least 1s; ticks fall
	// on multiples of the duration since the Unix epoch, so every replica
	// agrees on them), a descriptor such as "@hourly", or a five-field cron
	// spec ("*/5 * * * *"). Cron specs and descriptors are in UTC unless the
	// spec starts with CRON_TZ=Area/City.
	Spec string
	// Type is the task type, such as "cache:invalidate".
	Type string
	// Payload is the task payload as compact JSON text: an object, "{}"
	// when the entry gives none.
	Payload string
	// Queue overrides the task type's queue; empty keeps it.
	Queue string
	// Source names where the entry was given, as Load's errors do, such as
	// `WORKER_SCHEDULE: entry 2 ("purge-tmp")`.
	Source string
}

// scheduleName matches the names schedule entries may have.
var scheduleName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// scheduleFields are the keys of an entry, in the order errors list them.
const scheduleFields = "name, spec, type, payload, queue"

// scheduleValue applies the schedule, given as JSON text (environment,
// flag, default) or, in a file, as a list of maps.
func scheduleValue(field func(*Config) *[]ScheduleEntry) func(*Config, any) error {
	return func(c *Config, v any) error {
		var raw []byte
		switch v := v.(type) {
		case nil:
		case string:
			raw = []byte(v)
		case []any:
			b, err := json.Marshal(v)
			if err != nil {
				return fmt.Errorf("schedule: %w", err)
			}
			raw = b
		default:
			return fmt.Errorf("want a list of schedule entries, got %v", v)
		}
		entries, err := parseSchedule(raw)
		if err != nil {
			return err
		}
		*field(c) = entries
		return nil
	}
}

// parseSchedule parses a JSON list of schedule entries; empty text is no
// entries. Each error names the entry.
func parseSchedule(raw []byte) ([]ScheduleEntry, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("not a JSON list of schedule entries ({%s}): %v", scheduleFields, err)
	}
	var (
		entries []ScheduleEntry
		errs    []error
		seen    = make(map[string]int)
	)
	for i, r := range list {
		e, err := parseScheduleEntry(r)
		what := fmt.Sprintf("entry %d", i+1)
		if e.Name != "" {
			what += fmt.Sprintf(" (%q)", e.Name)
		}
		if err == nil {
			if j, dup := seen[e.Name]; dup {
				err = fmt.Errorf("name %q is used by entry %d too", e.Name, j)
			}
			seen[e.Name] = i + 1
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			continue
		}
		entries = append(entries, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return entries, nil
}

// parseScheduleEntry parses and checks one entry. On error, the returned
// entry still has the name, if one could be read.
func parseScheduleEntry(raw json.RawMessage) (ScheduleEntry, error) {
	var in struct {
		Name    string          `json:"name"`
		Spec    string          `json:"spec"`
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
		Queue   string          `json:"queue"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var nameOnly struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &nameOnly) // best effort, for the error
		return ScheduleEntry{Name: nameOnly.Name}, fmt.Errorf("%v; want an object with %s", err, scheduleFields)
	}
	e := ScheduleEntry{Name: in.Name, Spec: strings.TrimSpace(in.Spec), Type: strings.TrimSpace(in.Type), Queue: in.Queue}
	switch {
	case e.Name == "":
		return e, errors.New("no name")
	case !scheduleName.MatchString(e.Name):
		return e, fmt.Errorf("name %q has a character outside A-Z a-z 0-9 _ . -", e.Name)
	case e.Spec == "":
		return e, errors.New(`no spec; want "@every 30s" or a cron spec such as "*/5 * * * *"`)
	case e.Type == "":
		return e, errors.New("no task type")
	}
	if e.Queue != "" {
		if err := checkQueueName(e.Queue); err != nil {
			return e, err
		}
	}
	if _, err := ParseScheduleSpec(e.Spec); err != nil {
		return e, err
	}
	payload := bytes.TrimSpace(in.Payload)
	if len(payload) == 0 || string(payload) == "null" {
		payload = []byte("{}")
	}
	if payload[0] != '{' {
		return e, fmt.Errorf("payload %s is not a JSON object", payload)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, payload); err != nil {
		return e, fmt.Errorf("payload: %v", err)
	}
	e.Payload = buf.String()
	return e, nil
}

// ParseScheduleSpec parses the spec of a [ScheduleEntry]. A cron spec or
// descriptor without CRON_TZ= gets UTC rather than the local time zone, so
// that replicas in different zones agree; "@every" gives a
// cron.ConstantDelaySchedule. The error names the spec.
func ParseScheduleSpec(spec string) (cron.Schedule, error) {
	spec = strings.TrimSpace(spec)
	if after, ok := strings.CutPrefix(spec, "@every"); ok {
		d, err := time.ParseDuration(strings.TrimSpace(after))
		if err != nil || d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("spec %q: want @every and a whole number of seconds, at least 1s, such as \"@every 30s\"", spec)
		}
		return cron.ConstantDelaySchedule{Delay: d}, nil
	}
	if (strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")) && !strings.Contains(spec, " ") {
		// The cron parser would slice out of range here.
		return nil, fmt.Errorf("spec %q: a time zone with no schedule after it", spec)
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("spec %q: %v; want \"@every 30s\", a descriptor such as \"@hourly\", or five cron fields such as \"*/5 * * * *\"", spec, err)
	}
	if ss, ok := s.(*cron.SpecSchedule); ok && ss.Location == time.Local {
		ss.Location = time.UTC
	}
	return s, nil
}

// ParseScheduleEntry parses and checks one schedule entry given as a JSON
// object with the keys name, spec, type, payload and queue, exactly as
// [Load] checks each entry of WORKER_SCHEDULE: unknown keys, a bad name,
// spec or queue, and a payload that is not a JSON object are errors. The
// payload comes back compact. Source is left empty. Package schedule
// checks the entries it stores in Redis with it.
func ParseScheduleEntry(raw []byte) (ScheduleEntry, error) {
	return parseScheduleEntry(raw)
}
