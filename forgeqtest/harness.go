package forgeqtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/taskctx"
	"github.com/forgeq/forgeq/tasks"
)

// The harness's cache manager is what a worker hands its handlers.
var _ tasks.Cache = (*cachemgr.Manager)(nil)

// Harness runs task handlers as a worker would, on an in-memory Redis. Make
// one per test with New. Its methods are safe for concurrent use; Run and
// RunJSON may run handlers in parallel on one Harness.
type Harness struct {
	tb     testing.TB
	mr     *miniredis.Miniredis
	m      *cachemgr.Manager
	rec    *Recorder
	logger *zap.Logger
	logs   *observer.ObservedLogs
	seq    atomic.Int64 // task ids handed out by Run
}

// New returns a Harness for tb: a miniredis whose TTLs run on the wall
// clock (as the worker's embedded Redis does; Miniredis().FastForward
// still skips time), a cache manager on it with the default options, a
// Recorder on a miniredis of its own, and a logger writing through tb
// (shown when the test fails or under -v) whose entries Logs also keeps,
// from debug level up. Everything is closed by tb.Cleanup.
func New(tb testing.TB) *Harness {
	tb.Helper()

	mr := miniredis.NewMiniRedis()
	mr.ClockTTL(true)
	if err := mr.Start(); err != nil {
		tb.Fatalf("forgeqtest: start miniredis: %v", err)
	}
	tb.Cleanup(mr.Close)

	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(zapcore.NewTee(zaptest.NewLogger(tb).Core(), core))

	m, err := cachemgr.New(cachemgr.Options{URL: "redis://" + mr.Addr(), Logger: logger.Named("cache")})
	if err != nil {
		tb.Fatalf("forgeqtest: cache manager: %v", err)
	}
	tb.Cleanup(func() {
		if err := m.Close(); err != nil {
			tb.Errorf("forgeqtest: close cache manager: %v", err)
		}
	})
	return &Harness{tb: tb, mr: mr, m: m, rec: NewRecorder(tb), logger: logger, logs: logs}
}

// Manager returns the cache manager the handlers get as tasks.Deps.Cache.
// Read what a handler stored with it, or store what it should find.
func (h *Harness) Manager() *cachemgr.Manager { return h.m }

// Miniredis returns the in-memory Redis behind Manager, for
// FastForward, CheckGet and the like.
func (h *Harness) Miniredis() *miniredis.Miniredis { return h.mr }

// Enqueuer returns the Recorder the handlers get as tasks.Deps.Enqueuer:
// the follow-up tasks they enqueued are in it.
func (h *Harness) Enqueuer() *Recorder { return h.rec }

// Logger returns the handlers' logger (tasks.Deps.Logger).
func (h *Harness) Logger() *zap.Logger { return h.logger }

// Logs returns the entries the handlers (and the cache manager) have logged
// so far, at every level.
func (h *Harness) Logs() *observer.ObservedLogs { return h.logs }

// Deps returns the dependencies Run hands a handler, without a Progress
// hook: the cache manager, the logger and the Recorder. Pass them to
// tasks.Type.Handle, or to code that takes tasks.Deps.
func (h *Harness) Deps() tasks.Deps {
	return tasks.Deps{Cache: h.m, Logger: h.logger, Enqueuer: h.rec}
}

// Result is what one run of a handler gave.
type Result struct {
	// TaskID is the id the run's context carried ("forgeqtest-1",
	// "forgeqtest-2", ... in the order of the Harness's runs).
	TaskID string
	// Value is what the handler returned, the bytes a worker stores as the
	// task's result.
	Value []byte
	// Progress holds the progress reports the handler made, in order.
	Progress []tasks.Progress
	// Err is the handler's error, or the decoding error of a payload the
	// type refuses (which wraps tasks.ErrInvalidPayload and
	// asynq.SkipRetry).
	Err error
}

// Permanent reports whether r.Err is a failure asynq would not retry: it
// wraps asynq.SkipRetry. It is false when the run succeeded.
func (r Result) Permanent() bool { return errors.Is(r.Err, asynq.SkipRetry) }

// Run runs the handler of typ on payload as a worker does: payload is
// marshalled to JSON, decoded strictly by the type (its Validate method
// included) and handed to the handler with h.Deps(). The handler's context
// is the test's (testing.TB.Context), carrying a fresh task id so that
// tasks.Deps.ReportProgress works, and bounded by the type's default
// timeout when it has one. Run fails the test only when payload does not
// marshal; the handler's error is in the Result.
func Run[P any](h *Harness, typ *tasks.Type[P], payload P) Result {
	h.tb.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		h.tb.Fatalf("forgeqtest: marshal %s payload: %v", typ.Name(), err)
	}
	return RunJSON(h, typ.Definition(), b)
}

// RunJSON is Run on the raw JSON payload of a task of def: what a worker
// gets from Redis, so a test can hand it what a typed payload cannot
// express (unknown or missing fields, wrong JSON types).
func RunJSON(h *Harness, def *tasks.Definition, payload []byte) Result {
	h.tb.Helper()
	id := fmt.Sprintf("forgeqtest-%d", h.seq.Add(1))
	ctx := taskctx.WithID(h.tb.Context(), id)
	if d, ok := def.Timeout(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}

	var (
		mu       sync.Mutex
		progress []tasks.Progress
	)
	deps := h.Deps()
	deps.Progress = func(p tasks.Progress) {
		mu.Lock()
		defer mu.Unlock()
		progress = append(progress, p)
	}
	value, err := def.Process(ctx, deps, payload)

	mu.Lock()
	defer mu.Unlock()
	return Result{TaskID: id, Value: value, Progress: append([]tasks.Progress(nil), progress...), Err: err}
}

// DecodeResult decodes res.Value, the JSON result of a handler, into an R.
// It fails the test when the handler failed, returned no value, or
// returned JSON that is not an R (fields R does not have included).
func DecodeResult[R any](tb testing.TB, res Result) R {
	tb.Helper()
	var r R
	if res.Err != nil {
		tb.Fatalf("forgeqtest: task %s failed: %v", res.TaskID, res.Err)
	}
	if res.Value == nil {
		tb.Fatalf("forgeqtest: task %s returned no result", res.TaskID)
	}
	dec := json.NewDecoder(bytes.NewReader(res.Value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("forgeqtest: decode the result of task %s (%s) as %T: %v", res.TaskID, res.Value, r, err)
	}
	return r
}
