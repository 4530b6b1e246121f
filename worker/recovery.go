package worker

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/telemetry"
)

// msgRecovered is the log line of a task that asynq's recoverer took back
// from a worker that died, when it runs again.
const msgRecovered = "task recovered after its worker died"

// asynq v0.26's lease timing (internal/rdb.LeaseDuration and the cutoff in
// recoverer.go): a running task's lease is extended to now+leaseDuration
// on each heartbeat, and the recoverer takes back the tasks whose lease
// ended more than leaseCutoff ago.
const (
	asynqLeaseDuration = 30 * time.Second
	asynqLeaseCutoff   = 30 * time.Second
)

// taskInspector is what recoveries needs of an *asynq.Inspector.
type taskInspector interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

// taskMeta is the asynq metadata of the task being processed.
type taskMeta struct {
	id, queue string
	retried   int
}

// asynqMeta reads taskMeta from an asynq server's ctx.
func asynqMeta(ctx context.Context) taskMeta {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	return taskMeta{id: id, queue: queue, retried: retried}
}

// recoveries logs and counts the tasks that asynq's recoverer took back
// from a worker that stopped extending their lease (it died, or lost
// Redis), when they run again: asynq recovers them silently, moving them
// to retry with the last error asynq.ErrLeaseExpired.
//
// Only a retry (asynq.GetRetryCount > 0) is looked at, with one
// Inspector.GetTaskInfo, so a first attempt costs nothing. The
// orphaned_for field estimates how long the task went without a live
// worker: from the dead worker's last extension of the lease to now. asynq
// keeps neither that time nor the start of the attempt, so it is derived
// from when the recoverer took the task back (TaskInfo.LastFailedAt, in
// whole seconds), which it does only once the lease has been over
// asynqLeaseCutoff, a lease running asynqLeaseDuration from its last
// extension. It is a lower bound that undercounts by up to one recoverer
// interval (a minute, shorter with several workers) plus a second; the
// worker died within one heartbeat (5s) after that extension.
//
// A task recovered to the archive (no retry left) never runs again and is
// not seen here; a recovered task that is then put back on its queue by a
// shutdown keeps its last error and is logged again when it runs next. A
// recoveries is safe for concurrent use.
type recoveries struct {
	insp  taskInspector
	log   *zap.Logger
	count func(taskType, queue string)
	now   func() time.Time
	meta  func(context.Context) taskMeta
}

func newRecoveries(insp taskInspector, log *zap.Logger, count func(taskType, queue string)) *recoveries {
	return &recoveries{insp: insp, log: log, count: count, now: time.Now, meta: asynqMeta}
}

// middleware returns asynq middleware that checks each retried task before
// running it with next.
func (r *recoveries) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if m := r.meta(ctx); m.retried > 0 && m.id != "" && m.queue != "" {
			r.check(ctx, t, m)
		}
		return next.ProcessTask(ctx, t)
	})
}

// check logs and counts t if its last attempt ended with the recoverer
// taking it back; ctx is the task's.
func (r *recoveries) check(ctx context.Context, t *asynq.Task, m taskMeta) {
	info, err := r.insp.GetTaskInfo(m.queue, m.id)
	if err != nil {
		// The task itself reports a Redis that fails; this check only
		// loses its log line.
		r.log.Debug("recovery check: read task info", append(telemetry.LogFields(ctx), zap.String("task_id", m.id), zap.Error(err))...)
		return
	}
	if info.LastErr != asynq.ErrLeaseExpired.Error() || info.LastFailedAt.IsZero() {
		return
	}
	lastAlive := info.LastFailedAt.Add(-asynqLeaseCutoff - asynqLeaseDuration)
	r.count(t.Type(), m.queue)
	r.log.Warn(msgRecovered, append(telemetry.LogFields(ctx),
		zap.String("task_id", m.id),
		zap.String("task_type", t.Type()),
		zap.String("queue", m.queue),
		zap.Int("retry", m.retried),
		zap.Duration("orphaned_for", r.now().Sub(lastAlive)),
		zap.Time("recovered_at", info.LastFailedAt),
	)...)
}
