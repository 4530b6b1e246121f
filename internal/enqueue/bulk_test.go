package enqueue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// TestBulk enqueues a file whose lines use every option, with flags as
// defaults, and checks each task in Redis against the JSON summary.
func TestBulk(t *testing.T) {
	tb := setup(t, dbCLI)
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	file := writeFile(t, "tasks.jsonl", strings.Join([]string{
		`{"type": "data:process", "payload": {"key": "a", "work": 1}}`,
		``, // blank lines are skipped
		`{"type": "data:process", "payload": {"key": "b", "work": 2}, "queue": "critical", "id": "bulk-b", "max_retry": 1, "timeout": "30s"}`,
		`{"type": "cache:warm", "payload": {"keys": ["c"], "work": 1}, "delay": 90}`,
		`{"type": "cache:invalidate", "payload": {"pattern": "c*"}, "at": "` + at.Format(time.RFC3339) + `", "retention": "1h", "unique": "10m"}`,
		`{"type": "data:process", "payload": {"key": "e", "work": 1}, "deadline": "1h"}`,
	}, "\n"))

	r := runCmd(t, tb.env, "", "--file", file, "--max-retry", "7", "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	sum := decodeJSON[bulkJSON](t, r.stdout)
	if sum.Enqueued != 5 || sum.Failed != 0 || sum.NotAttempted != 0 || len(sum.Tasks) != 5 || sum.PerSecond <= 0 {
		t.Fatalf("summary = %+v", sum)
	}
	byLine := make(map[int]*asynq.TaskInfo)
	for _, task := range sum.Tasks {
		ti, err := tb.insp.GetTaskInfo(task.Queue, task.ID)
		if err != nil {
			t.Fatalf("line %d: task %s on %s: %v", task.Line, task.ID, task.Queue, err)
		}
		if ti.Type != task.Type || ti.State.String() != task.State {
			t.Errorf("line %d: printed %+v, stored %s %s", task.Line, task, ti.Type, ti.State)
		}
		byLine[task.Line] = ti
	}
	type got struct {
		Queue, State string
		MaxRetry     int
	}
	want := map[int]got{
		1: {"default", "pending", 7},
		3: {"critical", "pending", 1},
		4: {"low", "scheduled", 7},
		5: {"default", "scheduled", 7},
		6: {"default", "pending", 7},
	}
	gotAll := make(map[int]got)
	for line, ti := range byLine {
		gotAll[line] = got{ti.Queue, ti.State.String(), ti.MaxRetry}
	}
	if diff := cmp.Diff(want, gotAll); diff != "" {
		t.Errorf("tasks by line (-want +got):\n%s", diff)
	}
	if ti := byLine[3]; ti.ID != "bulk-b" || ti.Timeout != 30*time.Second {
		t.Errorf("line 3: id %q, timeout %v", ti.ID, ti.Timeout)
	}
	if ti := byLine[4]; time.Until(ti.NextProcessAt) < 80*time.Second {
		t.Errorf("line 4: runs at %v, want in 90s", ti.NextProcessAt)
	}
	if ti := byLine[5]; !ti.NextProcessAt.Equal(at) || ti.Retention != time.Hour {
		t.Errorf("line 5: runs at %v, retention %v", ti.NextProcessAt, ti.Retention)
	}
	if ti := byLine[6]; time.Until(ti.Deadline) < 59*time.Minute {
		t.Errorf("line 6: deadline %v", ti.Deadline)
	}
	if n := tb.queued(t); n != 5 {
		t.Errorf("%d tasks in Redis, want 5", n)
	}
}

// TestBulkTextAndProgress reads the file from stdin and checks the text
// summary and the progress bar.
func TestBulkTextAndProgress(t *testing.T) {
	tb := setup(t, dbCLI)
	var sb strings.Builder
	for i := range 300 {
		fmt.Fprintf(&sb, `{"type": "data:process", "payload": {"key": "k%d", "work": 1}}`+"\n", i)
	}
	r := runCmd(t, tb.env, sb.String(), "--file", "-", "--queue", "low", "--progress", "always", "--concurrency", "8")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "enqueued 300 of 300 tasks in ") || !strings.Contains(r.stdout, "tasks/s)") {
		t.Errorf("stdout = %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "300/300") {
		t.Errorf("no progress bar reaching 300/300 in stderr: %q", abbrev2k(r.stderr))
	}
	qi, err := tb.insp.GetQueueInfo("low")
	if err != nil || qi.Pending != 300 {
		t.Errorf("low: %+v, %v; want 300 pending", qi, err)
	}

	// Without a terminal, and by default, there is no bar.
	tb.rdb.FlushDB(context.Background())
	r = runCmd(t, tb.env, sb.String(), "--file", "-")
	if r.code != exitOK || r.stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0 and nothing", r.code, r.stderr)
	}
}

