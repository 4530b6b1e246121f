package tasks

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// DedupMode says what an enqueue whose dedup key is held by a waiting
// (pending or scheduled) task does.
type DedupMode string

const (
	// DedupKeep leaves the held task as it is and returns it: the enqueue
	// is a no-op. It is the default.
	DedupKeep DedupMode = "keep"
	// DedupReplace replaces the held task's message (payload and options)
	// with the new one, keeping its id and run time.
	DedupReplace DedupMode = "replace"
	// DedupDebounce replaces the held task's message and, when it is
	// scheduled, moves its run time to the new task's (its delay is the
	// quiet period), never later than Dedup.MaxDelay after the first
	// enqueue of the key: a task cannot be postponed forever. A held task
	// already pending is only replaced.
	DedupDebounce DedupMode = "debounce"
)

// DedupRelease says when a task frees its dedup key, so that the next
// enqueue with the key makes a new task.
type DedupRelease string

const (
	// ReleaseOnStart frees the key when the task starts: an enqueue while
	// it runs makes a new task. It is the default.
	ReleaseOnStart DedupRelease = "start"
	// ReleaseOnFinish frees the key when the task finishes for good
	// (succeeds, or fails without a retry left); while it runs or waits
	// to retry, DedupKeep returns it and the other modes conflict
	// (ErrDedupConflict).
	ReleaseOnFinish DedupRelease = "finish"
)

// MaxDedupKeyLen is the longest dedup key, in bytes.
const MaxDedupKeyLen = 256

// Headers of a task with a dedup key, read by the worker's middleware
// (worker/dedup.go) to free the key.
const (
	HeaderDedupKey     = "forgeq-dedup-key"
	HeaderDedupRelease = "forgeq-dedup-release"
)

// Dedup deduplicates a task of EnqueueBatch by a key of the caller's: while
// a task enqueued with the key waits (pending or scheduled), another
// enqueue with the key in the same queue does what Mode says instead of
// making a second task. Unlike asynq.Unique, the key does not expire on a
// timer: the task frees it when Release says (the worker's middleware
// does it; a task that is gone, completed or archived frees it as well).
// The zero values of Mode and Release are DedupKeep and ReleaseOnStart.
type Dedup struct {
	// Key is the dedup key, 1 to MaxDedupKeyLen bytes of UTF-8 without
	// control characters. It is scoped to the task's queue, and all tasks
	// of a key must be of one type.
	Key string
	// Mode is what a second enqueue does: DedupKeep, DedupReplace or
	// DedupDebounce.
	Mode DedupMode
	// Release is when the task frees the key: ReleaseOnStart or
	// ReleaseOnFinish.
	Release DedupRelease
	// MaxDelay, for DedupDebounce only (and required there), bounds how
	// far after the first enqueue of the key debouncing may push the run
	// time: 1s to 366 days, at least the task's delay.
	MaxDelay time.Duration
}

func (d Dedup) mode() DedupMode {
	if d.Mode == "" {
		return DedupKeep
	}
	return d.Mode
}

func (d Dedup) release() DedupRelease {
	if d.Release == "" {
		return ReleaseOnStart
	}
	return d.Release
}

// CheckDedup checks d for a task whose delay (until it runs) is delay, as
// every entry point does (EnqueueBatch, the enqueue CLI's --dedup-* flags
// and fields, POST /api/tasks/{type}): the key (dedup_key), the mode
// (dedup_mode; debounce needs a delay, its quiet period), the release
// (dedup_release) and the maximum delay (dedup_max_delay; required by
// debounce and only allowed with it). The error is an *OptionError.
func CheckDedup(d Dedup, delay time.Duration) error {
	fail := func(option, value, rule string) error {
		return &OptionError{Option: option, Value: value, Rule: rule}
	}
	switch {
	case d.Key == "":
		return fail("dedup_key", d.Key, fmt.Sprintf("is empty; want 1 to %d bytes", MaxDedupKeyLen))
	case len(d.Key) > MaxDedupKeyLen:
		return fail("dedup_key", d.Key, fmt.Sprintf(ruleTooLong, len(d.Key), MaxDedupKeyLen))
	case !utf8.ValidString(d.Key):
		return fail("dedup_key", d.Key, "is not valid UTF-8")
	}
	for _, r := range d.Key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fail("dedup_key", d.Key, "has a control character")
		}
	}
	switch d.Mode {
	case "", DedupKeep, DedupReplace, DedupDebounce:
	default:
		return fail("dedup_mode", string(d.Mode), "want keep, replace or debounce")
	}
	switch d.Release {
	case "", ReleaseOnStart, ReleaseOnFinish:
	default:
		return fail("dedup_release", string(d.Release), "want start or finish")
	}
	if d.Mode != DedupDebounce {
		if d.MaxDelay != 0 {
			return fail("dedup_max_delay", d.MaxDelay.String(), "is only for dedup mode debounce")
		}
		return nil
	}
	switch {
	case delay <= 0:
		return fail("dedup_mode", string(d.Mode), "needs a delay: the task's delay is the quiet period that debounce pushes back")
	case d.MaxDelay == 0:
		return fail("dedup_max_delay", "", "is required with dedup mode debounce, so that a task cannot be postponed forever")
	case d.MaxDelay < time.Second:
		return fail("dedup_max_delay", d.MaxDelay.String(), "want at least 1s")
	case d.MaxDelay > MaxOptionDuration:
		return fail("dedup_max_delay", d.MaxDelay.String(), ruleTooFar)
	case d.MaxDelay < delay:
		return fail("dedup_max_delay", d.MaxDelay.String(), fmt.Sprintf("want at least the delay (%v)", delay.Round(time.Second)))
	}
	return nil
}

// DedupKey returns the Redis key of dedup key key on queue:
// forgeq:dedup:{<queue>}:<key>, in the queue's hash slot. It is a hash of
// the holding task's id and type, its release, and when the key was
// taken (first; debounce counts its maximum delay from it).
func DedupKey(queue, key string) string { return "forgeq:dedup:{" + queue + "}:" + key }

// headers returns the item's task headers: its dedup key and release, for
// the worker's middleware.
func (it BatchItem) headers() map[string]string {
	if it.Dedup == nil {
		return nil
	}
	return map[string]string{HeaderDedupKey: it.Dedup.Key, HeaderDedupRelease: string(it.Dedup.release())}
}

var releaseScript = redis.NewScript(`
if redis.call("HGET", KEYS[1], "id") == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
`)

// ReleaseDedup frees the dedup key of the task id of queue when the task
// still holds it, and reports whether it did. The worker's middleware
// calls it; it is safe for concurrent use.
func ReleaseDedup(ctx context.Context, rdb redis.UniversalClient, queue, key, id string) (bool, error) {
	n, err := releaseScript.Run(ctx, rdb, []string{DedupKey(queue, key)}, id).Int()
	if err != nil {
		return false, fmt.Errorf("tasks: release dedup key %q: %w", key, err)
	}
	return n == 1, nil
}

// DedupOf returns the dedup key and release of task t (from its headers),
// and false when it has none.
func DedupOf(t *asynq.Task) (key string, release DedupRelease, ok bool) {
	h := t.Headers()
	key, ok = h[HeaderDedupKey]
	if !ok || key == "" {
		return "", "", false
	}
	return key, DedupRelease(h[HeaderDedupRelease]), true
}
