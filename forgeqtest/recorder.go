package forgeqtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/tasks"
)

// A Recorder is what code under test enqueues with.
var _ tasks.Enqueuer = (*Recorder)(nil)

// Recorder is a tasks.Enqueuer that records what it enqueues. It enqueues
// into a miniredis of its own through a real asynq client, so that the
// *asynq.TaskInfo it records and returns is the one asynq gives: the
// options resolved as asynq stores them (queue, max retry, timeout,
// deadline, process-at, retention, unique), the task's state, and asynq's
// errors (asynq.ErrDuplicateTask, asynq.ErrTaskIDConflict). Nothing runs
// the tasks. A Recorder is safe for concurrent use.
type Recorder struct {
	mr     *miniredis.Miniredis
	client *asynq.Client
	insp   *asynq.Inspector

	mu    sync.Mutex
	infos []*asynq.TaskInfo
}

// NewRecorder returns an empty Recorder on a miniredis of its own, closed by
// tb.Cleanup. A Harness has one already (Harness.Enqueuer).
func NewRecorder(tb testing.TB) *Recorder {
	tb.Helper()
	mr := miniredis.NewMiniRedis()
	mr.ClockTTL(true) // uniqueness locks expire on the wall clock
	if err := mr.Start(); err != nil {
		tb.Fatalf("forgeqtest: start miniredis: %v", err)
	}
	tb.Cleanup(mr.Close)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { _ = rdb.Close() }) // runs before mr.Close
	return &Recorder{
		mr:     mr,
		client: asynq.NewClientFromRedisClient(rdb),
		insp:   asynq.NewInspectorFromRedisClient(rdb),
	}
}

// EnqueueContext enqueues task with opts (which override the task's own
// options, as with asynq.Client) and records the TaskInfo asynq returns. A
// task asynq refuses is not recorded; the error is asynq's.
func (r *Recorder) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	info, err := r.client.EnqueueContext(ctx, task, opts...)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.infos = append(r.infos, info)
	return info, nil
}

// Enqueued returns the TaskInfo of every task enqueued since the Recorder
// was made or last Reset, in the order they were enqueued.
func (r *Recorder) Enqueued() []*asynq.TaskInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*asynq.TaskInfo(nil), r.infos...)
}

// OfType returns the TaskInfo of the recorded tasks whose type is typ, in
// order.
func (r *Recorder) OfType(typ string) []*asynq.TaskInfo {
	var out []*asynq.TaskInfo
	for _, ti := range r.Enqueued() {
		if ti.Type == typ {
			out = append(out, ti)
		}
	}
	return out
}

// Inspector returns an asynq inspector on the Recorder's Redis, to look at
// its queues as asynq sees them.
func (r *Recorder) Inspector() *asynq.Inspector { return r.insp }

// Reset forgets the recorded tasks and empties the Recorder's Redis, so
// that task ids and uniqueness locks can be used again.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.infos = nil
	r.mr.FlushAll()
}

// Payloads returns the payloads of the recorded tasks of typ, in order,
// each decoded as typ's handler will decode it. It fails the test when a
// payload is one the handler would refuse.
func Payloads[P any](tb testing.TB, r *Recorder, typ *tasks.Type[P]) []P {
	tb.Helper()
	var out []P
	for _, ti := range r.OfType(typ.Name()) {
		if err := typ.Definition().Validate(ti.Payload); err != nil {
			tb.Fatalf("forgeqtest: task %s: %v", ti.ID, err)
		}
		var p P
		if err := json.Unmarshal(ti.Payload, &p); err != nil {
			tb.Fatalf("forgeqtest: task %s: decode %s payload: %v", ti.ID, typ.Name(), err)
		}
		out = append(out, p)
	}
	return out
}

// String describes the recorded tasks, one "type queue payload" line each,
// for failure messages.
func (r *Recorder) String() string {
	var s string
	for _, ti := range r.Enqueued() {
		s += fmt.Sprintf("%s %s %s\n", ti.Type, ti.Queue, ti.Payload)
	}
	return s
}
