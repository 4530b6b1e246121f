package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/control"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/tasks"
)

// cancelDB is the database of REDIS_TEST_URL TestCancelRunningTasks uses.
const cancelDB = 51

// cancelBound is how long a cancellation of a running task may take, from
// the call to the task archived: the 1 s for the handler's ctx to
// end, which includes the archiving here. Measured: tens of milliseconds.
const cancelBound = time.Second

// TestCancelRunningTasks runs two worker processes with two long
// data:process tasks each, and cancels all four: with control.Cancel, and
// with the enqueue CLI (the queue found by searching). Each ends archived,
// "cancelled by ...", within cancelBound, is not retried, and its worker
// logs it with outcome "cancelled". Cancelling again exits 1, an unknown
// id exits 2.
func TestCancelRunningTasks(t *testing.T) {
	url := redistest.URL(t, cancelDB)
	flushDB(t, url)
	queue := uniqueName(t)
	env := workerEnv(url, queue)
	ws := startWorkers(t, 2, env)
	m := manager(t, url, nil)
	client := asynq.NewClientFromRedisClient(m.Client())
	insp := asynq.NewInspectorFromRedisClient(m.Client())
	ctx := context.Background()

	ids := make([]string, 4)
	for i := range ids {
		ids[i] = fmt.Sprintf("cancel-%d", i)
		// About 5 s of work on a cold key: it runs until cancelled.
		task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: queue + ":" + ids[i], Work: 50_000_000})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.EnqueueContext(ctx, task, asynq.Queue(queue), asynq.TaskID(ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		active, err := insp.ListActiveTasks(queue)
		if err != nil {
			t.Fatal(err)
		}
		if len(active) == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tasks running after 30s", len(active), len(ids))
		}
		time.Sleep(10 * time.Millisecond)
	}

	var took []time.Duration
	for _, id := range ids[:3] {
		start := time.Now()
		res, err := control.Cancel(ctx, m.Client(), queue, id, "e2e")
		d := time.Since(start)
		if err != nil {
			t.Fatalf("Cancel %s: %v", id, err)
		}
		if res.State != "archived" || res.Was != "active" {
			t.Errorf("Cancel %s = %+v, want archived, was active", id, res)
		}
		took = append(took, d)
	}
	// The last one with the CLI, which finds its queue.
	cliEnv := []string{"REDIS_CONNECTION_URL=" + url, "USER=ops"}
	start := time.Now()
	p := runEnqueue(t, cliEnv, "--cancel", ids[3])
	t.Logf("enqueue --cancel (a process, its start included) took %v: %s", time.Since(start), strings.TrimSpace(p.Stdout()))
	if !strings.Contains(p.Stdout(), "stopped while it ran, now archived (cancelled by ops via enqueue)") {
		t.Errorf("enqueue --cancel printed %q", p.Stdout())
	}
	t.Logf("Cancel of a running task, from the call to the task archived: %v (bound %v)", took, cancelBound)
	for i, d := range took {
		if d > cancelBound {
			t.Errorf("Cancel of %s took %v, over %v", ids[i], d, cancelBound)
		}
	}

	time.Sleep(time.Second) // a retry would show by now: none is expected at all
	for i, id := range ids {
		info, err := insp.GetTaskInfo(queue, id)
		if err != nil {
			t.Fatal(err)
		}
		by := "e2e"
		if i == 3 {
			by = "ops via enqueue"
		}
		if info.State != asynq.TaskStateArchived || info.LastErr != "cancelled by "+by || info.Retried != 0 {
			t.Errorf("task %s: %s, last error %q, retried %d; want archived, cancelled by %s, no retry",
				id, info.State, info.LastErr, info.Retried, by)
		}
	}
	perWorker := make([]int, len(ws))
	for i, w := range ws {
		for _, line := range w.LogLinesWithMsg("task cancelled") {
			if line["outcome"] != tasks.OutcomeCancelled || line["queue"] != queue {
				t.Errorf("%s: log line %v, want outcome cancelled", w, line)
			}
			perWorker[i]++
		}
	}
	if perWorker[0] != 2 || perWorker[1] != 2 {
		t.Errorf("\"task cancelled\" lines per worker: %v, want 2 and 2", perWorker)
	}

	for _, tt := range []struct {
		id       string
		wantCode int
	}{{ids[0], 1}, {"no-such-task", 2}} {
		p := proctest.Start(t, proctest.BuildEnqueue(t), append([]string{"LOG_FORMAT=json"}, cliEnv...), "--cancel", tt.id)
		code, err := p.Wait(time.Minute)
		if err != nil || code != tt.wantCode {
			t.Errorf("enqueue --cancel %s: exit %d, %v; want %d; output:\n%s", tt.id, code, err, tt.wantCode, p.Logs())
		}
	}
	if _, err := control.Cancel(ctx, m.Client(), queue, ids[0], "e2e"); err == nil {
		t.Error("a second Cancel succeeded, want ErrFinished")
	}
	stopWorkers(t, ws)
	removeQueue(t, m, queue, "")
}
