package faults

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/workflow"
)

// The messages of tasks.NewMux's one line per handler call.
const (
	msgDone        = "task done"
	msgFailed      = "task failed"
	msgInterrupted = "task interrupted"
)

// logTime is the layout of the "time" field of the worker's JSON logs
// (zap's ISO8601 encoder).
const logTime = "2006-01-02T15:04:05.000Z0700"

// run is one handler call of a task, as its log line tells it: it ended
// when the line was written and began took earlier.
type run struct {
	proc       string
	id         string
	msg        string
	outcome    string
	retry      int
	start, end time.Time
}

func (r run) String() string {
	return fmt.Sprintf("%s %s %q (%s, retry %d) %s..%s", r.proc, r.id, r.msg, r.outcome, r.retry,
		r.start.Format("15:04:05.000"), r.end.Format("15:04:05.000"))
}

// ledger is every handler call the worker processes logged, by task id.
type ledger map[string][]run

// readLedger collects the task lines of procs.
func readLedger(tb testing.TB, procs ...*proctest.Proc) ledger {
	tb.Helper()
	l := ledger{}
	for _, p := range procs {
		// A workflow step skipped by the workflow middleware (a
		// duplicate, or a final workflow) still logs "task done" right
		// after: that line is no run of the handler.
		skipped := map[string]int{}
		for _, e := range p.JSONLogLines() {
			msg, _ := e["msg"].(string)
			if strings.HasPrefix(msg, "workflow step skipped") {
				wf, _ := e["workflow_id"].(string)
				step, _ := e["step"].(string)
				skipped[workflow.TaskID(wf, step)]++
				continue
			}
			if msg != msgDone && msg != msgFailed && msg != msgInterrupted {
				continue
			}
			id, _ := e["task_id"].(string)
			if msg == msgDone && skipped[id] > 0 {
				skipped[id]--
				continue
			}
			ts, _ := e["time"].(string)
			end, err := time.Parse(logTime, ts)
			took, ok := e["took"].(float64)
			if id == "" || err != nil || !ok {
				tb.Errorf("%s: task line without task_id, time or took: %v", p, e)
				continue
			}
			outcome, _ := e["outcome"].(string)
			retry, _ := e["retry"].(float64)
			l[id] = append(l[id], run{
				proc: p.String(), id: id, msg: msg, outcome: outcome, retry: int(retry),
				start: end.Add(-time.Duration(took * float64(time.Second))), end: end,
			})
		}
	}
	for _, rs := range l {
		sort.Slice(rs, func(i, j int) bool { return rs[i].start.Before(rs[j].start) })
	}
	return l
}

// done returns the runs of id that logged "task done".
func (l ledger) done(id string) []run {
	var out []run
	for _, r := range l[id] {
		if r.msg == msgDone {
			out = append(out, r)
		}
	}
	return out
}

// checkDoneOnce fails the test for each id that did not log "task done"
// exactly once across all processes.
func (l ledger) checkDoneOnce(tb testing.TB, ids []string) {
	tb.Helper()
	bad := 0
	for _, id := range ids {
		if n := len(l.done(id)); n != 1 {
			bad++
			if bad <= 10 {
				tb.Errorf("task %s logged %q %d times, want once: %v", id, msgDone, n, l[id])
			}
		}
	}
	if bad > 10 {
		tb.Errorf("... %d tasks in all not done exactly once", bad)
	}
}

// checkNoOverlap fails the test when two handler calls of one task ran at
// the same time, in one process or two. The log's millisecond resolution
// and the rounding of took allow a slack of 2ms.
func (l ledger) checkNoOverlap(tb testing.TB) {
	tb.Helper()
	const slack = 2 * time.Millisecond
	for id, rs := range l {
		for i := 1; i < len(rs); i++ {
			if rs[i].start.Add(slack).Before(rs[i-1].end) {
				tb.Errorf("task %s ran twice at once: %v and %v", id, rs[i-1], rs[i])
			}
		}
	}
}

// count returns how many runs logged msg.
func (l ledger) count(msg string) int {
	n := 0
	for _, rs := range l {
		for _, r := range rs {
			if r.msg == msg {
				n++
			}
		}
	}
	return n
}

// summary describes the ledger in one line, for t.Log.
func (l ledger) summary() string {
	byProc := map[string]map[string]int{}
	for _, rs := range l {
		for _, r := range rs {
			if byProc[r.proc] == nil {
				byProc[r.proc] = map[string]int{}
			}
			byProc[r.proc][r.msg]++
		}
	}
	var parts []string
	for p, m := range byProc {
		parts = append(parts, fmt.Sprintf("%s: %d done, %d failed, %d interrupted", p, m[msgDone], m[msgFailed], m[msgInterrupted]))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
