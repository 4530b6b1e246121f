package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
)

// Polling intervals of --wait: it starts fast, so that short tasks return
// quickly, and slows down for long ones.
const (
	pollFirst = 10 * time.Millisecond
	pollMax   = 500 * time.Millisecond
)

// wait follows the task of info until it completes (nil) or is archived
// (an error naming its last error), showing its progress reports on a bar.
// limit > 0 bounds the wait.
func (c *cli) wait(ctx context.Context, k *conn, info *asynq.TaskInfo, limit time.Duration) error {
	start := time.Now()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	bar := c.newPercentBar(fmt.Sprintf("%s %s", info.Type, info.State))
	defer bar.close()

	last := info
	retried := 0
	for poll := pollFirst; ; poll = min(poll*3/2, pollMax) {
		ti, err := k.insp.GetTaskInfo(info.Queue, info.ID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
			// Finished with no retention, or deleted by someone.
			bar.finish(false, "gone")
			return c.finished(last, nil, time.Since(start))
		case err != nil:
			return fmt.Errorf("wait for task %s: %w", info.ID, err)
		}
		last = ti
		if p, err := tasks.ReadProgress(ctx, k.m, info.ID); err == nil {
			bar.set(p.Percent, p.Message)
		} else {
			bar.describe(ti.State.String())
		}
		switch ti.State {
		case asynq.TaskStateCompleted:
			bar.finish(true, "done")
			return c.finished(ti, ti, time.Since(start))
		case asynq.TaskStateArchived:
			bar.finish(false, "archived")
			return c.finished(ti, ti, time.Since(start))
		case asynq.TaskStateRetry:
			if ti.Retried != retried && !c.f.json {
				retried = ti.Retried
				bar.println(fmt.Sprintf("%s: attempt %d of %d failed: %s; next attempt at %s", c.prog,
					ti.Retried, ti.MaxRetry+1, ti.LastErr, ti.NextProcessAt.Format(time.RFC3339)))
			}
		}
		select {
		case <-ctx.Done():
			bar.finish(false, "")
			if limit > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("gave up waiting after %v (--wait-timeout): task %s is still %s", limit, info.ID, ti.State)
			}
			return fmt.Errorf("stopped waiting: task %s is still %s", info.ID, ti.State)
		case <-time.After(poll):
		}
	}
}

// finished prints the outcome of a waited-for task. ti is nil when the
// task was gone from Redis; last is the last state seen.
func (c *cli) finished(last, ti *asynq.TaskInfo, took time.Duration) error {
	waited := took.Seconds()
	out := describe(last)
	out.Waited = &waited
	var err error
	switch {
	case ti == nil:
		out.State = "gone"
		if !c.f.json {
			fmt.Fprintf(c.stdout, "task %s finished after %v and is gone from Redis (no retention), so its result is unknown\n", termtext.Escape(last.ID), took.Round(time.Millisecond))
		}
	case ti.State == asynq.TaskStateArchived:
		err = fmt.Errorf("task %s failed and was archived after %d %s: %s", ti.ID, ti.Retried+1, plural(ti.Retried+1, "attempt", "attempts"), ti.LastErr)
		if !c.f.json {
			fmt.Fprintf(c.stdout, "task %s archived after %v\n", termtext.Escape(ti.ID), took.Round(time.Millisecond))
		}
	default:
		out.Result = resultJSON(ti.Result)
		if !c.f.json {
			fmt.Fprintf(c.stdout, "task %s completed after %v\n", termtext.Escape(ti.ID), took.Round(time.Millisecond))
			if len(ti.Result) == 0 {
				fmt.Fprintln(c.stdout, "result: none")
			} else {
				fmt.Fprintf(c.stdout, "result: %s\n", termtext.Escape(string(ti.Result)))
			}
		}
	}
	if c.f.json {
		writeJSON(c.stdout, out)
		if err != nil {
			return silentError{err}
		}
	}
	return err
}

// resultJSON returns a task result for JSON: as is when it is JSON, else as a
// string.
func resultJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	return string(b)
}
