package worker

import (
	"context"
	"errors"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
	"github.com/forgeq/forgeq/workflow"
)

// dedupRelease frees the dedup key of a task enqueued with one
// (tasks.Dedup, read from the task's headers) when the task starts, or
// when it finishes for good, as its enqueue chose. The enqueue script
// also treats a key whose task is gone, completed or archived (or, with
// release at start, running or waiting to retry) as free, so a release
// this middleware misses (a crash, a failed call) does not hold a key.
type dedupRelease struct {
	rdb redis.UniversalClient
	log *zap.Logger
}

func newDedupRelease(rdb redis.UniversalClient, log *zap.Logger) *dedupRelease {
	return &dedupRelease{rdb: rdb, log: log}
}

// middleware is the asynq middleware; it goes after the limits (a
// postponed task has not started) and before the program's own.
func (d *dedupRelease) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		key, release, ok := tasks.DedupOf(t)
		if !ok {
			return next.ProcessTask(ctx, t)
		}
		if release != tasks.ReleaseOnFinish {
			d.release(ctx, key)
			return next.ProcessTask(ctx, t)
		}
		err := next.ProcessTask(ctx, t)
		if finished(ctx, err) {
			// The handler's context may be done (a deadline): the key is
			// freed all the same.
			d.release(context.WithoutCancel(ctx), key)
		}
		return err
	})
}

// finished reports whether a task whose handler returned err will not run
// again: it succeeded, refused a retry, or used up its retries with a
// failure (a postponement or an unrecorded workflow step is none).
func finished(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return true
	}
	if _, postponed := tasks.AsPostpone(err); postponed || errors.Is(err, workflow.ErrNotRecorded) {
		return false
	}
	retried, _ := asynq.GetRetryCount(ctx)
	max, _ := asynq.GetMaxRetry(ctx)
	return retried >= max
}

func (d *dedupRelease) release(ctx context.Context, key string) {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	if _, err := tasks.ReleaseDedup(ctx, d.rdb, queue, key, id); err != nil {
		d.log.Warn("dedup key not released", append(telemetry.LogFields(ctx), zap.String("task_id", id), zap.String("queue", queue),
			zap.String("dedup_key", key), zap.Error(err))...)
	}
}
