package tasks

import "sync"

// Default returns the registry of forgeq's built-in task types:
// TypeProcessData, TypeInvalidate and TypeWarm. It is built once and
// shared; it is safe for concurrent use.
func Default() *Registry { return defaultRegistry() }

var defaultRegistry = sync.OnceValue(func() *Registry {
	r, err := NewRegistry(processDataDef, invalidateDef, warmDef)
	if err != nil {
		// Unreachable: a duplicate type name is a programming error that
		// TestDefault catches (it finds this registry empty). Never panic
		// in a process for it.
		return &Registry{defs: map[string]*Definition{}}
	}
	return r
})
