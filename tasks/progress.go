package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/taskctx"
)

// ProgressTTL is how long a task's last progress report stays readable.
const ProgressTTL = 24 * time.Hour

// Progress is a task's last progress report.
type Progress struct {
	TaskID  string    `json:"task_id"`
	Percent float64   `json:"percent"` // 0 to 100
	Message string    `json:"message,omitempty"`
	Updated time.Time `json:"updated"`
}

// ProgressKey is the cache key (inside the manager's prefix) holding the
// progress of taskID.
func ProgressKey(taskID string) string { return "task:progress:" + taskID }

// ReportProgress stores the running task's progress (percent in [0, 100])
// through deps.Cache, for the CLI's --wait and the web's task status,
// publishes it as a progress event when the worker's task events are on
// (package events), and passes it to deps.Progress when that is set. It
// needs the ctx the worker (or forgeqtest) passed to the handler.
func (d Deps) ReportProgress(ctx context.Context, percent float64, message string) error {
	id, ok := asynq.GetTaskID(ctx)
	if !ok {
		id, ok = taskctx.ID(ctx)
	}
	if !ok {
		return errors.New("tasks: report progress: ctx is not a task's")
	}
	if math.IsNaN(percent) || percent < 0 || percent > 100 {
		return fmt.Errorf("tasks: report progress: percent %v outside [0, 100]", percent)
	}
	p := Progress{TaskID: id, Percent: percent, Message: message, Updated: time.Now().UTC()}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("tasks: report progress: %w", err)
	}
	if err := d.Cache.Set(ctx, ProgressKey(id), b, ProgressTTL); err != nil {
		return fmt.Errorf("tasks: report progress: %w", err)
	}
	if pub, base, ok := taskctx.Events(ctx); ok {
		e := *base
		e.Kind, e.Percent, e.Message = events.Progress, percent, message
		pub.Publish(e)
	}
	if d.Progress != nil {
		d.Progress(p)
	}
	return nil
}

// ReadProgress returns the last progress report of taskID. When the task
// has reported none, the error is the cache's miss error (cachemgr.ErrMiss).
func ReadProgress(ctx context.Context, cache Cache, taskID string) (Progress, error) {
	var p Progress
	s, err := cache.Get(ctx, ProgressKey(taskID))
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return p, fmt.Errorf("tasks: read progress of %s: %w", taskID, err)
	}
	return p, nil
}

// ReportBestEffort is ReportProgress for handlers that treat progress as
// advisory, as the built-in ones do: a failed report (Redis hiccup, a ctx
// that is not a task's because the handler runs without a worker) is logged
// at debug level and never fails the task.
func (d Deps) ReportBestEffort(ctx context.Context, percent float64, message string) {
	if err := d.ReportProgress(ctx, percent, message); err != nil {
		d.logger().Debug("progress report failed", zap.Float64("percent", percent), zap.Error(err))
	}
}

// logger returns d.Logger, or a no-op logger when it is nil, so handlers
// served through Definition.Handler without NewMux may log.
func (d Deps) logger() *zap.Logger {
	if d.Logger == nil {
		return zap.NewNop()
	}
	return d.Logger
}
