package enqueue

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/tasks"
)

// decodeJSON decodes s, which must be exactly one JSON value.
func decodeJSON[T any](tb testing.TB, s string) T {
	tb.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("decode %q: %v", s, err)
	}
	if dec.More() {
		tb.Fatalf("more than one JSON value in %q", s)
	}
	return v
}

func TestList(t *testing.T) {
	t.Parallel()
	// No Redis is needed: the environment names none that answers.
	r := runCmd(t, map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}, "", "--list")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, d := range tasks.Default().Definitions() {
		if !strings.Contains(r.stdout, d.Type()+" (queue "+d.Queue()+")") || !strings.Contains(r.stdout, d.Description()) {
			t.Errorf("listing lacks %s with its queue and description:\n%s", d.Type(), r.stdout)
		}
		for _, f := range d.Fields() {
			if !strings.Contains(r.stdout, f.Name) || !strings.Contains(r.stdout, f.Help) {
				t.Errorf("listing lacks field %s of %s", f.Name, d.Type())
			}
		}
	}
	if !strings.Contains(r.stdout, "required") || !strings.Contains(r.stdout, "optional") {
		t.Errorf("listing does not say which fields are required:\n%s", r.stdout)
	}
	// The task catalogue cannot be read: a warning, and only the
	// program's types.
	if !strings.Contains(r.stderr, "warning: the task catalogue could not be read") || !strings.Contains(r.stderr, "cannot reach Redis") {
		t.Errorf("stderr lacks the catalogue warning: %q", r.stderr)
	}
}

func TestListJSON(t *testing.T) {
	t.Parallel()
	r := runCmd(t, map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}, "", "--list", "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got := decodeJSON[[]typeJSON](t, r.stdout)
	var want []typeJSON
	for _, d := range tasks.Default().Definitions() {
		want = append(want, typeJSON{Type: d.Type(), Description: d.Description(), Queue: d.Queue(), Fields: d.Fields(),
			Local: true, Schema: d.Schema()})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("--list --json (-want +got):\n%s", diff)
	}
	// The field names machines read.
	for _, key := range []string{`"type":`, `"description":`, `"queue":`, `"fields":`, `"name":`, `"required":`, `"help":`, `"local":`, `"published":`, `"schema":`} {
		if !strings.Contains(r.stdout, key) {
			t.Errorf("output lacks %s", key)
		}
	}
}
