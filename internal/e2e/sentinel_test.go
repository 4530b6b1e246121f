package e2e

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/tasks"
)

// enqueueAttempt is one enqueue of the Sentinel test.
type enqueueAttempt struct {
	id  string
	at  time.Time // when EnqueueContext returned
	err error
}

// TestSentinelFailover runs two workers on a Sentinel deployment while a
// client enqueues a task every 20ms for 8s, and forces a failover after 3s.
// Every task whose enqueue was acknowledged must run; the workers must go on
// with the new master.
//
// Redis replication is asynchronous, and SENTINEL FAILOVER does not stop
// the old master's clients before it promotes the replica: a write the old
// master acknowledged but had not replicated, or one it took after the
// promotion and before its client heard of the new master, is lost. A task
// acknowledged within lossWindow of the failover may therefore be lost or
// run twice (its completion was lost, so it runs again after its lease
// expires); the test logs each such task and fails on any outside the
// window.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()

	const (
		queue          = "default"
		every          = 20 * time.Millisecond
		enqueueFor     = 8 * time.Second
		failoverAfter  = 3 * time.Second
		lossWindow     = 2 * time.Second
		completeWithin = 60 * time.Second
	)

	s := proctest.Sentinel(t)
	url := s.URL()
	name := uniqueName(t)
	ws := startWorkers(t, 2, workerEnv(url, queue, "WORKER_CONCURRENCY=4"))

	m := manager(t, url, nil)
	client := asynq.NewClientFromRedisClient(m.Client())
	insp := asynq.NewInspectorFromRedisClient(m.Client())

	var (
		wg       sync.WaitGroup
		attempts []enqueueAttempt
	)
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		stop := time.Now().Add(enqueueFor)
		for i := 0; time.Now().Before(stop); i++ {
			<-tick.C
			id := fmt.Sprintf("%s-%04d", name, i)
			task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: fmt.Sprintf("%s:k%04d", name, i), Work: 1000},
				asynq.TaskID(id), asynq.Queue(queue), asynq.Retention(time.Hour))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err = client.EnqueueContext(ctx, task)
				cancel()
			}
			attempts = append(attempts, enqueueAttempt{id: id, at: time.Now(), err: err})
		}
	})

	time.Sleep(failoverAfter)
	oldMaster := s.MasterAddr()
	failStart := time.Now()
	newMaster := s.Failover(t)
	failEnd := time.Now()
	t.Logf("failover %s -> %s: the sentinels agreed after %v", oldMaster, newMaster, failEnd.Sub(failStart).Round(time.Millisecond))
	wg.Wait()

	inWindow := func(at time.Time) bool {
		return !at.Before(failStart.Add(-lossWindow)) && !at.After(failEnd.Add(lossWindow))
	}

	// Enqueue errors: the caller saw them, so those tasks are not lost;
	// but the client must recover once the failover is over.
	acked := make(map[string]enqueueAttempt)
	var failed []enqueueAttempt
	ackedAfter := 0
	for _, a := range attempts {
		if a.err != nil {
			failed = append(failed, a)
			if !inWindow(a.at) {
				t.Errorf("enqueue %s failed %v after the failover began, outside its window: %v",
					a.id, a.at.Sub(failStart).Round(time.Millisecond), a.err)
			}
			continue
		}
		acked[a.id] = a
		if a.at.After(failEnd.Add(lossWindow)) {
			ackedAfter++
		}
	}
	t.Logf("%d enqueues: %d acknowledged, %d failed during the failover", len(attempts), len(acked), len(failed))
	for _, a := range failed {
		t.Logf("  enqueue %s failed at failover%+v: %v", a.id, a.at.Sub(failStart).Round(time.Millisecond), a.err)
	}
	if ackedAfter == 0 {
		t.Fatal("no enqueue acknowledged after the failover")
	}

	// Wait until every acknowledged task has run, or those that have not
	// are unknown to the new master for a while: nothing can run them.
	var missing []string
	deadline := time.Now().Add(completeWithin)
	goneSince := time.Time{}
	for {
		all := sumCounts(doneCounts(ws, queue))
		missing = missing[:0]
		for id := range acked {
			if all[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		gone := 0
		for _, id := range missing {
			if _, err := insp.GetTaskInfo(queue, id); errors.Is(err, asynq.ErrTaskNotFound) {
				gone++
			}
		}
		switch {
		case gone < len(missing):
			goneSince = time.Time{}
		case goneSince.IsZero():
			goneSince = time.Now()
		case time.Since(goneSince) > 3*time.Second:
			deadline = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Tasks still active on the new master ran on the old one, whose
	// record of their completion was lost: asynq runs them again once
	// their lease expires (at least once).
	if active, err := insp.ListActiveTasks(queue); err == nil && len(active) > 0 {
		ids := make([]string, len(active))
		for i, ti := range active {
			ids[i] = ti.ID
		}
		t.Logf("%d tasks still active on the new master, to run again after their lease expires: %v", len(active), ids)
	}

	for _, w := range ws {
		if w.Exited() {
			t.Errorf("%s exited during the run", w)
		}
	}
	per := doneCounts(ws, queue)
	stopWorkers(t, ws)

	sort.Strings(missing)
	for _, id := range missing {
		a := acked[id]
		if inWindow(a.at) {
			t.Logf("LOST in the asynchronous-replication window: task %s, acknowledged at failover%+v",
				id, a.at.Sub(failStart).Round(time.Millisecond))
			continue
		}
		t.Errorf("task %s, acknowledged at failover%+v, never ran", id, a.at.Sub(failStart).Round(time.Millisecond))
	}

	// Duplicates: at least once allows them, for tasks caught by the
	// failover.
	all := sumCounts(per)
	dups := 0
	for id, n := range all {
		if n <= 1 {
			continue
		}
		dups++
		a, ok := acked[id]
		switch {
		case !ok:
			t.Logf("task %s, whose enqueue failed, ran %d times", id, n)
		case inWindow(a.at):
			t.Logf("RAN TWICE in the failover window: task %s ran %d times, acknowledged at failover%+v",
				id, n, a.at.Sub(failStart).Round(time.Millisecond))
		default:
			t.Errorf("task %s ran %d times, acknowledged at failover%+v, outside the failover window",
				id, n, a.at.Sub(failStart).Round(time.Millisecond))
		}
	}

	// Both workers went on after the failover.
	for i, w := range ws {
		after := 0
		for id := range per[i] {
			if a, ok := acked[id]; ok && a.at.After(failEnd.Add(lossWindow)) {
				after++
			}
		}
		if after == 0 {
			t.Errorf("%s ran no task enqueued after the failover", w)
		}
		t.Logf("%s ran %d tasks, %d of them enqueued after the failover", w, len(per[i]), after)
	}
	// Tasks that ran, but whose record the new master lacks: written to
	// the old master after the promotion, run by a worker still on it.
	unrecorded := 0
	for id := range acked {
		if all[id] > 0 {
			if _, err := insp.GetTaskInfo(queue, id); errors.Is(err, asynq.ErrTaskNotFound) {
				unrecorded++
			}
		}
	}
	t.Logf("summary: %d acknowledged, %d ran (%d of them unknown to the new master), %d lost in the window, %d ran twice, %d enqueue errors",
		len(acked), len(acked)-len(missing), unrecorded, len(missing), dups, len(failed))
	for _, w := range ws {
		if msgs := problems(w); len(msgs) > 0 {
			t.Logf("%s warnings and errors (message: count): %v", w, msgs)
		}
	}
	if failedTasks := failedLines(ws); len(failedTasks) > 0 {
		t.Logf("%d task failures or interruptions (retried by asynq):", len(failedTasks))
		for _, l := range failedTasks {
			t.Log("  " + l)
		}
	}
}
