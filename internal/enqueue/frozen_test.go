package enqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
)

// TestBulkFrozenRedis freezes a private redis-server (SIGSTOP: it accepts
// connections but answers nothing) once a quarter of a --file is in. The
// run must end within about two socket timeouts, not wait for the thaw;
// after the thaw the summary must match what Redis holds, the resend file
// must hold every line not in Redis and no line known to be enqueued, and
// a rerun of it must complete the file without enqueuing a task twice.
//
// A long freeze outlasts the run, so the writes in flight stay unknown; a
// short one ends before the run does, so they are looked up and none stays
// unknown.
func TestBulkFrozenRedis(t *testing.T) {
	t.Parallel()
	const socketTimeout = time.Second
	tests := []struct {
		name        string
		giveFreeze  time.Duration
		wantUnknown bool // may tasks stay unknown
	}{
		{"long freeze", 10 * socketTimeout, true},
		{"short freeze", socketTimeout * 3 / 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := proctest.RedisServer(t)
			rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
			t.Cleanup(func() { rdb.Close() })
			insp := asynq.NewInspectorFromRedisClient(rdb)

			const n = 20000
			var sb strings.Builder
			lines := make(map[string]string) // by id: the line, for lines that give one
			for i := range n {
				if i%10 == 0 {
					line := fmt.Sprintf(`{"type": "data:process", "payload": {"key": "k%d", "work": 1}, "id": "given-%d"}`, i, i)
					lines[fmt.Sprint("given-", i)] = line
					sb.WriteString(line + "\n")
				} else {
					fmt.Fprintf(&sb, `{"type": "data:process", "payload": {"key": "k%d", "work": 1}}`+"\n", i)
				}
			}
			file := writeFile(t, "tasks.jsonl", sb.String())
			resend := filepath.Join(t.TempDir(), "left.jsonl")
			env := map[string]string{"REDIS_CONNECTION_URL": r.URL(), "REDIS_SOCKET_TIMEOUT": socketTimeout.String()}

			done := make(chan result, 1)
			go func() {
				var out, errOut syncBuffer
				done <- runCmdTo(t, &out, &errOut, env, "", "--file", file, "--json", "--resend", resend)
			}()
			pending := func() int64 {
				n, _ := rdb.LLen(context.Background(), "asynq:{default}:pending").Result()
				return n
			}
			for pending() < n/4 {
				time.Sleep(time.Millisecond)
			}
			frozeAt := time.Now()
			thawed := r.Pause(tt.giveFreeze)
			var res result
			select {
			case res = <-done:
			case <-time.After(tt.giveFreeze + 10*socketTimeout):
				t.Fatal("the run did not end")
			}
			took := time.Since(frozeAt)
			if tt.wantUnknown {
				select {
				case <-thawed:
					t.Fatalf("the run ended after the thaw, %v after the freeze", took)
				default:
				}
				// Stopping takes about 2 socket timeouts (the batch on the
				// wire, then the probe), closing the events publisher one
				// at most; writing the summary and the resend file takes
				// the rest, much longer under -race next to the other
				// packages' tests (4.3 s seen in CI). The bound is loose
				// on purpose: it catches a wait for a write timeout (the
				// publisher's is 5 s) or for the thaw, not a slow machine.
				if limit := 6 * socketTimeout; took > limit {
					t.Errorf("the run ended %v after the freeze, want within about 3 socket timeouts (%v at most)", took, limit)
				}
			}
			<-thawed
			if res.code != exitFailure {
				t.Fatalf("exit %d, want 1 (or the freeze came too late); stderr %s", res.code, abbrev2k(res.stderr))
			}
			sum := decodeJSON[bulkJSON](t, res.stdout)
			t.Logf("%v after the freeze: %+v", took, struct{ E, F, U, N int }{sum.Enqueued, sum.Failed, sum.Unknown, sum.NotAttempted})
			if sum.Enqueued+sum.Failed+sum.Unknown+sum.NotAttempted != n {
				t.Errorf("counts add up to %d, want %d", sum.Enqueued+sum.Failed+sum.Unknown+sum.NotAttempted, n)
			}
			if !tt.wantUnknown && sum.Unknown != 0 {
				t.Errorf("%d unknown after a freeze shorter than the run", sum.Unknown)
			}

			// Redis has every task counted as enqueued, and among the others
			// only unknown ones.
			qi, err := insp.GetQueueInfo("default")
			if err != nil {
				t.Fatal(err)
			}
			held := qi.Size
			if held < sum.Enqueued || held > sum.Enqueued+sum.Unknown {
				t.Errorf("Redis holds %d tasks; the summary says %d enqueued and %d unknown", held, sum.Enqueued, sum.Unknown)
			}
			for _, task := range sum.Tasks {
				if _, err := insp.GetTaskInfo(task.Queue, task.ID); err != nil {
					t.Fatalf("line %d, counted enqueued: %v", task.Line, err)
				}
			}

			// The resend file: every task not counted as enqueued, each with an
			// id, the given ones byte for byte.
			data, err := os.ReadFile(resend)
			if err != nil {
				t.Fatal(err)
			}
			left := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
			if len(left) != n-sum.Enqueued || sum.ResendLines != len(left) {
				t.Fatalf("resend file: %d lines (summary: %d), want %d", len(left), sum.ResendLines, n-sum.Enqueued)
			}
			inRedis := 0
			for _, line := range left {
				var l struct{ ID string }
				if err := json.Unmarshal(line, &l); err != nil || l.ID == "" {
					t.Fatalf("resend line %q: no id (%v)", line, err)
				}
				if want, ok := lines[l.ID]; ok && want != string(line) {
					t.Errorf("resend line %q, want the input line %q", line, want)
				}
				if _, err := insp.GetTaskInfo("default", l.ID); err == nil {
					inRedis++
				}
			}
			if inRedis > sum.Unknown || held+len(left)-inRedis != n {
				t.Errorf("%d resend lines are in Redis (%d unknown), Redis holds %d of %d", inRedis, sum.Unknown, held, n)
			}

			// A rerun of the resend file completes the run, once.
			again := runCmd(t, env, "", "--file", resend, "--json")
			if again.code != exitOK {
				t.Fatalf("rerun: exit %d: %s", again.code, abbrev2k(again.stderr))
			}
			if qi, err := insp.GetQueueInfo("default"); err != nil || qi.Size != n {
				t.Errorf("after the rerun Redis holds %+v (%v), want %d tasks", qi, err, n)
			}
		})
	}
}
