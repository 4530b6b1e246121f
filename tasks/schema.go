package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"
	validator "github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// maxSchemaDepth bounds the walk that copies help tags into nested
// schemas, against payload types that contain themselves.
const maxSchemaDepth = 16

// Schema returns the JSON Schema (draft 2020-12) of the type's payload, as
// the task catalogue publishes it: generated from the payload struct, with
// the type name as its title, the type's description as its description,
// each field's `help` tag as the description of its property, every field
// without omitempty required, no other properties allowed, and the ranges
// of the payload's `jsonschema` tags (minimum, maximum, minLength,
// maxLength, minItems, maxItems). It is computed once; callers get their
// own copy. It is nil only when the payload type cannot be described in
// JSON at all, which a test of the type shows at once.
func (d *Definition) Schema() json.RawMessage {
	b, err := d.schema()
	if err != nil {
		return nil
	}
	return bytes.Clone(b)
}

// reflectSchema generates the JSON Schema of payload type t for the task
// type typ.
func reflectSchema(typ, description string, t reflect.Type) (b json.RawMessage, err error) {
	defer func() {
		// The reflector panics on some types encoding/json cannot handle
		// either (a map keyed by a struct); report it as an error so a
		// worker publishing its types never dies of it.
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("tasks: schema of %s: %v", typ, p)
		}
	}()
	r := &jsonschema.Reflector{
		DoNotReference: true, // one self-contained document per type
		ExpandedStruct: true,
		Anonymous:      true, // no $id: the catalogue names the type
	}
	s := r.ReflectFromType(t)
	s.Title = typ
	s.Description = description
	addHelp(s, t, 0)
	b, err = json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("tasks: schema of %s: %w", typ, err)
	}
	return b, nil
}

// addHelp copies the `help` tag of every field of struct type t into the
// description of its property in s (unless a jsonschema tag set one), and
// does the same for nested structs, slices and maps of structs.
func addHelp(s *jsonschema.Schema, t reflect.Type, depth int) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s == nil || depth > maxSchemaDepth {
		return
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		addHelp(s.Items, t.Elem(), depth+1)
		return
	case reflect.Map:
		addHelp(s.AdditionalProperties, t.Elem(), depth+1)
		return
	case reflect.Struct:
	default:
		return
	}
	if s.Properties == nil {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			addHelp(s, f.Type, depth+1) // embedded: its fields are s's
			continue
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		prop, ok := s.Properties.Get(name)
		if !ok || prop == nil {
			continue
		}
		if help := f.Tag.Get("help"); help != "" && prop.Description == "" {
			prop.Description = help
		}
		addHelp(prop, f.Type, depth+1)
	}
}

// rejectLoader refuses to load any schema resource: a published schema
// must be self-contained, and one read from Redis must not make the
// process read files or URLs.
type rejectLoader struct{}

// Load refuses url.
func (rejectLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema refers to %s: published schemas must be self-contained", url)
}

// schemaURL is the location every schema is compiled under: each has a
// compiler of its own.
const schemaURL = "mem:///payload.schema.json"

// compileSchema compiles the JSON Schema b of task type typ for
// validation. Errors wrap ErrInvalidCatalogEntry.
func compileSchema(typ string, b json.RawMessage) (*validator.Schema, error) {
	doc, err := validator.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: schema is not JSON: %v", ErrInvalidCatalogEntry, typ, err)
	}
	c := validator.NewCompiler()
	c.UseLoader(rejectLoader{})
	c.DefaultDraft(validator.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("%w: %s: schema: %v", ErrInvalidCatalogEntry, typ, err)
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: schema does not compile: %v", ErrInvalidCatalogEntry, typ, err)
	}
	return sch, nil
}

// validateSchema checks payload against the compiled schema of typ, with
// the size limit and the empty payload ({}) of Definition.Validate.
// Errors wrap ErrInvalidPayload and name the fields at fault.
func validateSchema(typ string, sch *validator.Schema, payload []byte) error {
	if len(payload) > MaxPayloadSize {
		return fmt.Errorf("%w: %s: payload is %d bytes, over the %d-byte limit", ErrInvalidPayload, typ, len(payload), MaxPayloadSize)
	}
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 {
		trimmed = []byte("{}")
	}
	v, err := validator.UnmarshalJSON(bytes.NewReader(trimmed))
	if err != nil {
		return fmt.Errorf("%w: %s: malformed JSON: %v", ErrInvalidPayload, typ, err)
	}
	// What the decoder lets through (a field twice, bad UTF-8), refused
	// as the worker's own decoding refuses it.
	if err := CheckJSON(trimmed); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidPayload, typ, err)
	}
	err = sch.Validate(v)
	if err == nil {
		return nil
	}
	var verr *validator.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("%w: %s: %v", ErrInvalidPayload, typ, err)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalidPayload, typ, describeSchemaErrors(verr))
}

