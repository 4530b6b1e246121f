package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/sync/errgroup"
)

// TypeWarm is the task type of cache warming: compute and cache the value
// of many keys ahead of their use.
const TypeWarm = "cache:warm"

// Limits of a cache:warm payload.
const (
	MaxWarmKeys = 100_000   // most keys one task may warm
	MaxWarmWork = 1_000_000 // largest work per key
)

// warmParallelism is how many keys one cache:warm task warms at a time:
// enough to overlap Redis round trips with computing.
const warmParallelism = 8

// Warm is the payload of a cache:warm task.
type Warm struct {
	// Keys are the cache keys to warm; a key listed twice is warmed once.
	Keys []string `json:"keys" jsonschema:"minItems=1,maxItems=100000,minLength=1,maxLength=512" help:"cache keys to warm, 1 to 100000, each 1 to 512 characters"`
	// Work is the number of SHA-256 rounds each value costs, as in
	// ProcessData: a warmed key holds Digest(key, Work).
	Work int `json:"work" jsonschema:"minimum=1,maximum=1000000" help:"rounds of SHA-256 each value costs, 1 to 1000000"`
	// TTLSeconds is how long the values stay cached; 0 means the cache's
	// default TTL.
	TTLSeconds int `json:"ttl_seconds,omitempty" jsonschema:"minimum=0,maximum=31536000" help:"seconds the values stay cached, 0 (the default) for the cache's default TTL"`
}

// Validate checks the ranges of p's fields. It is called whenever a payload
// is decoded; its errors name the field.
func (p Warm) Validate() error {
	if n := len(p.Keys); n < 1 || n > MaxWarmKeys {
		return fmt.Errorf("field %q: %d keys, want 1 to %d", "keys", n, MaxWarmKeys)
	}
	for i, k := range p.Keys {
		if err := checkKey(fmt.Sprintf("keys[%d]", i), k); err != nil {
			return err
		}
	}
	if err := checkRange("work", p.Work, 1, MaxWarmWork); err != nil {
		return err
	}
	return checkRange("ttl_seconds", p.TTLSeconds, 0, MaxTTLSeconds)
}

// WarmResult is the result of a cache:warm task, stored as the asynq task
// result in its JSON form. Warmed is Computed + Cached.
type WarmResult struct {
	Warmed   int `json:"warmed"`   // distinct keys now cached
	Computed int `json:"computed"` // of those, computed by this task
	Cached   int `json:"cached"`   // of those, cached already or computed by another task meanwhile
}

// NewWarmTask returns a cache:warm task for p, on queue "low" with 3
// retries and a 30-minute timeout unless opts say otherwise. Errors wrap
// ErrInvalidPayload.
func NewWarmTask(p Warm, opts ...asynq.Option) (*asynq.Task, error) {
	return CacheWarm.NewTask(p, opts...)
}

// CacheWarm is the handle of the cache:warm task type: CacheWarm.NewTask builds a task
// with a typed payload, CacheWarm.Enqueue enqueues one.
var CacheWarm = Define(TypeWarm,
	"Warm the cache: compute (work rounds of SHA-256, as data:process) and cache the value of every key not cached yet",
	warm,
	asynq.Queue("low"), asynq.MaxRetry(3), asynq.Timeout(30*time.Minute))

func warm(ctx context.Context, deps Deps, p Warm) ([]byte, error) {
	keys := distinct(p.Keys)
	step := max(1, len(keys)/100)
	var (
		mu  sync.Mutex // guards res and the progress reports
		res WarmResult
	)
	deps.ReportBestEffort(ctx, 0, fmt.Sprintf("warming %d keys", len(keys)))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(warmParallelism)
	for _, key := range keys {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			var computed atomic.Bool // as in data:process, not the hit flag
			_, _, err := deps.Cache.GetOrCompute(gctx, key, ttlOf(p.TTLSeconds), func(ctx context.Context) (string, error) {
				computed.Store(true)
				return digest(ctx, key, p.Work, nil)
			})
			if err != nil {
				return fmt.Errorf("warm %q: %w", key, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if computed.Load() {
				res.Computed++
			} else {
				res.Cached++
			}
			res.Warmed++
			if res.Warmed%step == 0 && res.Warmed < len(keys) {
				deps.ReportBestEffort(ctx, float64(100*res.Warmed/len(keys)), fmt.Sprintf("warmed %d of %d keys", res.Warmed, len(keys)))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil { // stopped launching before any key failed
		return nil, fmt.Errorf("warm: %w", err)
	}
	deps.ReportBestEffort(ctx, 100, fmt.Sprintf("warmed %d keys: %d computed, %d cached", res.Warmed, res.Computed, res.Cached))
	return json.Marshal(res)
}

// distinct returns keys without repeats, in first-seen order.
func distinct(keys []string) []string {
	seen := make(map[string]struct{}, len(keys))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			out = append(out, k)
		}
	}
	return out
}