// TestBulkRuntimeFailure: a task refused by Redis while enqueueing (here
// by a uniqueness lock another producer holds, which the checks before
// cannot see) in the middle of a batch fails the whole batch: nothing of
// it is enqueued, the summary names the conflicting line and says the
// others were not enqueued because of it, and the exit code is 1. With
// --batch-size 1 the task fails alone.
func TestBulkRuntimeFailure(t *testing.T) {
	tb := setup(t, dbCLI)
	seed := func() {
		t.Helper()
		tb.rdb.FlushDB(context.Background())
		if r := runCmd(t, tb.env, "", "data:process", `{"key": "held", "work": 1}`, "--unique", "1h"); r.code != exitOK {
			t.Fatalf("seed: exit %d: %s", r.code, r.stderr)
		}
	}
	seed()
	file := writeFile(t, "tasks.jsonl", strings.Join([]string{
		`{"type": "data:process", "payload": {"key": "a", "work": 1}, "unique": "1h"}`,
		`{"type": "data:process", "payload": {"key": "held", "work": 1}, "unique": "1h"}`,
		`{"type": "data:process", "payload": {"key": "c", "work": 1}, "unique": "1h"}`,
	}, "\n"))
	r := runCmd(t, tb.env, "", "--file", file)
	if r.code != exitFailure {
		t.Fatalf("exit %d, want 1; stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "enqueued 0 of 3 tasks") || !strings.Contains(r.stdout, "3 failed") {
		t.Errorf("stdout = %q", r.stdout)
	}
	for _, want := range []string{
		`line 2: task already exists: an earlier data:process task with the same payload holds its uniqueness lock on queue "default"`,
		`line 1: not enqueued: line 2 conflicts, and its batch (lines 1 to 3) is all or nothing`,
		`line 3: not enqueued: line 2 conflicts`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr = %q; want %q", r.stderr, want)
		}
	}
	if n := tb.queued(t); n != 1 {
		t.Errorf("%d tasks in Redis, want the seed alone", n)
	}

	seed()
	r = runCmd(t, tb.env, "", "--file", file, "--json")
	sum := decodeJSON[bulkJSON](t, r.stdout)
	if r.code != exitFailure || sum.Enqueued != 0 || sum.Failed != 3 || len(sum.Errors) != 3 || sum.Errors[1].Line != 2 {
		t.Errorf("--json: exit %d, summary %+v", r.code, sum)
	}

	seed()
	r = runCmd(t, tb.env, "", "--file", file, "--batch-size", "1")
	if r.code != exitFailure || !strings.Contains(r.stdout, "enqueued 2 of 3 tasks") || !strings.Contains(r.stdout, "1 failed") {
		t.Errorf("--batch-size 1: exit %d, stdout %q", r.code, r.stdout)
	}
	if n := tb.queued(t); n != 3 {
		t.Errorf("--batch-size 1: %d tasks in Redis, want 3", n)
	}
}

