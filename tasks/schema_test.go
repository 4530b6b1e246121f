package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// schemaOf returns the schema of typ in the default registry, decoded.
func schemaOf(tb testing.TB, typ string) map[string]any {
	tb.Helper()
	def, ok := tasks.Default().Lookup(typ)
	if !ok {
		tb.Fatalf("no task type %q", typ)
	}
	return decodeSchema(tb, def.Schema())
}

func decodeSchema(tb testing.TB, b json.RawMessage) map[string]any {
	tb.Helper()
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		tb.Fatalf("schema %s: %v", b, err)
	}
	return s
}

// TestSchemaProcessData is the whole published schema of data:process.
func TestSchemaProcessData(t *testing.T) {
	t.Parallel()
	want := map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"title":                "data:process",
		"description":          tasks.DataProcess.Definition().Description(),
		"type":                 "object",
		"additionalProperties": false,
		"required":             []any{"key", "work"},
		"properties": map[string]any{
			"key": map[string]any{
				"type": "string", "minLength": 1.0, "maxLength": 512.0,
				"description": "cache key of the value, 1 to 512 characters, no control characters",
			},
			"work": map[string]any{
				"type": "integer", "minimum": 1.0, "maximum": 50_000_000.0,
				"description": "rounds of SHA-256 the computation costs, 1 to 50000000",
			},
			"ttl_seconds": map[string]any{
				"type": "integer", "minimum": 0.0, "maximum": float64(tasks.MaxTTLSeconds),
				"description": "seconds the value stays cached, 0 (the default) for the cache's default TTL",
			},
		},
	}
	if diff := cmp.Diff(want, schemaOf(t, tasks.TypeProcessData)); diff != "" {
		t.Errorf("schema (-want +got):\n%s", diff)
	}
}

