package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

// TypeProcessData is the task type of the seed's process_data flow: return
// the cached value of a key, or compute it once across every worker, store
// it and return it.
const TypeProcessData = "data:process"

// MaxWork is the largest work a data:process payload may ask for: a few
// seconds on one core (a round costs about 90ns on a current x86 with
// SHA extensions).
const MaxWork = 50_000_000

// Progress reports of data:process while it computes: one when
// progressEvery has passed since the last report or the percentage has
// advanced progressStep points, whichever comes first.
const (
	progressEvery = 100 * time.Millisecond
	progressStep  = 10
)

// digestCheckEvery is how many rounds the computation runs between two
// looks at its ctx and its progress.
const digestCheckEvery = 1024

// ProcessData is the payload of a data:process task.
type ProcessData struct {
	// Key is the cache key (inside the cache's prefix) of the value.
	Key string `json:"key" jsonschema:"minLength=1,maxLength=512" help:"cache key of the value, 1 to 512 characters, no control characters"`
	// Work is the number of SHA-256 rounds the value costs; see Digest.
	Work int `json:"work" jsonschema:"minimum=1,maximum=50000000" help:"rounds of SHA-256 the computation costs, 1 to 50000000"`
	// TTLSeconds is how long the value stays cached; 0 means the cache's
	// default TTL.
	TTLSeconds int `json:"ttl_seconds,omitempty" jsonschema:"minimum=0,maximum=31536000" help:"seconds the value stays cached, 0 (the default) for the cache's default TTL"`
}

// Validate checks the ranges of p's fields. It is called whenever a payload
// is decoded; its errors name the field.
func (p ProcessData) Validate() error {
	if err := checkKey("key", p.Key); err != nil {
		return err
	}
	if err := checkRange("work", p.Work, 1, MaxWork); err != nil {
		return err
	}
	return checkRange("ttl_seconds", p.TTLSeconds, 0, MaxTTLSeconds)
}

// ProcessDataResult is the result of a data:process task, stored as the
// asynq task result in its JSON form.
type ProcessDataResult struct {
	Key    string `json:"key"`
	Value  string `json:"value"`   // Digest(Key, Work)
	Source string `json:"source"`  // SourceCache or SourceComputed
	TookMS int64  `json:"took_ms"` // the handler's time, cache round trips included
}

// The values of ProcessDataResult.Source.
const (
	SourceCache    = "cache"    // this task did not compute: the value was cached, or another task computed it meanwhile
	SourceComputed = "computed" // this task computed and stored the value
)

// NewProcessDataTask returns a data:process task for p, on queue "default"
// with 5 retries and a 10-minute timeout unless opts say otherwise. Errors
// wrap ErrInvalidPayload.
func NewProcessDataTask(p ProcessData, opts ...asynq.Option) (*asynq.Task, error) {
	return DataProcess.NewTask(p, opts...)
}

// DataProcess is the handle of the data:process task type: DataProcess.NewTask builds a task
// with a typed payload, DataProcess.Enqueue enqueues one.
var DataProcess = Define(TypeProcessData,
	"Cache-aside computation (the seed's process_data): return the cached value of key, "+
		"or compute it (work rounds of SHA-256) once across all workers, cache it and return it",
	processData,
	asynq.Queue("default"), asynq.MaxRetry(5), asynq.Timeout(10*time.Minute))

func processData(ctx context.Context, deps Deps, p ProcessData) ([]byte, error) {
	start := time.Now()
	var computed atomic.Bool
	value, _, err := deps.Cache.GetOrCompute(ctx, p.Key, ttlOf(p.TTLSeconds), func(ctx context.Context) (string, error) {
		// ctx is the cache's computation context: it keeps the task's
		// values (its id, for progress) and ends when every task waiting
		// for this key has given up.
		computed.Store(true)
		return computeDigest(ctx, deps, p.Key, p.Work)
	})
	if err != nil {
		return nil, fmt.Errorf("process %q: %w", p.Key, err)
	}
	// Not GetOrCompute's hit flag: tasks of one process that share a
	// computation all see hit == false, but only one of them computed.
	res := ProcessDataResult{Key: p.Key, Value: value, Source: SourceCache, TookMS: time.Since(start).Milliseconds()}
	msg := "cache hit"
	if computed.Load() {
		res.Source, msg = SourceComputed, "computed and cached"
	}
	deps.ReportBestEffort(ctx, 100, msg)
	return json.Marshal(res)
}

// computeDigest is Digest with progress reports and cancellation.
func computeDigest(ctx context.Context, deps Deps, key string, work int) (string, error) {
	deps.ReportBestEffort(ctx, 0, "computing")
	last, lastPct := time.Now(), 0.0
	return digest(ctx, key, work, func(done int) {
		if done >= work {
			return // the handler reports 100 once the value is stored
		}
		pct := math.Floor(1000*float64(done)/float64(work)) / 10
		if now := time.Now(); now.Sub(last) >= progressEvery || pct-lastPct >= progressStep {
			deps.ReportBestEffort(ctx, pct, fmt.Sprintf("computing: %d of %d rounds", done, work))
			last, lastPct = now, pct
		}
	})
}

// Digest returns the value a data:process task computes for key and work:
// SHA-256 of the bytes of key, then work-1 more rounds of SHA-256 each over
// the previous round's 32-byte sum, as lower-case hex. So Digest(k, 1) is
// the hex SHA-256 of k. A work below 1 counts as 1. Digest is pure and safe
// for concurrent use; its cost grows linearly with work.
func Digest(key string, work int) string {
	v, _ := digest(context.Background(), key, work, nil) // never fails without a deadline
	return v
}

// digest computes Digest, stopping with ctx's error when ctx ends and
// calling progress (when not nil) with the rounds done every
// digestCheckEvery rounds and at the end.
func digest(ctx context.Context, key string, work int, progress func(done int)) (string, error) {
	sum := sha256.Sum256([]byte(key))
	for done := 1; done < work; {
		n := min(work-done, digestCheckEvery)
		for range n {
			sum = sha256.Sum256(sum[:])
		}
		done += n
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if progress != nil {
			progress(done)
		}
	}
	return hex.EncodeToString(sum[:]), nil
}
