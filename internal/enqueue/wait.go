package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/termtext"
	"github.com/forgeq/forgeq/tasks"
)

// stateCheck is how often --wait reads the task's state while it follows
// the task's events: a safety net for events trimmed from the stream, and
// for workers with events off while the command's are on (WORKER_EVENTS
// differs: their progress and end show within stateCheck).
const stateCheck = time.Second

// noStream is what events.Client.LastID returns for a queue without an
// event stream: no event was ever written there, or the workers serving
// it have events off.
const noStream = "0-0"

// finalSettle bounds the wait, after a task's final event, for asynq to
// store the end the event announced (the worker publishes it as the
// handler returns); past it the event's own data is the outcome.
const finalSettle = time.Second

// wait follows the task of info until it completes (nil) or is archived
// (an error naming its last error), showing its progress reports on a bar.
// limit > 0 bounds the wait.
//
// It follows the task's events (package events): the bar moves as soon as
// the handler reports progress, and the wait ends as soon as the task
// does. The task's state is read once first, and then every stateCheck;
// when the queue has no event stream when the wait begins (its workers
// may have events off), on pollWait's schedule instead, so that the wait
// is never slower than polling. With events off (WORKER_EVENTS=false, the
// workers' setting), or an event stream that cannot be read, it polls, as
// pollWait.
func (c *cli) wait(ctx context.Context, k *conn, info *asynq.TaskInfo, limit time.Duration) error {
	if !k.cfg.Worker.Events {
		return c.pollWait(ctx, k, info, limit)
	}
	start := time.Now()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	// The stream's position, then the state: whatever happens after the
	// state was read is in the stream after the position.
	reader := events.NewClient(k.m.Client(), events.ClientOptions{Inspector: k.insp})
	after, err := reader.LastID(ctx, info.Queue)
	if err != nil {
		if ctx.Err() == nil {
			k.log.Debug("task events unreadable: polling", zap.Error(err))
			return c.pollWait(ctx, k, info, limit)
		}
		return c.stoppedWaiting(ctx, info, info, limit)
	}
	w := &waiter{c: c, k: k, info: info, last: info, start: start}
	w.bar = c.newPercentBar(fmt.Sprintf("%s %s", info.Type, info.State))
	defer w.bar.close()
	if done, err := w.check(ctx, true); done {
		return err
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs := make(chan events.Event, 64)
	go func() {
		for e, err := range reader.Watch(wctx, info.Queue, info.ID, after) {
			if err != nil {
				return // ctx ended
			}
			select {
			case evs <- e:
			case <-wctx.Done():
				return
			}
		}
	}()
	checks := checkSchedule{every: c.checkEvery(), fast: after == noStream, poll: pollFirst}
	tick := time.NewTimer(checks.next())
	defer tick.Stop()
	for {
		select {
		case e := <-evs:
			if e.Final() {
				return w.final(ctx, e)
			}
			w.event(e)
		case <-tick.C:
			if done, err := w.check(ctx, false); done {
				return err
			}
			tick.Reset(checks.next())
		case <-ctx.Done():
			w.bar.finish(false, "")
			return c.stoppedWaiting(ctx, info, w.last, limit)
		}
	}
}

// checkEvery returns how often a wait that follows events reads the
// state: stateCheck, or what a test set.
func (c *cli) checkEvery() time.Duration {
	if c.stateCheck > 0 {
		return c.stateCheck
	}
	return stateCheck
}

// checkSchedule is when wait reads the task's state: every every, the
// first time after events.EarlyCheck (see there: an end whose final event
// came just before the stream's position was read), or, when fast, on
// pollWait's schedule (poll is the next pause). It is not safe for
// concurrent use.
type checkSchedule struct {
	every, poll time.Duration
	fast        bool
	checked     bool // a read after the first one was scheduled
}

// next returns the pause before the next read.
func (s *checkSchedule) next() time.Duration {
	if !s.fast {
		if !s.checked {
			s.checked = true
			return min(events.EarlyCheck, s.every)
		}
		return s.every
	}
	d := s.poll
	s.poll = min(s.poll*3/2, pollMax)
	return d
}

// waiter is one --wait for a task, following its events.
type waiter struct {
	c     *cli
	k     *conn
	info  *asynq.TaskInfo // as enqueued
	last  *asynq.TaskInfo // the last state read
	bar   *percentBar
	start time.Time

	retried  int            // the failed attempts reported
	progress tasks.Progress // the last progress shown
	gone     bool           // a check found the task gone, with no final event yet
}

// event shows e, an event of the task that is not final.
func (w *waiter) event(e events.Event) {
	switch e.Kind {
	case events.Progress:
		w.show(tasks.Progress{Percent: e.Percent, Message: e.Message})
	case events.Started:
		if !w.bar.reported {
			w.bar.describe("active")
		}
	case events.Retried:
		w.reportRetry(e.Attempt, e.Error, e.NextAt)
	}
}

// show moves the bar to p unless it is there.
func (w *waiter) show(p tasks.Progress) {
	if w.bar.reported && p.Percent == w.progress.Percent && p.Message == w.progress.Message {
		return
	}
	w.progress = p
	w.bar.set(p.Percent, p.Message)
}

// reportRetry reports the failed attempt n (1-based) once.
func (w *waiter) reportRetry(n int, lastErr string, next time.Time) {
	if n <= w.retried || w.c.f.json {
		return
	}
	w.retried = n
	line := fmt.Sprintf("%s: attempt %d of %d failed: %s", w.c.prog, n, w.info.MaxRetry+1, lastErr)
	if !next.IsZero() {
		line += "; next attempt at " + next.Format(time.RFC3339)
	}
	w.bar.println(line)
}

// check reads the task's state and progress, shows them, and reports
// whether the task has ended, with the wait's error. A task gone from
// Redis has ended at the first check (it was gone before the wait began),
// and at a later one when it is still gone at the next: its final event
// may be on its way.
func (w *waiter) check(ctx context.Context, first bool) (bool, error) {
	ti, err := w.k.insp.GetTaskInfo(w.info.Queue, w.info.ID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		// Finished with no retention, or deleted by someone.
		if !first && !w.gone {
			w.gone = true
			return false, nil
		}
		w.bar.finish(false, "gone")
		return true, w.c.finished(w.last, nil, time.Since(w.start))
	case err != nil:
		if ctx.Err() != nil {
			return false, nil // the wait's own end says it
		}
		return true, fmt.Errorf("wait for task %s: %w", w.info.ID, err)
	}
	w.gone = false
	w.last = ti
	if p, err := tasks.ReadProgress(ctx, w.k.m, w.info.ID); err == nil {
		w.show(p)
	} else if !w.bar.reported {
		w.bar.describe(ti.State.String())
	}
	switch ti.State {
	case asynq.TaskStateCompleted:
		w.bar.finish(true, "done")
		return true, w.c.finished(ti, ti, time.Since(w.start))
	case asynq.TaskStateArchived:
		w.bar.finish(false, "archived")
		return true, w.c.finished(ti, ti, time.Since(w.start))
	case asynq.TaskStateRetry:
		w.reportRetry(ti.Retried, ti.LastErr, ti.NextProcessAt)
	}
	return false, nil
}

// final ends the wait on the task's final event e. The outcome printed is
// the task's state once asynq has stored it (within finalSettle), else
// what e says.
func (w *waiter) final(ctx context.Context, e events.Event) error {
	took := time.Since(w.start)
	if e.Kind == events.Succeeded {
		w.bar.finish(true, "done")
	} else {
		w.bar.finish(false, string(e.Kind))
	}
	deadline := time.Now().Add(finalSettle)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		ti, err := w.k.insp.GetTaskInfo(w.info.Queue, w.info.ID)
		switch {
		case (errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)) && e.Kind != events.Succeeded:
			return w.c.finished(w.last, nil, took)
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
			// Gone for want of retention: the succeeded event holds
			// the result (up to events.MaxResultBytes).
			ti := *w.last
			ti.State, ti.Result = asynq.TaskStateCompleted, e.Result
			return w.c.finished(&ti, &ti, took)
		case err == nil && (ti.State == asynq.TaskStateCompleted || ti.State == asynq.TaskStateArchived):
			return w.c.finished(ti, ti, took)
		case err == nil:
			w.last = ti
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(pause)
	}
	ti := *w.last
	if e.Kind == events.Succeeded {
		ti.State, ti.Result = asynq.TaskStateCompleted, e.Result
	} else {
		ti.State, ti.LastErr, ti.Retried = asynq.TaskStateArchived, e.Error, max(e.Attempt-1, 0)
	}
	return w.c.finished(&ti, &ti, took)
}

// stoppedWaiting is the error of a wait that ctx ended before the task,
// last seen as last.
func (c *cli) stoppedWaiting(ctx context.Context, info, last *asynq.TaskInfo, limit time.Duration) error {
	if limit > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("gave up waiting after %v (--wait-timeout): task %s is still %s", limit, info.ID, last.State)
	}
	return fmt.Errorf("stopped waiting: task %s is still %s", info.ID, last.State)
}

// Polling intervals of pollWait: it starts fast, so that short tasks
// return quickly, and slows down for long ones.
const (
	pollFirst = 10 * time.Millisecond
	pollMax   = 500 * time.Millisecond
)

// pollWait is wait by polling the task's state and progress, as --wait
// did before the task events: the bar moves at the next poll after a
// report, up to pollMax later. wait falls back to it with events off or
// when the events cannot be read; BenchmarkWaitLatency compares the two.
func (c *cli) pollWait(ctx context.Context, k *conn, info *asynq.TaskInfo, limit time.Duration) error {
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