// TestSchemaBuiltins checks what every built-in schema must say: the
// draft, title, description, strictness, the required fields (those
// without omitempty), each field's help as its description, and the
// ranges of the payload's Validate.
func TestSchemaBuiltins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		giveType     string
		wantRequired []any
		wantRanges   map[string]map[string]any // property: keyword: value
	}{
		{
			giveType:     tasks.TypeProcessData,
			wantRequired: []any{"key", "work"},
			wantRanges: map[string]map[string]any{
				"key":         {"minLength": 1.0, "maxLength": 512.0},
				"work":        {"minimum": 1.0, "maximum": 50_000_000.0},
				"ttl_seconds": {"minimum": 0.0, "maximum": 31_536_000.0},
			},
		},
		{
			giveType:     tasks.TypeWarm,
			wantRequired: []any{"keys", "work"},
			wantRanges: map[string]map[string]any{
				"keys": {"minItems": 1.0, "maxItems": 100_000.0,
					"items": map[string]any{"type": "string", "minLength": 1.0, "maxLength": 512.0}},
				"work":        {"minimum": 1.0, "maximum": 1_000_000.0},
				"ttl_seconds": {"minimum": 0.0, "maximum": 31_536_000.0},
			},
		},
		{
			giveType:     tasks.TypeInvalidate,
			wantRequired: nil, // keys or pattern: Validate says which
			wantRanges: map[string]map[string]any{
				"keys":    {"minItems": 1.0, "maxItems": 10_000.0, "items": map[string]any{"type": "string", "minLength": 1.0}},
				"pattern": {"maxLength": 512.0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.giveType, func(t *testing.T) {
			t.Parallel()
			def, _ := tasks.Default().Lookup(tt.giveType)
			s := schemaOf(t, tt.giveType)
			head := map[string]any{"$schema": s["$schema"], "title": s["title"], "description": s["description"],
				"type": s["type"], "additionalProperties": s["additionalProperties"]}
			wantHead := map[string]any{"$schema": "https://json-schema.org/draft/2020-12/schema", "title": tt.giveType,
				"description": def.Description(), "type": "object", "additionalProperties": false}
			if diff := cmp.Diff(wantHead, head); diff != "" {
				t.Errorf("schema head (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRequired, s["required"]); diff != "" && tt.wantRequired != nil {
				t.Errorf("required (-want +got):\n%s", diff)
			} else if tt.wantRequired == nil && s["required"] != nil {
				t.Errorf("required = %v, want none", s["required"])
			}
			props, _ := s["properties"].(map[string]any)
			for _, f := range def.Fields() {
				p, _ := props[f.Name].(map[string]any)
				if p["description"] != f.Help {
					t.Errorf("property %s: description %q, want the field's help %q", f.Name, p["description"], f.Help)
				}
			}
			for name, want := range tt.wantRanges {
				p, _ := props[name].(map[string]any)
				got := make(map[string]any)
				for k := range want {
					got[k] = p[k]
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("property %s ranges (-want +got):\n%s", name, diff)
				}
			}
		})
	}
}

// Payloads of the nested schema test.
type (
	nestedPayload struct {
		embeddedPart
		Name  string            `json:"name" help:"the name"`
		Sub   nestedSub         `json:"sub" help:"a nested object"`
		Items []nestedSub       `json:"items,omitempty" help:"a list of objects"`
		ByKey map[string]string `json:"by_key,omitempty" help:"a map"`
		Delay time.Duration     `json:"delay,omitempty"`
	}
	embeddedPart struct {
		Region string `json:"region" help:"the region, from an embedded struct"`
	}
	nestedSub struct {
		A int    `json:"a" help:"a nested field" jsonschema:"minimum=1"`
		B string `json:"b,omitempty"`
	}
)

var nestedType = tasks.Define("test:nested", "A payload with nested structs.",
	func(context.Context, tasks.Deps, nestedPayload) ([]byte, error) { return nil, nil })

// TestSchemaNested checks help and required fields in nested, listed and
// embedded structs.
func TestSchemaNested(t *testing.T) {
	t.Parallel()
	s := decodeSchema(t, nestedType.Definition().Schema())
	props := s["properties"].(map[string]any)
	sub := props["sub"].(map[string]any)
	items := props["items"].(map[string]any)["items"].(map[string]any)
	got := map[string]any{
		"required":            s["required"],
		"region":              props["region"].(map[string]any)["description"],
		"sub":                 sub["description"],
		"sub.required":        sub["required"],
		"sub.additional":      sub["additionalProperties"],
		"sub.a":               sub["properties"].(map[string]any)["a"],
		"items.a.description": items["properties"].(map[string]any)["a"].(map[string]any)["description"],
		"by_key":              props["by_key"].(map[string]any)["description"],
		"delay":               props["delay"].(map[string]any)["type"],
	}
	want := map[string]any{
		"required":            []any{"region", "name", "sub"},
		"region":              "the region, from an embedded struct",
		"sub":                 "a nested object",
		"sub.required":        []any{"a"},
		"sub.additional":      false,
		"sub.a":               map[string]any{"type": "integer", "minimum": 1.0, "description": "a nested field"},
		"items.a.description": "a nested field",
		"by_key":              "a map",
		"delay":               "integer",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nested schema (-want +got):\n%s", diff)
	}

	// A Definition hands out copies: changing one changes no other.
	b := nestedType.Definition().Schema()
	b[0] = 'X'
	if nestedType.Definition().Schema()[0] != '{' {
		t.Error("Schema returned the cached bytes themselves")
	}
}

// published returns the PublishedType of def as a worker publishes it,
// through a catalogue on miniredis.
func published(tb testing.TB, defs ...tasks.Declared) *tasks.Catalog {
	tb.Helper()
	b := setupCatalog(tb)
	reg, err := tasks.NewRegistry(defs...)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := b.cat.Publish(context.Background(), reg, tasks.WorkerInfo{ID: "w1"}); err != nil {
		tb.Fatal(err)
	}
	return b.cat
}

// TestPublishedValidate checks that the published schema refuses bad
// payloads with messages naming the field.
func TestPublishedValidate(t *testing.T) {
	t.Parallel()
	cat := published(t, append(tasks.Builtin(), nestedType)...)
	tests := []struct {
		name        string
		giveType    string
		givePayload string
		wantErr     string // "" for valid; else the whole message after the type
	}{
		{"valid", tasks.TypeProcessData, `{"key":"k","work":1}`, ""},
		{"valid at the limits", tasks.TypeProcessData, `{"key":"` + strings.Repeat("é", 512) + `","work":50000000,"ttl_seconds":31536000}`, ""},
		{"empty payload of a type without required fields", tasks.TypeInvalidate, ``, ""},
		{"missing required field", tasks.TypeProcessData, `{"key":"k"}`, `missing required field "work"`},
		{"missing two required fields", tasks.TypeProcessData, ` `, `missing required field "key"; missing required field "work"`},
		{"out of range", tasks.TypeProcessData, `{"key":"k","work":0}`, `field "work": minimum: got 0, want 1`},
		{"over the maximum", tasks.TypeWarm, `{"keys":["a"],"work":1000001}`, `field "work": maximum: got 1000001, want 1000000`},
		{"unknown field", tasks.TypeProcessData, `{"key":"k","work":1,"colour":"red"}`, `unknown field "colour"`},
		{"wrong type", tasks.TypeProcessData, `{"key":"k","work":"ten"}`, `field "work": got string, want integer`},
		{"fraction", tasks.TypeProcessData, `{"key":"k","work":1.5}`, `field "work": got number, want integer`},
		{"empty string", tasks.TypeProcessData, `{"key":"","work":1}`, `field "key": minLength: got 0, want 1`},
		{"array element", tasks.TypeWarm, `{"keys":["a",""],"work":1}`, `field "keys[1]": minLength: got 0, want 1`},
		{"empty array", tasks.TypeWarm, `{"keys":[],"work":1}`, `field "keys": minItems: got 0, want 1`},
		{"not an object", tasks.TypeProcessData, `[1]`, `payload must be a JSON object, not array`},
		{"null payload", tasks.TypeProcessData, `null`, `payload must be a JSON object, not null`},
		{"malformed JSON", tasks.TypeProcessData, `{"key":`, `malformed JSON: unexpected EOF`},
		{"trailing data", tasks.TypeProcessData, `{} {}`, `malformed JSON: invalid character after top-level value`},
		{"nested field", nestedType.Name(), `{"region":"r","name":"n","sub":{"a":0}}`, `field "sub.a": minimum: got 0, want 1`},
		{"nested missing field", nestedType.Name(), `{"region":"r","name":"n","sub":{}}`, `missing required field "sub.a"`},
		{"nested unknown field", nestedType.Name(), `{"region":"r","name":"n","sub":{"a":1,"c":2}}`, `unknown field "sub.c"`},
		{"field in a list", nestedType.Name(), `{"region":"r","name":"n","sub":{"a":1},"items":[{"a":1},{"a":"x"}]}`, `field "items[1].a": got string, want integer`},
		{"over MaxPayloadSize", tasks.TypeProcessData, overSize(tasks.TypeProcessData),
			fmt.Sprintf("payload is %d bytes, over the 1048576-byte limit", len(overSize(tasks.TypeProcessData)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := cat.Lookup(context.Background(), tt.giveType)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Validate([]byte(tt.givePayload))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tasks.ErrInvalidPayload) {
				t.Fatalf("Validate: %v, want an error wrapping ErrInvalidPayload", err)
			}
			want := "tasks: invalid payload: " + tt.giveType + ": " + tt.wantErr
			if diff := cmp.Diff(want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPublishedAgreesWithDefinition checks the published schemas of the
// built-in types against their own validation: every payload the schema
// accepts among the bad payloads is one the schema cannot express (listed
// here), and every good payload passes both.
func TestPublishedAgreesWithDefinition(t *testing.T) {
	t.Parallel()
	cat := published(t, tasks.Builtin()...)
	beyondSchema := map[string]bool{ // what only the payload's Validate checks
		"data:process/key with newline":                   true,
		"data:process/key with NUL":                       true,
		"data:process/reserved lock key":                  true,
		"cache:invalidate/neither keys nor pattern":       true,
		"cache:invalidate/empty payload":                  true,
		"cache:invalidate/empty pattern":                  true,
		"cache:invalidate/both keys and pattern":          true,
		"cache:invalidate/pattern with control character": true,
		"cache:invalidate/pattern reaching the locks":     true,
		"cache:warm/key with control character":           true,
	}
	for _, tt := range badPayloads() {
		name := tt.giveType + "/" + tt.name
		p, err := cat.Lookup(context.Background(), tt.giveType)
		if err != nil {
			t.Fatal(err)
		}
		err = p.Validate([]byte(tt.givePayload))
		switch {
		case err == nil && !beyondSchema[name]:
			t.Errorf("%s: the schema accepts %.60q, which the type refuses", name, tt.givePayload)
		case err != nil && beyondSchema[name]:
			t.Errorf("%s: the schema refuses it (%v); take it off the list", name, err)
		}
	}
	for _, give := range []struct{ typ, payload string }{
		{tasks.TypeProcessData, `{"key": "report:1", "work": 1000}`},
		{tasks.TypeProcessData, `{"key":"übung:日本","work":1,"ttl_seconds":0}`},
		{tasks.TypeInvalidate, `{"keys":["a","b"]}`},
		{tasks.TypeInvalidate, "\t{\"pattern\":\"user:*\"}\n"},
		{tasks.TypeWarm, `{"keys":["a","a","b"],"work":1000000}`},
	} {
		def, _ := tasks.Default().Lookup(give.typ)
		p, err := cat.Lookup(context.Background(), give.typ)
		if err != nil {
			t.Fatal(err)
		}
		if err := def.Validate([]byte(give.payload)); err != nil {
			t.Errorf("%s %s: Definition.Validate: %v", give.typ, give.payload, err)
		}
		if err := p.Validate([]byte(give.payload)); err != nil {
			t.Errorf("%s %s: PublishedType.Validate: %v", give.typ, give.payload, err)
		}
	}
}

// TestPublishedNewTask checks that a task built from a published type
// gets the published defaults, then the options given, and is refused
// what Definition.NewTask refuses.
func TestPublishedNewTask(t *testing.T) {
	t.Parallel()
	cat := published(t, tasks.Builtin()...)
	warm, err := cat.Lookup(context.Background(), tasks.TypeWarm)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := cat.Lookup(context.Background(), tasks.TypeInvalidate)
	if err != nil {
		t.Fatal(err)
	}
	type taskView struct {
		Type, Payload string
		Opts          map[asynq.OptionType]any
	}
	view := func(task *asynq.Task, defaults []asynq.Option, opts ...asynq.Option) taskView {
		v := taskView{Type: task.Type(), Payload: string(task.Payload()), Opts: map[asynq.OptionType]any{}}
		for _, o := range append(defaults, opts...) {
			v.Opts[o.Type()] = o.Value()
		}
		return v
	}
	tests := []struct {
		name        string
		give        tasks.PublishedType
		givePayload string
		giveOpts    []asynq.Option
		want        taskView
	}{
		{
			name:        "the published defaults",
			give:        warm,
			givePayload: `{ "keys": ["a"], "work": 1 }`,
			want: taskView{Type: "cache:warm", Payload: `{"keys":["a"],"work":1}`, Opts: map[asynq.OptionType]any{
				asynq.QueueOpt: "low", asynq.MaxRetryOpt: 3, asynq.TimeoutOpt: 30 * time.Minute}},
		},
		{
			name:        "options override them",
			give:        warm,
			givePayload: `{"keys":["a"],"work":1}`,
			giveOpts:    []asynq.Option{asynq.Queue("critical"), asynq.MaxRetry(0), asynq.Timeout(time.Minute)},
			want: taskView{Type: "cache:warm", Payload: `{"keys":["a"],"work":1}`, Opts: map[asynq.OptionType]any{
				asynq.QueueOpt: "critical", asynq.MaxRetryOpt: 0, asynq.TimeoutOpt: time.Minute}},
		},
		{
			name:        "no timeout published",
			give:        inv,
			givePayload: `{"keys":["a"]}`,
			want: taskView{Type: "cache:invalidate", Payload: `{"keys":["a"]}`, Opts: map[asynq.OptionType]any{
				asynq.QueueOpt: "default", asynq.MaxRetryOpt: 3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tt.give.NewTask([]byte(tt.givePayload), tt.giveOpts...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, view(task, tt.give.Defaults(), tt.giveOpts...)); diff != "" {
				t.Errorf("task (-want +got):\n%s", diff)
			}
		})
	}

	for _, opt := range []asynq.Option{asynq.Timeout(500 * time.Millisecond), asynq.Group("g")} {
		if _, err := warm.NewTask([]byte(`{"keys":["a"],"work":1}`), opt); !errors.Is(err, tasks.ErrInvalidOption) {
			t.Errorf("%v: error %v, want ErrInvalidOption", opt, err)
		}
	}
	if _, err := warm.NewTask([]byte(`{"keys":["a"]}`)); !errors.Is(err, tasks.ErrInvalidPayload) {
		t.Errorf("bad payload: error %v, want ErrInvalidPayload", err)
	}
}

// TestPublishedFields checks that the fields read from a published schema
// are the definition's own.
func TestPublishedFields(t *testing.T) {
	t.Parallel()
	cat := published(t, append(tasks.Builtin(), nestedType)...)
	types, err := cat.Types(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range types {
		var want []tasks.Field
		if def, ok := tasks.Default().Lookup(p.Type); ok {
			want = def.Fields()
		} else {
			// Definition.Fields leaves out the fields of embedded
			// structs, and knows durations; the schema has the
			// embedded fields, as encoding/json does, and integers.
			want = []tasks.Field{
				{Name: "region", Type: "string", Required: true, Help: "the region, from an embedded struct"},
				{Name: "name", Type: "string", Required: true, Help: "the name"},
				{Name: "sub", Type: "object", Required: true, Help: "a nested object"},
				{Name: "items", Type: "array of object", Help: "a list of objects"},
				{Name: "by_key", Type: "object", Help: "a map"},
				{Name: "delay", Type: "integer"},
			}
		}
		if diff := cmp.Diff(want, p.Fields()); diff != "" {
			t.Errorf("%s fields (-want +got):\n%s", p.Type, diff)
		}
	}
}
