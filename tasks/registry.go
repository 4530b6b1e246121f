package tasks

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/hibiken/asynq"
)

// Registry is the set of task types a process knows. The worker serves
// them, the enqueue CLI and the web process validate against them. It is
// safe for concurrent reads once built.
type Registry struct {
	defs map[string]*Definition
}

// NewRegistry returns a registry of defs (each a *Type[P] or a
// *Definition). A nil definition or a type name given twice is an error.
func NewRegistry(defs ...Declared) (*Registry, error) {
	r := &Registry{defs: make(map[string]*Definition, len(defs))}
	for i, dd := range defs {
		var d *Definition
		if dd != nil {
			d = dd.definition()
		}
		if d == nil || d.typ == "" {
			return nil, fmt.Errorf("tasks: registry: definition %d is nil", i)
		}
		if _, dup := r.defs[d.typ]; dup {
			return nil, fmt.Errorf("tasks: registry: task type %q defined twice", d.typ)
		}
		r.defs[d.typ] = d
	}
	return r, nil
}

// Lookup returns the definition of typ.
func (r *Registry) Lookup(typ string) (*Definition, bool) {
	d, ok := r.defs[typ]
	return d, ok
}

// Definitions returns every definition, sorted by type name.
func (r *Registry) Definitions() []*Definition {
	out := make([]*Definition, 0, len(r.defs))
	for _, d := range r.defs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].typ < out[j].typ })
	return out
}

// Types returns the type names, sorted.
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.defs))
	for t := range r.defs {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// NewTask validates payload against typ and builds the task. Errors wrap
// ErrUnknownType (naming the known types) or ErrInvalidPayload.
func (r *Registry) NewTask(typ string, payload []byte, opts ...asynq.Option) (*asynq.Task, error) {
	d, ok := r.defs[typ]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownType, typ, strings.Join(r.Types(), ", "))
	}
	return d.NewTask(payload, opts...)
}
