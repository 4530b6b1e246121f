package tasks_test

import (
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

// badPayload is a payload its type must reject, and what the error must say.
type badPayload struct {
	name        string
	giveType    string
	givePayload string
	wantErr     []string // substrings of the error: the type, the field, the fault
}

// keysJSON returns the JSON array of n keys "<prefix>0", "<prefix>1", ...
func keysJSON(prefix string, n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	b, _ := json.Marshal(keys)
	return string(b)
}

// overSize is a well-formed payload of typ over MaxPayloadSize.
func overSize(typ string) string {
	long := strings.Repeat("k", 400)
	n := tasks.MaxPayloadSize/len(long) + 10
	switch typ {
	case tasks.TypeProcessData:
		return `{"key":"` + strings.Repeat("k", tasks.MaxPayloadSize) + `","work":1}`
	case tasks.TypeInvalidate:
		return `{"keys":` + keysJSON(long, n) + `}`
	default:
		return `{"keys":` + keysJSON(long, n) + `,"work":1}`
	}
}

// badPayloads is the catalogue of payloads the built-in types reject.
func badPayloads() []badPayload {
	const (
		pd  = tasks.TypeProcessData
		inv = tasks.TypeInvalidate
		wrm = tasks.TypeWarm
	)
	var out []badPayload
	// Faults every type rejects the same way.
	for _, typ := range []string{pd, inv, wrm} {
		out = append(out,
			badPayload{"malformed JSON", typ, `{"keys":`, []string{typ, "malformed JSON"}},
			badPayload{"trailing data", typ, `{} {}`, []string{typ, "malformed JSON"}},
			badPayload{"not an object", typ, `["a"]`, []string{typ, "payload must be a JSON object, not array"}},
			badPayload{"unknown field", typ, `{"colour":"red"}`, []string{typ, `unknown field "colour"`}},
			badPayload{"over MaxPayloadSize", typ, overSize(typ), []string{typ, "over the 1048576-byte limit"}},
		)
	}
	return append(out, []badPayload{
		// data:process
		{"empty payload", pd, ``, []string{pd, `missing required field "key"`}},
		{"blank payload", pd, " \n", []string{pd, `missing required field "key"`}},
		{"null payload", pd, `null`, []string{pd, `missing required field "key"`}},
		{"missing key", pd, `{"work":1}`, []string{`missing required field "key"`}},
		{"missing work", pd, `{"key":"k"}`, []string{`missing required field "work"`}},
		{"null key", pd, `{"key":null,"work":1}`, []string{`missing required field "key"`}},
		{"null work", pd, `{"key":"k","work":null}`, []string{`missing required field "work"`}},
		{"field name in other case", pd, `{"Key":"k","key":"k","work":1}`, []string{`unknown field "Key" (did you mean "key"?)`}},
		{"key of wrong type", pd, `{"key":7,"work":1}`, []string{`field "key": want string, got number`}},
		{"work of wrong type", pd, `{"key":"k","work":"10"}`, []string{`field "work": want int, got string`}},
		{"fractional work", pd, `{"key":"k","work":1.5}`, []string{`field "work": want int, got number 1.5`}},
		{"work beyond int64", pd, `{"key":"k","work":1e30}`, []string{`field "work": want int`}},
		{"ttl of wrong type", pd, `{"key":"k","work":1,"ttl_seconds":"1h"}`, []string{`field "ttl_seconds": want int, got string`}},
		{"empty key", pd, `{"key":"","work":1}`, []string{`field "key": empty`}},
		{"key too long", pd, `{"key":"` + strings.Repeat("é", tasks.MaxKeyLength+1) + `","work":1}`, []string{`field "key": 513 characters, over the 512-character limit`}},
		{"key with newline", pd, `{"key":"a\nb","work":1}`, []string{`field "key": "a\nb" contains a control character`}},
		{"key with NUL", pd, `{"key":"a\u0000","work":1}`, []string{`field "key"`, "control character"}},
		{"reserved lock key", pd, `{"key":"__lock__:k","work":1}`, []string{`field "key"`, "reserved"}},
		{"zero work", pd, `{"key":"k","work":0}`, []string{`field "work": 0 is out of range [1, 50000000]`}},
		{"negative work", pd, `{"key":"k","work":-5}`, []string{`field "work": -5 is out of range`}},
		{"work over max", pd, `{"key":"k","work":50000001}`, []string{`field "work": 50000001 is out of range`}},
		{"negative ttl", pd, `{"key":"k","work":1,"ttl_seconds":-1}`, []string{`field "ttl_seconds": -1 is out of range [0, 31536000]`}},
		{"ttl over max", pd, `{"key":"k","work":1,"ttl_seconds":31536001}`, []string{`field "ttl_seconds": 31536001 is out of range`}},
		{"field given twice", pd, `{"key":"k","work":1,"key":"j"}`, []string{pd, `duplicate field "key"`}},
		{"field given twice, escaped", pd, `{"key":"k","work":1,"k\u0065y":"j"}`, []string{`duplicate field "key"`}},
		{"key not UTF-8", pd, "{\"key\":\"a\xffb\",\"work\":1}", []string{`field "key": is not valid UTF-8`}},
		{"key truncated UTF-8", pd, "{\"key\":\"\xc3\",\"work\":1}", []string{`field "key": is not valid UTF-8`}},
		{"key with a lone surrogate", pd, `{"key":"\ud800","work":1}`, []string{`field "key": has an unpaired surrogate escape \ud800`}},
		{"field name not UTF-8", pd, "{\"key\":\"k\",\"work\":1,\"\xff\":1}", []string{`field "\xff": name is not valid UTF-8`}},

		// cache:invalidate
		{"empty payload", inv, ``, []string{inv, `give one of the fields "keys" and "pattern"`}},
		{"neither keys nor pattern", inv, `{}`, []string{`give one of the fields "keys" and "pattern"`}},
		{"null keys", inv, `{"keys":null}`, []string{`give one of the fields "keys" and "pattern"`}},
		{"empty pattern", inv, `{"pattern":""}`, []string{`give one of the fields "keys" and "pattern"`}},
		{"both keys and pattern", inv, `{"keys":["a"],"pattern":"a*"}`, []string{`give one of the fields "keys" and "pattern", not both`}},
		{"empty keys", inv, `{"keys":[]}`, []string{`field "keys": 0 keys, want 1 to 10000`}},
		{"too many keys", inv, `{"keys":` + keysJSON("k", tasks.MaxInvalidateKeys+1) + `}`, []string{`field "keys": 10001 keys, want 1 to 10000`}},
		{"empty key", inv, `{"keys":["a",""]}`, []string{`field "keys[1]": empty`}},
		{"keys of wrong type", inv, `{"keys":"a"}`, []string{`field "keys": want []string, got string`}},
		{"key of wrong type", inv, `{"keys":["a",2]}`, []string{`field "keys"`, "want string, got number"}},
		{"pattern of wrong type", inv, `{"pattern":["a*"]}`, []string{`field "pattern": want string, got array`}},
		{"pattern with control character", inv, `{"pattern":"a\t*"}`, []string{`field "pattern"`, "control character"}},
		{"pattern reaching the locks", inv, `{"pattern":"__lock__:*"}`, []string{`field "pattern"`, "reserved"}},
		{"key given twice in the list's object", inv, `{"keys":["a"],"pattern":null,"keys":["b"]}`, []string{`duplicate field "keys"`}},
		{"list item not UTF-8", inv, "{\"keys\":[\"a\",\"\xfe\"]}", []string{`field "keys[1]": is not valid UTF-8`}},

		// cache:warm
		{"empty payload", wrm, ``, []string{wrm, `missing required field "keys"`}},
		{"missing keys", wrm, `{"work":1}`, []string{`missing required field "keys"`}},
		{"missing work", wrm, `{"keys":["a"]}`, []string{`missing required field "work"`}},
		{"null keys", wrm, `{"keys":null,"work":1}`, []string{`missing required field "keys"`}},
		{"empty keys", wrm, `{"keys":[],"work":1}`, []string{`field "keys": 0 keys, want 1 to 100000`}},
		{"too many keys", wrm, `{"keys":` + keysJSON("", tasks.MaxWarmKeys+1) + `,"work":1}`, []string{`field "keys": 100001 keys, want 1 to 100000`}},
		{"empty key", wrm, `{"keys":["a",""],"work":1}`, []string{`field "keys[1]": empty`}},
		{"key with control character", wrm, `{"keys":["a\u007f"],"work":1}`, []string{`field "keys[0]": "a\x7f" contains a control character`}},
		{"keys of wrong type", wrm, `{"keys":{"a":1},"work":1}`, []string{`field "keys": want []string, got object`}},
		{"work of wrong type", wrm, `{"keys":["a"],"work":true}`, []string{`field "work": want int, got bool`}},
		{"zero work", wrm, `{"keys":["a"],"work":0}`, []string{`field "work": 0 is out of range [1, 1000000]`}},
		{"work over max", wrm, `{"keys":["a"],"work":1000001}`, []string{`field "work": 1000001 is out of range`}},
		{"negative ttl", wrm, `{"keys":["a"],"work":1,"ttl_seconds":-1}`, []string{`field "ttl_seconds": -1 is out of range`}},
	}...)
}

func TestBadPayloads(t *testing.T) {
	t.Parallel()
	reg := tasks.Default()
	for _, tt := range badPayloads() {
		t.Run(tt.giveType+"/"+tt.name, func(t *testing.T) {
			t.Parallel()
			def, ok := reg.Lookup(tt.giveType)
			if !ok {
				t.Fatalf("Lookup(%q): not found", tt.giveType)
			}
			errs := map[string]error{"Definition.Validate": def.Validate([]byte(tt.givePayload))}
			task, err := reg.NewTask(tt.giveType, []byte(tt.givePayload))
			if task != nil {
				t.Errorf("Registry.NewTask returned a task")
			}
			errs["Registry.NewTask"] = err
			for via, err := range errs {
				if !errors.Is(err, tasks.ErrInvalidPayload) {
					t.Fatalf("%s: error %v does not wrap ErrInvalidPayload", via, err)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: error %q does not contain %q", via, err, want)
					}
				}
			}
		})
	}
}

