package tasks_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/forgeq/forgeq/tasks"
)

// remarshal decodes data strictly into a P and encodes that P again.
func remarshal[P any](data []byte) ([]byte, error) {
	var p P
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

// payloadTypes maps each built-in task type to remarshal of its payload
// type.
var payloadTypes = map[string]func([]byte) ([]byte, error){
	tasks.TypeProcessData: remarshal[tasks.ProcessData],
	tasks.TypeInvalidate:  remarshal[tasks.Invalidate],
	tasks.TypeWarm:        remarshal[tasks.Warm],
}

// decodeSeeds are payloads beyond badPayloads and the good ones: encodings
// and shapes encoding/json treats in ways worth checking.
var decodeSeeds = []string{
	`{"key":"report:1","work":1000}`,
	`{"key":"report:1","work":1000,"ttl_seconds":3600}`,
	`{"key":"übung:日本","work":1,"ttl_seconds":0}`,
	`{"keys":["a","b"]}`,
	`{"pattern":"user:*"}`,
	`{"keys":["a"],"pattern":null}`,
	`{"keys":null,"pattern":"p"}`,
	`{"keys":["a","a","b"],"work":1000000}`,
	`{"keys":["a"],"work":1,"ttl_seconds":null}`,
	// Names: escaped, in other cases, folding to a field's name.
	`{"k\u0065y":"k","work":1}`,
	`{"KEY":"k","work":1}`,
	`{"\u212aey":"k","work":1}`,
	`{"ke\u017f":"k","work":1}`,
	`{"work":1,"key":"k","":1}`,
	// Duplicate members: refused.
	`{"key":"\u0000","key":"k","work":1}`,
	`{"key":"k","key":null,"work":1}`,
	`{"key":null,"key":"k","work":1}`,
	`{"work":0,"key":"k","work":1}`,
	// Numbers.
	`{"key":"k","work":1.0}`,
	`{"key":"k","work":1e0}`,
	`{"key":"k","work":-0}`,
	`{"key":"k","work":01}`,
	`{"key":"k","work":0x10}`,
	`{"key":"k","work":9223372036854775808}`,
	`{"key":"k","work":1,"ttl_seconds":-9223372036854775808}`,
	// Strings.
	`{"key":"\ud800","work":1}`,
	`{"key":"\ud83d\ude00","work":1}`,
	`{"key":"a\u2028b","work":1}`,
	`{"key":"\u00e9","work":1}`,
	"{\"key\":\"\xff\",\"work\":1}",
	"{\"key\":\"\xc3\",\"work\":1}",
	"{\"key\":\"a\x7fb\",\"work\":1}",
	`{"key":"__lock__","work":1}`,
	`{"pattern":"*"}`,
	`{"pattern":"[","keys":null}`,
	// Whitespace, framing and other documents.
	"\ufeff{\"key\":\"k\",\"work\":1}",
	"\t\r\n {\"key\" : \"k\" , \"work\" : 1 }\n",
	`{"key":"k","work":1}garbage`,
	`{"key":"k","work":1}{}`,
	`{"key":"k","work":1}]`,
	`{"key":"k","work":1`,
	`{"key":"k","work":[1]}`,
	`{"key":{"k":1},"work":1}`,
	`{"keys":[["a"]],"work":1}`,
	`{"keys":["a",null],"work":1}`,
	`{"keys":{},"work":1}`,
	`null`,
	`true`,
	`"{}"`,
	`0`,
	`[]`,
	`{}`,
	``,
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"keys":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	// Nested duplicates, surrogate pairs and escapes in names.
	`{"keys":[{"a":1,"a":2}]}`,
	`{"key":"\ud83d\ude00\ud83d","work":1}`,
	`{"key":"\udc00","work":1}`,
	`{"k\u0065y":"k","k\u0065y":"j","work":1}`,
	"{\"key\":\"k\",\"work\":1,\"\xed\xa0\x80\":1}",
}

// FuzzDecode checks every built-in task type's payload decoding. For any
// bytes, Validate does not panic; its errors wrap ErrInvalidPayload and
// name the type, and NewTask rejects the same bytes with the same error.
// A payload Validate accepts builds a task whose payload is compact JSON
// that names only the type's fields (exactly), gives every required one,
// validates again and builds the same payload again; the payload
// re-encoded through encoding/json, as a map and as the type's struct,
// validates too.
func FuzzDecode(f *testing.F) {
	for _, tt := range badPayloads() {
		if len(tt.givePayload) <= 4096 {
			f.Add([]byte(tt.givePayload))
		}
	}
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	defs := tasks.Default().Definitions()
	if len(defs) == 0 {
		f.Fatal("tasks.Default() has no definitions")
	}
	for _, d := range defs {
		if payloadTypes[d.Type()] == nil {
			f.Fatalf("task type %q has no payload type in payloadTypes", d.Type())
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range defs {
			checkDecode(t, d, data)
		}
	})
}

// checkDecode checks data against d, as FuzzDecode describes.
func checkDecode(t testing.TB, d *tasks.Definition, data []byte) {
	t.Helper()
	typ := d.Type()
	err := d.Validate(data)
	task, taskErr := d.NewTask(data)
	if err != nil {
		if !errors.Is(err, tasks.ErrInvalidPayload) {
			t.Errorf("%s: Validate(%q) error %q does not wrap ErrInvalidPayload", typ, data, err)
		}
		if !strings.Contains(err.Error(), typ) {
			t.Errorf("%s: Validate(%q) error %q does not name the type", typ, data, err)
		}
		if task != nil || taskErr == nil || taskErr.Error() != err.Error() {
			t.Errorf("%s: Validate(%q) = %v, but NewTask returns %v and task %v", typ, data, err, taskErr, task)
		}
		return
	}
	if taskErr != nil {
		t.Fatalf("%s: Validate(%q) accepts the payload, NewTask rejects it: %v", typ, data, taskErr)
	}
	if task.Type() != typ {
		t.Errorf("%s: NewTask(%q) built a task of type %q", typ, data, task.Type())
	}
	payload := task.Payload()
	var compact bytes.Buffer
	if err := json.Compact(&compact, payload); err != nil || !bytes.Equal(compact.Bytes(), payload) {
		t.Errorf("%s: NewTask(%q) payload %q is not compact JSON (compact: %q, %v)", typ, data, payload, compact.Bytes(), err)
	}
	if err := d.Validate(payload); err != nil {
		t.Fatalf("%s: payload %q of NewTask(%q) does not validate: %v", typ, payload, data, err)
	}
	again, err := d.NewTask(payload)
	if err != nil || !bytes.Equal(again.Payload(), payload) {
		t.Errorf("%s: NewTask of its own payload %q = %v, %v", typ, payload, again, err)
	}

	var members map[string]json.RawMessage
	if err := json.Unmarshal(payload, &members); err != nil {
		t.Fatalf("%s: payload %q of NewTask(%q) is not a JSON object: %v", typ, payload, data, err)
	}
	fields := make(map[string]tasks.Field)
	for _, fd := range d.Fields() {
		fields[fd.Name] = fd
	}
	for name := range members {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s: accepted payload %q has the unknown field %q", typ, data, name)
		}
	}
	for name, fd := range fields {
		if v, ok := members[name]; fd.Required && (!ok || string(v) == "null") {
			t.Errorf("%s: accepted payload %q lacks the required field %q", typ, data, name)
		}
	}

	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var asMap map[string]any
	if err := dec.Decode(&asMap); err != nil {
		t.Fatalf("%s: decode payload %q as a map: %v", typ, payload, err)
	}
	viaMap, err := json.Marshal(asMap)
	if err != nil {
		t.Fatalf("%s: encode payload %q from a map: %v", typ, payload, err)
	}
	if err := d.Validate(viaMap); err != nil {
		t.Errorf("%s: payload %q re-encoded from a map as %q does not validate: %v", typ, payload, viaMap, err)
	}
	viaStruct, err := payloadTypes[typ](payload)
	if err != nil {
		t.Fatalf("%s: payload %q does not decode strictly into its struct: %v", typ, payload, err)
	}
	if err := d.Validate(viaStruct); err != nil {
		t.Errorf("%s: payload %q re-encoded from its struct as %q does not validate: %v", typ, payload, viaStruct, err)
	}
}
