package tasks

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLength is the longest cache key, in characters, that data:process
// and cache:warm accept, and the longest cache:invalidate pattern.
const MaxKeyLength = 512

// MaxTTLSeconds is the largest ttl_seconds a payload may ask for: 365 days.
const MaxTTLSeconds = 365 * 24 * 60 * 60

// lockKeyPrefix begins the keys cachemgr reserves for GetOrCompute's locks
// (see the cachemgr package doc); a task must not write them.
const lockKeyPrefix = "__lock__:"

// checkKey checks the cache key (or pattern) in field: valid UTF-8, 1 to
// MaxKeyLength characters, no control characters, not a reserved lock key.
func checkKey(field, key string) error {
	switch n := utf8.RuneCountInString(key); {
	case n == 0:
		return fmt.Errorf("field %q: empty", field)
	case n > MaxKeyLength:
		return fmt.Errorf("field %q: %d characters, over the %d-character limit", field, n, MaxKeyLength)
	case !utf8.ValidString(key):
		return fmt.Errorf("field %q: not valid UTF-8", field)
	case strings.IndexFunc(key, unicode.IsControl) >= 0:
		return fmt.Errorf("field %q: %q contains a control character", field, key)
	case strings.HasPrefix(key, lockKeyPrefix):
		return fmt.Errorf("field %q: %q: keys beginning %q are reserved for the cache's locks", field, key, lockKeyPrefix)
	}
	return nil
}

// checkRange checks that the integer in field lies in [lo, hi].
func checkRange(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("field %q: %d is out of range [%d, %d]", field, v, lo, hi)
	}
	return nil
}

// ttlOf converts a payload's ttl_seconds (0: the cache's default TTL) into
// the TTL argument of the cache.
func ttlOf(seconds int) time.Duration { return time.Duration(seconds) * time.Second }