func TestGoodPayloads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		giveType    string
		givePayload string
		wantPayload string // as enqueued: compact
	}{
		{"process_data", tasks.TypeProcessData, `{"key": "report:1", "work": 1000}`, `{"key":"report:1","work":1000}`},
		{"process_data at the limits", tasks.TypeProcessData,
			`{"key":"` + strings.Repeat("é", tasks.MaxKeyLength) + `","work":50000000,"ttl_seconds":31536000}`,
			`{"key":"` + strings.Repeat("é", tasks.MaxKeyLength) + `","work":50000000,"ttl_seconds":31536000}`},
		{"process_data unicode key", tasks.TypeProcessData, `{"key":"übung:日本","work":1,"ttl_seconds":0}`, `{"key":"übung:日本","work":1,"ttl_seconds":0}`},
		{"invalidate keys", tasks.TypeInvalidate, `{"keys":["a","b"]}`, `{"keys":["a","b"]}`},
		{"invalidate pattern", tasks.TypeInvalidate, "\t{\"pattern\":\"user:*\"}\n", `{"pattern":"user:*"}`},
		{"invalidate null pattern", tasks.TypeInvalidate, `{"keys":["a"],"pattern":null}`, `{"keys":["a"],"pattern":null}`},
		{"warm", tasks.TypeWarm, `{"keys":["a","a","b"],"work":1000000}`, `{"keys":["a","a","b"],"work":1000000}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tasks.Default().NewTask(tt.giveType, []byte(tt.givePayload))
			if err != nil {
				t.Fatal(err)
			}
			got := struct{ Type, Payload string }{task.Type(), string(task.Payload())}
			want := struct{ Type, Payload string }{tt.giveType, tt.wantPayload}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("task (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewTaskRefusesSubSecondTimeout(t *testing.T) {
	t.Parallel()
	reg := tasks.Default()
	_, err := reg.NewTask(tasks.TypeProcessData, []byte(`{"key":"k","work":1}`), asynq.Timeout(500*time.Millisecond))
	if !errors.Is(err, tasks.ErrInvalidOption) {
		t.Fatalf("Timeout(500ms): error %v, want ErrInvalidOption", err)
	}
	const want = `tasks: invalid option: data:process: timeout "500ms": want at least 1s (asynq counts whole seconds, and would run the task with its 30m default)`
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	task, err := reg.NewTask(tasks.TypeProcessData, []byte(`{"key":"k","work":1}`), asynq.Timeout(time.Second))
	if err != nil || task == nil {
		t.Errorf("Timeout(1s): %v", err)
	}
}

func TestRegistryNewTaskUnknownType(t *testing.T) {
	t.Parallel()
	_, err := tasks.Default().NewTask("data:proces", []byte(`{}`))
	if !errors.Is(err, tasks.ErrUnknownType) {
		t.Fatalf("error %v does not wrap ErrUnknownType", err)
	}
	const want = `tasks: unknown task type "data:proces" (known: cache:invalidate, cache:warm, data:process)`
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}
