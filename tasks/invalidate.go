package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
)

// TypeInvalidate is the task type of cache invalidation in the background:
// delete listed keys, or every key matching a pattern.
const TypeInvalidate = "cache:invalidate"

// MaxInvalidateKeys is the most keys one cache:invalidate task may list.
const MaxInvalidateKeys = 10_000

// invalidateBatch is how many listed keys go into one Delete call.
const invalidateBatch = 1000

// Invalidate is the payload of a cache:invalidate task. Exactly one of Keys
// and Pattern is set.
type Invalidate struct {
	// Keys are the cache keys to delete.
	Keys []string `json:"keys,omitempty" jsonschema:"minItems=1,maxItems=10000,minLength=1" help:"cache keys to delete, 1 to 10000 (or give pattern)"`
	// Pattern is a Redis glob (*, ?, [...]) matched against the cache's
	// keys; it only ever reaches keys inside the cache's prefix, never
	// asynq's.
	Pattern string `json:"pattern,omitempty" jsonschema:"maxLength=512" help:"glob matching the cache keys to delete, e.g. user:* (or give keys)"`
}

// Validate checks that exactly one of Keys and Pattern is given and that
// each is well formed. It is called whenever a payload is decoded; its
// errors name the field.
func (p Invalidate) Validate() error {
	switch {
	case p.Keys == nil && p.Pattern == "":
		return errors.New(`give one of the fields "keys" and "pattern"`)
	case p.Keys != nil && p.Pattern != "":
		return errors.New(`give one of the fields "keys" and "pattern", not both`)
	case p.Pattern != "":
		return checkKey("pattern", p.Pattern)
	}
	if n := len(p.Keys); n < 1 || n > MaxInvalidateKeys {
		return fmt.Errorf("field %q: %d keys, want 1 to %d", "keys", n, MaxInvalidateKeys)
	}
	for i, k := range p.Keys {
		if k == "" {
			return fmt.Errorf("field %q: empty", fmt.Sprintf("keys[%d]", i))
		}
	}
	return nil
}

// InvalidateResult is the result of a cache:invalidate task, stored as the
// asynq task result in its JSON form.
type InvalidateResult struct {
	Deleted int64 `json:"deleted"` // keys that existed and were deleted
}

// NewInvalidateTask returns a cache:invalidate task for p, on queue
// "default" with 3 retries unless opts say otherwise. Errors wrap
// ErrInvalidPayload.
func NewInvalidateTask(p Invalidate, opts ...asynq.Option) (*asynq.Task, error) {
	return CacheInvalidate.NewTask(p, opts...)
}

// CacheInvalidate is the handle of the cache:invalidate task type: CacheInvalidate.NewTask builds a task
// with a typed payload, CacheInvalidate.Enqueue enqueues one.
var CacheInvalidate = Define(TypeInvalidate,
	"Delete cache keys, listed or matching a glob pattern (only inside the cache's prefix; asynq's keys are never touched)",
	invalidate,
	asynq.Queue("default"), asynq.MaxRetry(3))

func invalidate(ctx context.Context, deps Deps, p Invalidate) ([]byte, error) {
	var deleted int64
	if p.Pattern != "" {
		deps.ReportBestEffort(ctx, 0, "deleting keys matching "+p.Pattern)
		n, err := deps.Cache.DeletePattern(ctx, p.Pattern)
		if err != nil {
			return nil, fmt.Errorf("invalidate pattern %q: %w", p.Pattern, err)
		}
		deleted = n
	} else {
		for i := 0; i < len(p.Keys); i += invalidateBatch {
			batch := p.Keys[i:min(i+invalidateBatch, len(p.Keys))]
			n, err := deps.Cache.Delete(ctx, batch...)
			if err != nil {
				return nil, fmt.Errorf("invalidate %d keys: %w", len(batch), err)
			}
			deleted += n
			if done := i + len(batch); done < len(p.Keys) {
				deps.ReportBestEffort(ctx, float64(100*done/len(p.Keys)), fmt.Sprintf("%d of %d keys done", done, len(p.Keys)))
			}
		}
	}
	if p.Pattern != "" || len(p.Keys) > invalidateBatch {
		// A one-batch delete is a single round trip: a progress report
		// would double its cost, and --wait shows the result anyway.
		deps.ReportBestEffort(ctx, 100, fmt.Sprintf("deleted %d keys", deleted))
	}
	return json.Marshal(InvalidateResult{Deleted: deleted})
}
