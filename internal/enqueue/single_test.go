package enqueue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// TestEnqueueOne enqueues single tasks on the real Redis, with the payload
// from each source and every task option, and checks what asynq stored.
func TestEnqueueOne(t *testing.T) {
	tb := setup(t, dbCLI)
	at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	deadline := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Second)
	payloadFile := writeFile(t, "p.json", `{"keys": ["a", "b"], "work": 3}`)

	tests := []struct {
		name      string
		giveArgs  []string
		giveStdin string
		check     func(t *testing.T, ti *asynq.TaskInfo)
	}{
		{
			name:     "payload argument, the type's defaults",
			giveArgs: []string{"data:process", `{"key": "k", "work": 5}`},
			check: func(t *testing.T, ti *asynq.TaskInfo) {
				wantTask(t, ti, "data:process", "default", `{"key":"k","work":5}`, asynq.TaskStatePending)
				if ti.MaxRetry != 5 || ti.Timeout != 10*time.Minute {
					t.Errorf("max retry %d, timeout %v: want the type's 5 and 10m", ti.MaxRetry, ti.Timeout)
				}
			},
		},
		{
			name:      "payload on stdin",
			giveArgs:  []string{"cache:invalidate"},
			giveStdin: `{"pattern": "user:*"}`,
			check: func(t *testing.T, ti *asynq.TaskInfo) {
				wantTask(t, ti, "cache:invalidate", "default", `{"pattern":"user:*"}`, asynq.TaskStatePending)
			},
		},
		{
			name:      "payload - is stdin",
			giveArgs:  []string{"cache:invalidate", "-"},
			giveStdin: `{"keys": ["x"]}`,
			check: func(t *testing.T, ti *asynq.TaskInfo) {
				wantTask(t, ti, "cache:invalidate", "default", `{"keys":["x"]}`, asynq.TaskStatePending)
			},
		},
		{
			name:     "payload file",
			giveArgs: []string{"cache:warm", "--payload-file", payloadFile},
			check: func(t *testing.T, ti *asynq.TaskInfo) {
				wantTask(t, ti, "cache:warm", "low", `{"keys":["a","b"],"work":3}`, asynq.TaskStatePending)
			},
		},
		{
			name: "every option",
			giveArgs: []string{"data:process", `{"key": "k", "work": 5}`, "--queue", "critical", "--at", at.Format(time.RFC3339),
				"--max-retry", "0", "--timeout", "90", "--deadline", deadline.Format(time.RFC3339), "--unique", "1h",
				"--id", "every-option", "--retention", "2h"},
			check: func(t *testing.T, ti *asynq.TaskInfo) {
				wantTask(t, ti, "data:process", "critical", `{"key":"k","work":5}`, asynq.TaskStateScheduled)
				if ti.ID != "every-option" || !ti.NextProcessAt.Equal(at) || ti.MaxRetry != 0 || ti.Timeout != 90*time.Second ||
					!ti.Deadline.Equal(deadline) || ti.Retention != 2*time.Hour {
					t.Errorf("task = %+v", ti)
				}
			},
		},
		{
			name:     "delay",
			giveArgs: []string{"data:process", `{"key": "k", "work": 5}`, "--delay", "1h30m"},
			check: func(t *testing.T, ti *asynq.TaskInfo) {
				wantTask(t, ti, "data:process", "default", `{"key":"k","work":5}`, asynq.TaskStateScheduled)
				if d := time.Until(ti.NextProcessAt); d < 89*time.Minute || d > 90*time.Minute {
					t.Errorf("runs in %v, want 90m", d)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb.rdb.FlushDB(context.Background())
			r := runCmd(t, tb.env, tt.giveStdin, append(tt.giveArgs, "--json")...)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			out := decodeJSON[taskJSON](t, r.stdout)
			ti, err := tb.insp.GetTaskInfo(out.Queue, out.ID)
			if err != nil {
				t.Fatalf("task %s on %s, as printed: %v", out.ID, out.Queue, err)
			}
			if out.Type != ti.Type || out.State != ti.State.String() {
				t.Errorf("printed %+v, stored %s %s", out, ti.Type, ti.State)
			}
			tt.check(t, ti)
			if n := tb.queued(t); n != 1 {
				t.Errorf("%d tasks in Redis, want 1", n)
			}
		})
	}
}

func wantTask(t *testing.T, ti *asynq.TaskInfo, typ, queue, payload string, state asynq.TaskState) {
	t.Helper()
	if ti.Type != typ || ti.Queue != queue || string(ti.Payload) != payload || ti.State != state {
		t.Errorf("task %s on %s, payload %s, %s; want %s on %s, payload %s, %s",
			ti.Type, ti.Queue, ti.Payload, ti.State, typ, queue, payload, state)
	}
}

// TestEnqueueText checks the text output of one task.
func TestEnqueueText(t *testing.T) {
	tb := setup(t, dbCLI)
	r := runCmd(t, tb.env, "", "data:process", `{"key": "k", "work": 5}`, "--delay", "10m", "--id", "text-1")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"enqueued task text-1", "type:  data:process", "queue: default", "state: scheduled, runs at"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestEnqueueUniqueConflict: a second unique task while the first one's
// lock holds is refused with exit 2.
func TestEnqueueUniqueConflict(t *testing.T) {
	tb := setup(t, dbCLI)
	args := []string{"data:process", `{"key": "k", "work": 5}`, "--unique", "1h"}
	if r := runCmd(t, tb.env, "", args...); r.code != exitOK {
		t.Fatalf("first: exit %d: %s", r.code, r.stderr)
	}
	r := runCmd(t, tb.env, "", args...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "same payload") || !strings.Contains(r.stderr, "--unique") {
		t.Errorf("second: exit %d, stderr %q; want 2 and a uniqueness message", r.code, r.stderr)
	}
	if n := tb.queued(t); n != 1 {
		t.Errorf("%d tasks in Redis, want 1", n)
	}
}

// TestEnqueueMiniredis runs the command against miniredis, so that the
// basic paths are checked without a real Redis too.
func TestEnqueueMiniredis(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	env := map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr()}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)

	r := runCmd(t, env, "", "data:process", `{"key": "k", "work": 5}`, "--id", "mini-1", "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := insp.GetTaskInfo("default", "mini-1"); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, env, "", "data:process", `{"key": "k", "work": 5}`, "--id", "mini-1"); r.code != exitUsage {
		t.Errorf("duplicate id: exit %d, want 2; stderr %q", r.code, r.stderr)
	}
	file := writeFile(t, "t.jsonl", `{"type": "data:process", "payload": {"key": "a", "work": 1}}`+"\r\n"+ // Windows line ends too
		`{"type": "cache:warm", "payload": {"keys": ["a"], "work": 1}, "delay": 60}`+"\n")
	if r := runCmd(t, env, "", "--file", file); r.code != exitOK {
		t.Fatalf("--file: exit %d: %s", r.code, r.stderr)
	}
	def, err := insp.GetQueueInfo("default")
	if err != nil {
		t.Fatal(err)
	}
	low, err := insp.GetQueueInfo("low")
	if err != nil {
		t.Fatal(err)
	}
	if def.Pending != 2 || low.Scheduled != 1 {
		t.Errorf("default has %d pending, low %d scheduled; want 2 and 1", def.Pending, low.Scheduled)
	}
}
