package tasks

import "sync"

// Builtin returns forgeq's built-in task types: DataProcess, CacheInvalidate
// and CacheWarm. They are ordinary types declared with Define, examples of
// what a program's own types look like; a program serves them by
// registering them like its own.
func Builtin() []Declared { return []Declared{DataProcess, CacheInvalidate, CacheWarm} }

// Default returns the registry of forgeq's built-in task types (Builtin).
// It is built once and shared; it is safe for concurrent use.
func Default() *Registry { return defaultRegistry() }

var defaultRegistry = sync.OnceValue(func() *Registry {
	r, err := NewRegistry(Builtin()...)
	if err != nil {
		// Unreachable: a duplicate type name is a programming error that
		// TestDefault catches (it finds this registry empty). Never panic
		// in a process for it.
		return &Registry{defs: map[string]*Definition{}}
	}
	return r
})