// describeSchemaErrors turns the validator's errors (its Basic output: one
// unit per failed keyword, with the JSON Pointer of the value) into
// messages that name the payload's fields, sorted and joined by "; ":
//
//	missing required field "work"
//	unknown field "colour"
//	field "work": minimum: got 0, want 1
//	field "sub.a": got string, want integer
//	field "keys[2]": minLength: got 0, want 1
func describeSchemaErrors(verr *validator.ValidationError) string {
	var msgs []string
	for _, u := range verr.BasicOutput().Errors {
		if u.Error == nil {
			continue
		}
		msgs = append(msgs, describeSchemaError(fieldPath(u.InstanceLocation), u.Error.Kind, u.Error.String())...)
	}
	if len(msgs) == 0 {
		return verr.Error()
	}
	slices.Sort(msgs)
	return strings.Join(slices.Compact(msgs), "; ")
}

// describeSchemaError returns the messages of one failed keyword at field
// ("" for the payload itself); text is the validator's own message.
func describeSchemaError(field string, k validator.ErrorKind, text string) []string {
	var msgs []string
	switch k := k.(type) {
	case *kind.Schema, *kind.Group, *kind.Reference, *kind.AllOf:
		// Summaries of the errors listed on their own.
	case *kind.Required:
		for _, name := range k.Missing {
			msgs = append(msgs, fmt.Sprintf("missing required field %q", joinField(field, name)))
		}
	case *kind.AdditionalProperties:
		for _, name := range k.Properties {
			msgs = append(msgs, fmt.Sprintf("unknown field %q", joinField(field, name)))
		}
	case *kind.FalseSchema:
		msgs = append(msgs, fmt.Sprintf("unknown field %q", field))
	case *kind.Type:
		if field == "" && slices.Contains(k.Want, "object") {
			msgs = append(msgs, "payload must be a JSON object, not "+k.Got)
			break
		}
		msgs = append(msgs, fieldMessage(field, text))
	// The validator's own text of these prints numbers for people (1e6
	// as "1×10⁰⁶", 100000 as "100,000"); a field's limit reads better as
	// written in the schema.
	case *kind.Minimum:
		msgs = append(msgs, fieldMessage(field, gotWant("minimum", k.Got, k.Want)))
	case *kind.Maximum:
		msgs = append(msgs, fieldMessage(field, gotWant("maximum", k.Got, k.Want)))
	case *kind.ExclusiveMinimum:
		msgs = append(msgs, fieldMessage(field, gotWant("exclusiveMinimum", k.Got, k.Want)))
	case *kind.ExclusiveMaximum:
		msgs = append(msgs, fieldMessage(field, gotWant("exclusiveMaximum", k.Got, k.Want)))
	case *kind.MultipleOf:
		msgs = append(msgs, fieldMessage(field, gotWant("multipleOf", k.Got, k.Want)))
	case *kind.MinLength:
		msgs = append(msgs, fieldMessage(field, fmt.Sprintf("minLength: got %d, want %d", k.Got, k.Want)))
	case *kind.MaxLength:
		msgs = append(msgs, fieldMessage(field, fmt.Sprintf("maxLength: got %d, want %d", k.Got, k.Want)))
	case *kind.MinItems:
		msgs = append(msgs, fieldMessage(field, fmt.Sprintf("minItems: got %d, want %d", k.Got, k.Want)))
	case *kind.MaxItems:
		msgs = append(msgs, fieldMessage(field, fmt.Sprintf("maxItems: got %d, want %d", k.Got, k.Want)))
	case *kind.MinProperties:
		msgs = append(msgs, fieldMessage(field, fmt.Sprintf("minProperties: got %d, want %d", k.Got, k.Want)))
	case *kind.MaxProperties:
		msgs = append(msgs, fieldMessage(field, fmt.Sprintf("maxProperties: got %d, want %d", k.Got, k.Want)))
	default:
		msgs = append(msgs, fieldMessage(field, text))
	}
	return msgs
}

// gotWant says that a number broke the limit of keyword.
func gotWant(keyword string, got, want *big.Rat) string {
	return fmt.Sprintf("%s: got %s, want %s", keyword, number(got), number(want))
}

// number writes r as JSON would: an integer in full, else a decimal.
func number(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// fieldMessage prefixes text with the field it is about.
func fieldMessage(field, text string) string {
	if field == "" {
		return "payload: " + text
	}
	return fmt.Sprintf("field %q: %s", field, text)
}

// fieldPath turns a JSON Pointer into a payload instance ("/sub/a",
// "/keys/2") into a field name as messages show it ("sub.a", "keys[2]");
// "" is the payload itself.
func fieldPath(pointer string) string {
	if pointer == "" || pointer == "/" {
		return ""
	}
	var b strings.Builder
	for i, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch {
		case i > 0 && isIndex(tok):
			b.WriteString("[" + tok + "]")
		case i > 0:
			b.WriteString("." + tok)
		default:
			b.WriteString(tok)
		}
	}
	return b.String()
}

// joinField names the member name of the object at field.
func joinField(field, name string) string {
	if field == "" {
		return name
	}
	return field + "." + name
}

// isIndex reports whether tok is an array index: decimal digits.
func isIndex(tok string) bool {
	if tok == "" {
		return false
	}
	for _, c := range tok {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
