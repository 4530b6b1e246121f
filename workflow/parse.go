package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// Parse reads a workflow's JSON form, the one the enqueue command's
// --workflow and --file lines and POST /api/workflows take:
//
//	{
//	  "workflow": NODE,
//	  "id": "nightly-2026-12-07",   // optional: SubmitOptions.ID
//	  "name": "nightly report",     // optional
//	  "retention": "72h"            // optional: a Go duration or seconds
//	}
//
// where NODE is one of
//
//	{"type": "data:process", "payload": {...}, "queue": "critical",
//	 "max_retry": 3, "timeout": "30s", "deadline": "2026-12-08T00:00:00Z",
//	 "retention": "1h"}                                  // a task step
//	{"chain": [NODE, ...]}                               // Chain
//	{"group": [NODE, ...], "callback": NODE,
//	 "policy": "all_succeeded" | "always"}               // Group(...).Then
//
// Unknown fields, a field given twice, a node that is none or more than
// one of these, and bad values are refused with an error wrapping
// ErrInvalid (a *StepError naming the step); types, payloads and options
// are checked by Submit.
func Parse(data []byte) (Node, SubmitOptions, error) {
	var so SubmitOptions
	if err := tasks.CheckJSON(data); err != nil {
		return nil, so, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var doc struct {
		Workflow  json.RawMessage `json:"workflow"`
		ID        string          `json:"id"`
		Name      string          `json:"name"`
		Retention json.RawMessage `json:"retention"`
	}
	if err := decodeStrictly(data, &doc); err != nil {
		return nil, so, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(doc.Workflow) == 0 || bytes.Equal(doc.Workflow, []byte("null")) {
		return nil, so, fmt.Errorf(`%w: no "workflow" field: {"workflow": {"chain": [...]}} or {"workflow": {"group": [...], "callback": {...}}}`, ErrInvalid)
	}
	so.ID, so.Name = doc.ID, doc.Name
	if len(doc.Retention) > 0 {
		d, err := parseDuration(doc.Retention)
		if err != nil {
			return nil, so, fmt.Errorf("%w: retention: %w", ErrInvalid, err)
		}
		so.Retention = d
	}
	// The root's own path: a chain's steps are "0", "1", ...; any other
	// node is step "0" of the root chain.
	var probe struct {
		Chain json.RawMessage `json:"chain"`
	}
	_ = json.Unmarshal(doc.Workflow, &probe)
	path := "0"
	if len(probe.Chain) > 0 {
		path = rootPath
	}
	n, err := parseNode(doc.Workflow, path, 0)
	if err != nil {
		return nil, so, err
	}
	return n, so, nil
}

type nodeJSON struct {
	Type      *string         `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	Queue     *string         `json:"queue"`
	MaxRetry  *int            `json:"max_retry"`
	Timeout   json.RawMessage `json:"timeout"`
	Deadline  *string         `json:"deadline"`
	Retention json.RawMessage `json:"retention"`

	Chain    []json.RawMessage `json:"chain"`
	Group    []json.RawMessage `json:"group"`
	Callback json.RawMessage   `json:"callback"`
	Policy   *string           `json:"policy"`
}

func parseNode(data []byte, path string, depth int) (Node, error) {
	bad := func(format string, a ...any) error {
		return &StepError{Step: path, Err: fmt.Errorf(format, a...)}
	}
	if depth > 4*MaxDepth {
		// Submit refuses past MaxDepth, naming the step; this only stops
		// a document nested absurdly deep early.
		return nil, bad("nested %d deep; the most is %d (MaxDepth)", depth, MaxDepth)
	}
	var j nodeJSON
	if err := decodeStrictly(data, &j); err != nil {
		return nil, bad("%v", err)
	}
	kinds := 0
	for _, set := range []bool{j.Type != nil, j.Chain != nil, j.Group != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return nil, bad(`a step is one of {"type": ...}, {"chain": [...]} or {"group": [...]}`)
	}
	taskFields := j.Payload != nil || j.Queue != nil || j.MaxRetry != nil || j.Timeout != nil || j.Deadline != nil || j.Retention != nil
	switch {
	case j.Type != nil:
		if j.Callback != nil || j.Policy != nil {
			return nil, bad(`"callback" and "policy" belong to a group`)
		}
		opts, err := parseOptions(j)
		if err != nil {
			return nil, &StepError{Step: path, Type: *j.Type, Err: err}
		}
		return Raw(*j.Type, j.Payload, opts...), nil
	case taskFields:
		return nil, bad(`"payload", "queue", "max_retry", "timeout", "deadline" and "retention" belong to a task step`)
	case j.Chain != nil:
		if j.Callback != nil || j.Policy != nil {
			return nil, bad(`"callback" and "policy" belong to a group`)
		}
		if len(j.Chain) == 0 {
			return nil, bad("empty chain: it needs at least one step")
		}
		steps := make([]Node, len(j.Chain))
		for i, s := range j.Chain {
			n, err := parseNode(s, child(path, strconv.Itoa(i)), depth+1)
			if err != nil {
				return nil, err
			}
			steps[i] = n
		}
		return Chain(steps...), nil
	default:
		if len(j.Group) == 0 {
			return nil, bad("empty group: it needs at least one member")
		}
		members := make([]Node, len(j.Group))
		for i, m := range j.Group {
			n, err := parseNode(m, child(path, "m"+strconv.Itoa(i)), depth+1)
			if err != nil {
				return nil, err
			}
			members[i] = n
		}
		g := Group(members...)
		policy := AllSucceeded
		if j.Policy != nil {
			switch *j.Policy {
			case "all_succeeded":
			case "always":
				policy = Always
			default:
				return nil, bad(`policy %q: "all_succeeded" or "always"`, *j.Policy)
			}
			if j.Callback == nil {
				return nil, bad(`"policy" without a "callback"`)
			}
		}
		if j.Callback != nil {
			cb, err := parseNode(j.Callback, child(path, "cb"), depth+1)
			if err != nil {
				return nil, err
			}
			g = g.Then(cb, policy)
		}
		return g, nil
	}
}

func parseOptions(j nodeJSON) ([]asynq.Option, error) {
	var opts []asynq.Option
	if j.Queue != nil {
		opts = append(opts, asynq.Queue(*j.Queue))
	}
	if j.MaxRetry != nil {
		if err := tasks.CheckMaxRetry(*j.MaxRetry); err != nil {
			return nil, err
		}
		opts = append(opts, asynq.MaxRetry(*j.MaxRetry))
	}
	if j.Timeout != nil {
		d, err := parseDuration(j.Timeout)
		if err != nil {
			return nil, fmt.Errorf("timeout: %w", err)
		}
		opts = append(opts, asynq.Timeout(d))
	}
	if j.Deadline != nil {
		t, err := time.Parse(time.RFC3339, *j.Deadline)
		if err != nil {
			return nil, fmt.Errorf("deadline %q: not an RFC 3339 time such as 2026-12-08T00:00:00Z", *j.Deadline)
		}
		opts = append(opts, asynq.Deadline(t))
	}
	if j.Retention != nil {
		d, err := parseDuration(j.Retention)
		if err != nil {
			return nil, fmt.Errorf("retention: %w", err)
		}
		opts = append(opts, asynq.Retention(d))
	}
	return opts, nil
}

// parseDuration reads a Go duration string ("90s", "1h30m") or a number
// of seconds.
func parseDuration(raw json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as \"30s\" or \"1h\"", s)
		}
		return d, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsInf(f, 0) || f > math.MaxInt64/float64(time.Second) || f < 0 {
		return 0, fmt.Errorf("%s is not a duration: give a string such as \"30s\" or a number of seconds", raw)
	}
	return time.Duration(f * float64(time.Second)), nil
}

func decodeStrictly(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			se *json.SyntaxError
			te *json.UnmarshalTypeError
		)
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("not valid JSON: %v", err)
		case errors.As(err, &te) && te.Field != "":
			return fmt.Errorf("field %q: want %s, got %s", te.Field, jsonKind(te.Type), te.Value)
		case errors.As(err, &te):
			return fmt.Errorf("want %s, got %s", jsonKind(te.Type), te.Value)
		}
		return errors.New(trimJSONErr(err.Error()))
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// jsonKind names the JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a JSON value" // json.RawMessage
		}
		return "an array"
	}
	return "an object"
}

func trimJSONErr(s string) string {
	if r, ok := bytes.CutPrefix([]byte(s), []byte("json: ")); ok {
		return string(r)
	}
	return s
}
