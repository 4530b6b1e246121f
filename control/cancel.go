package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// RecordTTL is how long Redis remembers the cancellation of a task that
// was removed from its queue before it ran, so that cancelling it again
// answers ErrFinished (and shows who cancelled it) instead of ErrNotFound.
// A running task that is cancelled ends archived, where asynq keeps it.
const RecordTTL = 7 * 24 * time.Hour

// Wait bounds how long Cancel waits for a running task to stop once its
// worker has been told. A handler that respects its context stops within
// milliseconds; one that does not is archived by its worker after the
// worker's grace period.
const Wait = 10 * time.Second

// StateCancelled is Result.State of a task removed from its queue before
// it ran. asynq keeps no such state: the task is gone from asynq, and
// Redis holds the record of its cancellation for RecordTTL.
const StateCancelled = "cancelled"

// The spacing of Cancel's reads of a running task (from firstPoll,
// doubling up to maxPoll), and of its repeated signals while it waits (a
// signal is lost when a worker's subscription is reconnecting).
const (
	firstPoll      = 2 * time.Millisecond
	maxPoll        = 50 * time.Millisecond
	resendInterval = 250 * time.Millisecond
)

// maxDeletes bounds Cancel's attempts to delete a waiting task whose state
// changes under it.
const maxDeletes = 5

// Result is what Cancel did to a task, or with ErrFinished what became of
// it.
type Result struct {
	Queue string `json:"queue"`
	ID    string `json:"id"`
	Type  string `json:"type,omitempty"`
	// Was is the task's state when the cancellation reached it:
	// "pending", "scheduled", "retry", "aggregating" or "active".
	Was string `json:"was,omitempty"`
	// State is the task's state when Cancel returned:
	//   - "cancelled" (StateCancelled): removed from its queue, it never
	//     runs (again);
	//   - "archived": it was running, and its worker stopped it and
	//     archived it with Reason;
	//   - "active": its worker has been told, but it was still running
	//     when the wait (Wait, or ctx) ended: its handler ignores its
	//     context; the worker archives it as cancelled after its grace
	//     period.
	// With ErrFinished, the state it had already reached: "completed",
	// "archived", "cancelled", or "gone" (it finished while Cancel waited
	// and was deleted, having no retention).
	State string `json:"state"`
	// By is who cancelled it, as given to Cancel (or recorded).
	By string `json:"by,omitempty"`
	// Reason is the archived task's last error ("cancelled by <By>" when
	// the cancellation stopped it), or "cancelled by <By>" for a removed
	// task.
	Reason string `json:"reason,omitempty"`
	// CancelledAt is when the cancellation was made; zero with
	// ErrFinished for a task that was not cancelled.
	CancelledAt time.Time `json:"cancelled_at,omitzero"`
}

// Cancel cancels task id of queue on behalf of by (a user name, "cli",
// ...; "" is "unknown"), which the archived task's reason names:
// "cancelled by <by>". A pending, scheduled, retry or aggregating task is
// deleted and its cancellation recorded (RecordTTL). A running one is
// told to stop on Channel, again every 250ms while Cancel waits, up to
// Wait or until ctx ends, for it to end; its worker archives it as
// cancelled, and Result.State says whether that happened within the wait.
//
// Errors: ErrNotFound when no queue holds the task and no cancellation of
// it is recorded; ErrFinished (with the Result describing it) when it has
// completed or been archived or was cancelled before, including a running
// task that finished on its own before its worker got the signal;
// otherwise Redis's, or ctx's before anything was done. It is safe for
// concurrent use.
func Cancel(ctx context.Context, rdb redis.UniversalClient, queue, id, by string) (Result, error) {
	res := Result{Queue: queue, ID: id, By: by}
	if queue == "" || id == "" {
		return res, fmt.Errorf("%w: queue %q, id %q", ErrNotFound, queue, id)
	}
	if by == "" {
		res.By = "unknown"
	}
	reason := "cancelled by " + res.By
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var deadline, sent time.Time // of a running task: the end of the wait, the last signal
	poll := firstPoll
	deletes := 0
	for {
		if err := ctx.Err(); err != nil {
			if res.Was == asynq.TaskStateActive.String() {
				res.State = asynq.TaskStateActive.String()
				return res, nil
			}
			return res, err
		}
		info, err := insp.GetTaskInfo(queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			if res.Was == asynq.TaskStateActive.String() {
				res.State = "gone"
				return res, fmt.Errorf("%w: task %q in queue %q finished before its worker got the cancellation", ErrFinished, id, queue)
			}
			rec, ok, err := readRecord(ctx, rdb, queue, id)
			if err != nil {
				return res, err
			}
			if !ok {
				return res, fmt.Errorf("%w: no task %q in queue %q", ErrNotFound, id, queue)
			}
			return rec, fmt.Errorf("%w: task %q in queue %q was cancelled by %s at %s", ErrFinished, id, queue,
				rec.By, rec.CancelledAt.UTC().Format(time.RFC3339))
		case err != nil:
			return res, fmt.Errorf("control: cancel %s in %s: read the task: %w", id, queue, err)
		}
		res.Type = info.Type
		now := time.Now()
		switch info.State {
		case asynq.TaskStateCompleted, asynq.TaskStateArchived:
			res.State, res.Reason = info.State.String(), info.LastErr
			who, cancelled := strings.CutPrefix(info.LastErr, "cancelled by ")
			cancelled = cancelled && info.State == asynq.TaskStateArchived
			if cancelled && res.Was == asynq.TaskStateActive.String() {
				// Its worker stopped it: the request is done with (a run
				// of the archived task from the dashboard is not
				// cancelled again).
				rdb.Del(ctx, requestKey(queue, id))
				return res, nil
			}
			res.By, res.CancelledAt = "", time.Time{}
			if cancelled { // before this call
				res.By, res.CancelledAt = who, info.LastFailedAt
			}
			return res, fmt.Errorf("%w: task %q in queue %q is %s", ErrFinished, id, queue, info.State)

		case asynq.TaskStateActive:
			if res.Was == "" {
				res.Was, res.CancelledAt = info.State.String(), now
				deadline = now.Add(Wait)
				// Kept in Redis too: should its worker die before it
				// hears the signal, the worker that runs it again after
				// the lease recovery finds it (Requested).
				if err := rdb.Set(ctx, requestKey(queue, id), res.By, RequestTTL).Err(); err != nil {
					return res, fmt.Errorf("control: cancel %s in %s: %w", id, queue, err)
				}
			}
			if now.Sub(sent) >= resendInterval {
				if err := Publish(ctx, rdb, Request{Queue: queue, ID: id, By: res.By}); err != nil {
					return res, err
				}
				sent = now
			}
			if !now.Before(deadline) {
				res.State = info.State.String()
				return res, nil
			}
			t := time.NewTimer(poll)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			poll = min(2*poll, maxPoll)

		default: // pending, scheduled, retry, aggregating: delete it
			if res.Was == "" {
				res.Was, res.CancelledAt = info.State.String(), now
			}
			err := insp.DeleteTask(queue, id)
			if err == nil {
				res.State, res.Reason = StateCancelled, reason
				if err := writeRecord(ctx, rdb, res); err != nil {
					return res, err
				}
				return res, nil
			}
			// Its state changed under the delete (it started, or
			// another caller removed it): read it again.
			if deletes++; deletes >= maxDeletes {
				return res, fmt.Errorf("control: cancel %s in %s: delete the task: %w", id, queue, err)
			}
		}
	}
}

