package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/worker"
)

// eventsDB is the real Redis database of the task events tests.
const eventsDB = 39

type evPayload struct {
	N int `json:"n"`
}

// eventsApp is an App with one type per way a task can end. started, when
// not nil, hears of each start of test:ev-wait, which then waits for
// release.
func eventsApp(started chan<- string, release <-chan struct{}) *worker.App {
	ok := tasks.Define("test:ev-ok", "Reports progress and succeeds.",
		func(ctx context.Context, deps tasks.Deps, p evPayload) ([]byte, error) {
			if err := deps.ReportProgress(ctx, 50, "half way"); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]int{"n": p.N})
		})
	flaky := tasks.Define("test:ev-flaky", "Fails once, then succeeds.",
		func(ctx context.Context, _ tasks.Deps, _ evPayload) ([]byte, error) {
			if n, _ := asynq.GetRetryCount(ctx); n == 0 {
				return nil, errors.New("first attempt fails")
			}
			return []byte("second time lucky"), nil
		}, asynq.MaxRetry(1))
	fail := tasks.Define("test:ev-fail", "Fails for good.",
		func(context.Context, tasks.Deps, evPayload) ([]byte, error) {
			return nil, errors.New("always fails")
		}, asynq.MaxRetry(0))
	panics := tasks.Define("test:ev-panic", "Panics.",
		func(context.Context, tasks.Deps, evPayload) ([]byte, error) {
			panic("oops")
		}, asynq.MaxRetry(0))
	revoke := tasks.Define("test:ev-revoke", "Revokes itself.",
		func(context.Context, tasks.Deps, evPayload) ([]byte, error) {
			return nil, asynq.RevokeTask
		}, asynq.MaxRetry(0))
	wait := tasks.Define("test:ev-wait", "Waits to be released or cancelled.",
		func(ctx context.Context, _ tasks.Deps, _ evPayload) ([]byte, error) {
			id, _ := asynq.GetTaskID(ctx)
			started <- id
			select {
			case <-release:
				return []byte("released"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}, asynq.MaxRetry(0))
	// One task an hour: the second is postponed before it starts.
	limited := tasks.Define("test:ev-limited", "Succeeds, once an hour.",
		func(context.Context, tasks.Deps, evPayload) ([]byte, error) {
			return []byte("done"), nil
		}).RateLimit(1, time.Hour)
	return worker.New("events").Register(ok, flaky, fail, panics, revoke, wait, limited)
}

// enqueue enqueues a task of typ through the worker's Enqueuer (which
// publishes its enqueued event).
func enqueue(tb testing.TB, s worker.Services, typ string) *asynq.TaskInfo {
	tb.Helper()
	task, err := s.Registry.NewTask(typ, []byte(`{"n":7}`))
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Enqueuer.EnqueueContext(context.Background(), task)
	if err != nil {
		tb.Fatal(err)
	}
	return info
}

// taskEvents returns the events the worker published for task id of
// queue, from the first until its final one, and checks that the
// enqueuing side published one enqueued event. That one is not in a fixed
// place: it is published once the enqueue has returned, and a worker may
// have started the task by then.
func taskEvents(tb testing.TB, c *events.Client, queue, id string) []events.Event {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var es []events.Event
	enqueued, final := 0, false
	for e, err := range c.Watch(ctx, queue, id, "0") {
		if err != nil {
			tb.Fatalf("events of %s so far: %v (enqueued %d): %v", id, eventKinds(es), enqueued, err)
		}
		if e.Kind == events.Enqueued {
			enqueued++
		} else {
			es = append(es, e)
			final = final || e.Final()
		}
		if final && enqueued > 0 {
			break
		}
	}
	if enqueued != 1 {
		tb.Errorf("%d enqueued events, want 1", enqueued)
	}
	return es
}

func eventKinds(es []events.Event) []events.Kind {
	out := make([]events.Kind, len(es))
	for i, e := range es {
		out[i] = e.Kind
	}
	return out
}

// TestTaskEvents runs a real worker on a real Redis and checks the events
// of each way a task ends, in order.
func TestTaskEvents(t *testing.T) {
	t.Parallel()
	started := make(chan string, 10)
	release := make(chan struct{})
	r := startApp(t, eventsApp(started, release), realRedisURL(t, eventsDB), map[string]string{
		"WORKER_RETRY_DELAY_MIN": "1s", "WORKER_RETRY_DELAY_MAX": "1s",
	})
	rdb := r.Manager.Client()
	c := events.NewClient(rdb, events.ClientOptions{})
	const (
		sta = events.Started
		pro = events.Progress
		fai = events.Failed
		ret = events.Retried
		suc = events.Succeeded
		arc = events.Archived
		can = events.Cancelled
	)

	t.Run("success with progress", func(t *testing.T) {
		t.Parallel()
		info := enqueue(t, r.Services, "test:ev-ok")
		es := taskEvents(t, c, info.Queue, info.ID)
		if diff := cmp.Diff([]events.Kind{sta, pro, suc}, eventKinds(es)); diff != "" {
			t.Fatalf("kinds (-want +got):\n%s", diff)
		}
		for _, e := range es {
			if e.TaskID != info.ID || e.Queue != "default" || e.Type != "test:ev-ok" || e.ID == "" || e.Time.IsZero() {
				t.Errorf("event %+v: want the task's id, queue, type, a stream id and a time", e)
			}
		}
		if p := es[1]; p.Percent != 50 || p.Message != "half way" || p.Attempt != 1 {
			t.Errorf("progress event %+v, want 50%% half way, attempt 1", p)
		}
		if got := string(es[2].Result); got != `{"n":7}` {
			t.Errorf("succeeded event's result = %q", got)
		}
		res, err := c.WaitResult(context.Background(), info.Queue, info.ID)
		if err != nil || string(res) != `{"n":7}` {
			t.Errorf("WaitResult after the end = %q, %v", res, err)
		}
	})

	t.Run("retry then success", func(t *testing.T) {
		t.Parallel()
		info := enqueue(t, r.Services, "test:ev-flaky")
		es := taskEvents(t, c, info.Queue, info.ID)
		if diff := cmp.Diff([]events.Kind{sta, fai, ret, sta, suc}, eventKinds(es)); diff != "" {
			t.Fatalf("kinds (-want +got):\n%s", diff)
		}
		f, rt := es[1], es[2]
		if f.Error != "first attempt fails" || f.Attempt != 1 {
			t.Errorf("failed event %+v", f)
		}
		if d := rt.NextAt.Sub(rt.Time); d < 900*time.Millisecond || d > 2*time.Second {
			t.Errorf("retried event: next attempt %v after it, want the retry delay (1s to 1.5s)", d)
		}
		if es[3].Attempt != 2 || es[4].Attempt != 2 || string(es[4].Result) != "second time lucky" {
			t.Errorf("second attempt's events %+v, %+v", es[3], es[4])
		}
	})

	t.Run("archived", func(t *testing.T) {
		t.Parallel()
		info := enqueue(t, r.Services, "test:ev-fail")
		es := taskEvents(t, c, info.Queue, info.ID)
		if diff := cmp.Diff([]events.Kind{sta, fai, arc}, eventKinds(es)); diff != "" {
			t.Fatalf("kinds (-want +got):\n%s", diff)
		}
		_, err := c.WaitResult(context.Background(), info.Queue, info.ID)
		var te *events.TaskError
		if !errors.As(err, &te) || te.Kind != arc || te.Err != "always fails" || te.Attempts != 1 {
			t.Errorf("WaitResult error = %v, want archived after 1 attempt: always fails", err)
		}
	})

	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		info := enqueue(t, r.Services, "test:ev-panic")
		es := taskEvents(t, c, info.Queue, info.ID)
		if diff := cmp.Diff([]events.Kind{sta, fai, arc}, eventKinds(es)); diff != "" {
			t.Fatalf("kinds (-want +got):\n%s", diff)
		}
		if want := "test:ev-panic: handler panic: oops"; es[2].Error != want {
			t.Errorf("archived event's error = %q, want %q", es[2].Error, want)
		}
	})

	t.Run("limited", func(t *testing.T) {
		t.Parallel()
		// Started once past the limits; a postponed task has not started.
		first := enqueue(t, r.Services, "test:ev-limited")
		if diff := cmp.Diff([]events.Kind{sta, suc}, eventKinds(taskEvents(t, c, first.Queue, first.ID))); diff != "" {
			t.Fatalf("first task's kinds (-want +got):\n%s", diff)
		}
		second := enqueue(t, r.Services, "test:ev-limited")
		deadline := time.Now().Add(20 * time.Second)
		for {
			ti, err := r.Inspector.GetTaskInfo(second.Queue, second.ID)
			if err != nil {
				t.Fatal(err)
			}
			if ti.State == asynq.TaskStateRetry || ti.State == asynq.TaskStateScheduled {
				break // postponed
			}
			if time.Now().After(deadline) {
				t.Fatalf("second task not postponed after 20s: %v", ti.State)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // the publisher writes within a few ms
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for e, err := range c.Watch(ctx, second.Queue, second.ID, "0") {
			if err != nil {
				break // ctx ended: every event read
			}
			if e.Kind != events.Enqueued {
				t.Errorf("postponed task's event %+v, want only enqueued", e)
			}
		}
	})

	t.Run("revoked", func(t *testing.T) {
		t.Parallel()
		// asynq neither retries nor archives a revoked task: it ends
		// without an end event (no failed, no archived).
		info := enqueue(t, r.Services, "test:ev-revoke")
		deadline := time.Now().Add(20 * time.Second)
		for {
			ti, err := r.Inspector.GetTaskInfo(info.Queue, info.ID)
			if errors.Is(err, asynq.ErrTaskNotFound) || (err == nil && ti.State == asynq.TaskStateCompleted) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("revoked task still there after 20s: %+v, %v", ti, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // the publisher writes within a few ms
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for e, err := range c.Watch(ctx, info.Queue, info.ID, "0") {
			if err != nil {
				break // ctx ended: every event read
			}
			if e.Kind != events.Enqueued && e.Kind != events.Started {
				t.Errorf("revoked task's event %+v, want only enqueued and started", e)
			}
		}
	})

	t.Run("cancelled and released", func(t *testing.T) {
		// One test for both: they share the started channel.
		info := enqueue(t, r.Services, "test:ev-wait")
		if id := <-started; id != info.ID {
			t.Fatalf("started %s, want %s", id, info.ID)
		}
		out := make(chan error, 1)
		go func() {
			_, err := c.WaitResult(context.Background(), info.Queue, info.ID)
			out <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := control.Cancel(ctx, rdb, info.Queue, info.ID, "tester"); err != nil {
			t.Fatal(err)
		}
		es := taskEvents(t, c, info.Queue, info.ID)
		if diff := cmp.Diff([]events.Kind{sta, can}, eventKinds(es)); diff != "" {
			t.Fatalf("kinds (-want +got):\n%s", diff)
		}
		var te *events.TaskError
		if err := <-out; !errors.As(err, &te) || te.Kind != can || te.Err != "cancelled by tester" {
			t.Errorf("WaitResult error = %v, want cancelled by tester", err)
		}

		// WaitResult waiting on a running task returns as soon as it
		// ends.
		info = enqueue(t, r.Services, "test:ev-wait")
		<-started
		go func() {
			res, err := c.WaitResult(context.Background(), info.Queue, info.ID)
			if err == nil && string(res) != "released" {
				err = fmt.Errorf("result %q", res)
			}
			out <- err
		}()
		time.Sleep(100 * time.Millisecond)
		close(release)
		select {
		case err := <-out:
			if err != nil {
				t.Errorf("WaitResult: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("WaitResult did not return once the task was released")
		}
	})
}

// TestTaskEventsOff checks that WORKER_EVENTS=false writes no event, and
// that WaitResult still ends (through its check of the task's state).
func TestTaskEventsOff(t *testing.T) {
	t.Parallel()
	r := startApp(t, eventsApp(nil, nil), miniredisURL(t), map[string]string{"WORKER_EVENTS": "false"})
	task, err := r.Registry.NewTask("test:ev-ok", []byte(`{"n":1}`), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	info, err := r.Enqueuer.EnqueueContext(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	c := events.NewClient(r.Manager.Client(), events.ClientOptions{CheckInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.WaitResult(ctx, info.Queue, info.ID)
	if err != nil || string(res) != `{"n":1}` {
		t.Fatalf("WaitResult = %q, %v", res, err)
	}
	keys, err := r.Manager.Client().Keys(ctx, "forgeq:events:*").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("event streams %q written with WORKER_EVENTS=false", keys)
	}
}