// TestBulkOwnRetry: a task sent twice (a pipeline resent after a network
// error) conflicts with itself, on its id or on its own uniqueness lock; it
// counts as enqueued, whether its id was generated or given. A conflict
// with another task is a failure that says what holds the id or the lock.
func TestBulkOwnRetry(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	env := map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr()}
	c := &cli{reg: tasks.Default(), now: time.Now, stderr: io.Discard, stdout: io.Discard, getenv: func(k string) string { return env[k] }}
	c.f.concurrency, c.f.progress = 4, "never"
	list, bad, err := c.checkLines(context.Background(), strings.NewReader(
		`{"type": "data:process", "payload": {"key": "a", "work": 1}}`+"\n"+
			`{"type": "data:process", "payload": {"key": "b", "work": 1}, "id": "given"}`+"\n"+
			`{"type": "data:process", "payload": {"key": "c", "work": 1}, "unique": "1h"}`+"\n"), c.localTypes())
	if err != nil || len(bad) > 0 {
		t.Fatal(err, bad)
	}
	cfg, err := c.loadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer k.close()
	bc := k.bulk()
	defer bc.close()
	if res := c.enqueueAll(context.Background(), bc.io(), list); res.enqueued != 3 {
		t.Fatalf("first: %+v", res)
	}
	res := c.enqueueAll(context.Background(), bc.io(), list) // as if each were sent again
	if res.enqueued != 3 || res.failed != 0 || res.stopped != nil {
		t.Errorf("again: enqueued %d, failed %d, errs %v, stopped %v; want every task counted as enqueued",
			res.enqueued, res.failed, res.errs, res.stopped)
	}
	for i, st := range res.states {
		if st != "pending" {
			t.Errorf("again: task %d state %q, want pending", i, st)
		}
	}

	// Other tasks holding the id and the lock.
	if _, err := k.client.Enqueue(asynq.NewTask(tasks.TypeWarm, []byte(`{"keys":["x"]}`)), asynq.TaskID("taken")); err != nil {
		t.Fatal(err)
	}
	others, bad, err := c.checkLines(context.Background(), strings.NewReader(
		`{"type": "data:process", "payload": {"key": "d", "work": 1}, "id": "taken"}`+"\n"+
			`{"type": "data:process", "payload": {"key": "c", "work": 1}, "unique": "1h"}`+"\n"), c.localTypes())
	if err != nil || len(bad) > 0 {
		t.Fatal(err, bad)
	}
	// One batch: the first conflict fails both.
	res = c.enqueueAll(context.Background(), bc.io(), others)
	if res.enqueued != 0 || res.failed != 2 || res.stopped != nil ||
		!strings.Contains(fmt.Sprint(res.errs[1]), "not enqueued: line 1 conflicts, and its batch (lines 1 to 2) is all or nothing") {
		t.Fatalf("others in one batch: enqueued %d, failed %d, errs %v, stopped %v", res.enqueued, res.failed, res.errs, res.stopped)
	}
	// A batch each: each says what holds its id or lock.
	c.f.batchSize = 1
	res = c.enqueueAll(context.Background(), bc.io(), others)
	if res.enqueued != 0 || res.failed != 2 || res.stopped != nil {
		t.Fatalf("others: enqueued %d, failed %d, stopped %v", res.enqueued, res.failed, res.stopped)
	}
	if err := res.errs[0]; !errors.Is(err, asynq.ErrTaskIDConflict) ||
		!strings.Contains(fmt.Sprint(err), `queue "default" got another task (cache:warm) with id "taken" after the check`) {
		t.Errorf("taken id: %v, want asynq.ErrTaskIDConflict naming the other task", err)
	}
	if err := res.errs[1]; !errors.Is(err, asynq.ErrDuplicateTask) ||
		!strings.Contains(fmt.Sprint(err), `an earlier data:process task with the same payload holds its uniqueness lock on queue "default"`) {
		t.Errorf("held lock: %v, want asynq.ErrDuplicateTask naming the lock", err)
	}
}

// TestBulkByteOrderMark: a file saved with a UTF-8 byte order mark, as
// some Windows editors do, is read as if it had none.
func TestBulkByteOrderMark(t *testing.T) {
	t.Parallel()
	b := setupCatalog(t, false)
	file := writeFile(t, "bom.jsonl", "\ufeff"+`{"type": "data:process", "payload": {"key": "bom", "work": 1}}`+"\n"+
		`{"type": "data:process", "payload": {"key": "bom2", "work": 1}}`+"\n")
	r := runCmd(t, b.env, "", "--file", file)
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if got := len(b.pending(t, "default")); got != 2 {
		t.Errorf("%d tasks pending, want 2", got)
	}
}