// RequestTTL is how long the cancellation of a running task is kept in
// Redis for Requested: longer than any lease recovery takes.
const RequestTTL = 24 * time.Hour

// requestKey holds who asked to cancel a running task (RequestTTL).
func requestKey(queue, id string) string {
	return "forgeq:cancelling:{" + queue + "}:" + id
}

// Requested reports whether a cancellation of task id of queue was asked
// while the task ran, and by whom: the worker checks it before running a
// task again (a retry), so that a task whose worker died before it heard
// the signal is not run again after asynq's lease recovery.
func Requested(ctx context.Context, rdb redis.UniversalClient, queue, id string) (by string, ok bool, err error) {
	by, err = rdb.Get(ctx, requestKey(queue, id)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("control: read the cancellation of %s in %s: %w", id, queue, err)
	}
	return by, true, nil
}

// recordKey is the key of the record of a removed task's cancellation;
// the hash tag puts it in its queue's cluster slot.
func recordKey(queue, id string) string {
	return "forgeq:cancelled:{" + queue + "}:" + id
}

// record is what recordKey holds.
type record struct {
	Type string    `json:"type"`
	Was  string    `json:"was"`
	By   string    `json:"by"`
	At   time.Time `json:"at"`
}

func writeRecord(ctx context.Context, rdb redis.UniversalClient, res Result) error {
	b, err := json.Marshal(record{Type: res.Type, Was: res.Was, By: res.By, At: res.CancelledAt})
	if err != nil {
		return fmt.Errorf("control: cancel %s in %s: %w", res.ID, res.Queue, err)
	}
	if err := rdb.Set(ctx, recordKey(res.Queue, res.ID), b, RecordTTL).Err(); err != nil {
		return fmt.Errorf("control: task %s in %s is deleted, but its cancellation could not be recorded: %w", res.ID, res.Queue, err)
	}
	return nil
}

// readRecord reads the record of task id's cancellation as a Result, and
// whether there is one.
func readRecord(ctx context.Context, rdb redis.UniversalClient, queue, id string) (Result, bool, error) {
	b, err := rdb.Get(ctx, recordKey(queue, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("control: read the cancellation of %s in %s: %w", id, queue, err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return Result{}, false, fmt.Errorf("control: read the cancellation of %s in %s: %w", id, queue, err)
	}
	return Result{Queue: queue, ID: id, Type: r.Type, Was: r.Was, State: StateCancelled,
		By: r.By, Reason: "cancelled by " + r.By, CancelledAt: r.At}, true, nil
}

// FindQueues returns the queues that hold task id, or have a record of
// its cancellation, sorted; none is ErrNotFound. Task ids are unique
// within a queue only, so there may be several. It reads every queue
// asynq knows, one after the other.
func FindQueues(ctx context.Context, rdb redis.UniversalClient, id string) ([]string, error) {
	insp := asynq.NewInspectorFromRedisClient(rdb)
	queues, err := insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("control: list the queues: %w", err)
	}
	var found []string
	for _, q := range queues {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		_, err := insp.GetTaskInfo(q, id)
		switch {
		case err == nil:
			found = append(found, q)
			continue
		case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
			return nil, fmt.Errorf("control: find task %s in %s: %w", id, q, err)
		}
		n, err := rdb.Exists(ctx, recordKey(q, id)).Result()
		if err != nil {
			return nil, fmt.Errorf("control: find task %s in %s: %w", id, q, err)
		}
		if n > 0 {
			found = append(found, q)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%w: no queue holds task %q", ErrNotFound, id)
	}
	slices.Sort(found)
	return found, nil
}
