package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// MaxPayloadSize is the largest payload a task may carry, in bytes.
const MaxPayloadSize = 1 << 20

// ErrInvalidPayload wraps every payload rejected by Decode, Validate or a
// New...Task constructor.
var ErrInvalidPayload = errors.New("tasks: invalid payload")

// Validator is implemented by payloads with checks beyond JSON shape, such
// as ranges. Validate's error is reported as a payload error.
type Validator interface {
	Validate() error
}

// Field describes one payload field, for listings and help.
type Field struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Required bool   `json:"required"`
	Help     string `json:"help,omitempty"`
}

// decodeStrict decodes data into a new P: a JSON object with no unknown
// fields, no field given twice (at any depth), only valid UTF-8 in its
// strings, every required field present and non-null, no trailing data,
// and P's own Validate passing.
func decodeStrict[P any](typ string, data []byte) (P, error) {
	var p P
	if len(data) > MaxPayloadSize {
		return p, fmt.Errorf("%w: %s: payload is %d bytes, over the %d-byte limit", ErrInvalidPayload, typ, len(data), MaxPayloadSize)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		trimmed = []byte("{}")
	}
	// One pass over the text finds the top-level members, duplicates and
	// bad UTF-8, which encoding/json would let through.
	var buf [16]member
	present, msg := scanPayload(buf[:0], trimmed)
	if msg != "" {
		return p, fmt.Errorf("%w: %s: %s", ErrInvalidPayload, typ, msg)
	}
	fields := cachedFields(reflect.TypeFor[P]())
	// encoding/json matches names case-insensitively, so "Key" would fill
	// "key" past DisallowUnknownFields; names must match exactly.
	if err := checkFieldNames(fields, present); err != nil {
		return p, fmt.Errorf("%w: %s: %v", ErrInvalidPayload, typ, err)
	}
	for _, f := range fields {
		if !f.Required {
			continue
		}
		if !slices.ContainsFunc(present, func(m member) bool { return m.nonNull && string(m.name) == f.Name }) {
			return p, fmt.Errorf("%w: %s: missing required field %q", ErrInvalidPayload, typ, f.Name)
		}
	}
	// The names are checked above, so a plain Unmarshal is strict enough
	// (and rejects trailing data, which a Decoder would leave unread).
	if err := json.Unmarshal(trimmed, &p); err != nil {
		return p, fmt.Errorf("%w: %s: %s", ErrInvalidPayload, typ, describeJSONError(err))
	}
	if v, ok := any(&p).(Validator); ok {
		if err := v.Validate(); err != nil {
			return p, fmt.Errorf("%w: %s: %v", ErrInvalidPayload, typ, err)
		}
	}
	return p, nil
}

// nonNull records whether a JSON value is anything but null, without
// copying it: scanPayload's slow path needs only the decoder's error.
type nonNull bool

func (n *nonNull) UnmarshalJSON(b []byte) error {
	*n = string(b) != "null"
	return nil
}

// checkFieldNames reports the first (by name) member of present that is not
// exactly the name of a field.
func checkFieldNames(fields []Field, present []member) error {
	var unknown []string
	for _, m := range present {
		if !slices.ContainsFunc(fields, func(f Field) bool { return f.Name == string(m.name) }) {
			unknown = append(unknown, string(m.name))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	for _, f := range fields {
		if strings.EqualFold(f.Name, unknown[0]) {
			return fmt.Errorf("unknown field %q (did you mean %q?)", unknown[0], f.Name)
		}
	}
	return fmt.Errorf("unknown field %q", unknown[0])
}

func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Sprintf("payload must be a JSON object, not %s", typeErr.Value)
		}
		return fmt.Sprintf("field %q: want %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	default:
		return err.Error()
	}
}

// fieldCache holds fieldsOf per payload type: decoding runs once per task
// and per CLI line, reflection need not.
var fieldCache sync.Map // reflect.Type -> []Field

func cachedFields(t reflect.Type) []Field {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]Field)
	}
	f, _ := fieldCache.LoadOrStore(t, fieldsOf(t))
	return f.([]Field)
}

// fieldsOf lists the JSON fields of struct type t. A field is required
// unless its json tag has omitempty; its help text is its `help` tag.
func fieldsOf(t reflect.Type) []Field {
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []Field
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		out = append(out, Field{
			Name:     name,
			Type:     jsonType(sf.Type),
			Required: !strings.Contains(","+opts+",", ",omitempty,"),
			Help:     sf.Tag.Get("help"),
		})
	}
	return out
}

func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if t.PkgPath() == "time" && t.Name() == "Duration" {
			return "duration (nanoseconds)"
		}
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array of " + jsonType(t.Elem())
	case reflect.Map:
		return "object"
	case reflect.Pointer:
		return jsonType(t.Elem())
	default:
		return "object"
	}
}
