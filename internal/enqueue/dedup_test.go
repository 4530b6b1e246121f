package enqueue

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
)

// TestDedupFlagsAndFields enqueues with a dedup key from the flags and from
// --file fields: the lines with one key make one task, the summary counts
// the deduplicated lines, and bad dedup input exits 2 naming the flag or
// the line and field.
func TestDedupFlagsAndFields(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	env := map[string]string{"REDIS_CONNECTION_URL": "redis://" + mr.Addr()}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)

	r := runCmd(t, env, "", "data:process", `{"key": "k", "work": 1}`, "--dedup-key", "report-7", "--delay", "1m")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "enqueued task ") {
		t.Fatalf("first: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, env, "", "data:process", `{"key": "k", "work": 2}`, "--dedup-key", "report-7", "--dedup-mode", "replace", "--delay", "1m", "--json")
	if r.code != exitOK || !strings.Contains(r.stdout, `"deduplicated":"replace"`) {
		t.Fatalf("second: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	file := writeFile(t, "dedup.jsonl", strings.Join([]string{
		`{"type": "data:process", "payload": {"key": "a", "work": 1}, "dedup_key": "line-key", "delay": "1m"}`,
		`{"type": "data:process", "payload": {"key": "a", "work": 2}, "dedup_key": "line-key", "dedup_mode": "debounce", "dedup_max_delay": "10m", "delay": "2m"}`,
		`{"type": "data:process", "payload": {"key": "b", "work": 1}}`,
	}, "\n"))
	r = runCmd(t, env, "", "--file", file)
	if r.code != exitOK || !strings.Contains(r.stdout, "enqueued 3 of 3 tasks") || !strings.Contains(r.stdout, "1 deduplicated") {
		t.Fatalf("--file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	qi, err := insp.GetQueueInfo("default")
	if err != nil || qi.Scheduled != 2 || qi.Pending != 1 {
		t.Errorf("queue %+v, %v; want 2 scheduled (report-7, line-key) and 1 pending", qi, err)
	}

	for _, tt := range []struct {
		name     string
		giveArgs []string
		giveFile string
		want     string
	}{
		{name: "bad mode flag", giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--dedup-key", "k", "--dedup-mode", "skip"},
			want: `--dedup-mode "skip": want keep, replace or debounce`},
		{name: "mode without key", giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--dedup-mode", "replace"},
			want: `--dedup-mode "replace": needs --dedup-key`},
		{name: "debounce without delay", giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--dedup-key", "k", "--dedup-mode", "debounce", "--dedup-max-delay", "1h"},
			want: `--dedup-mode "debounce": needs a delay`},
		{name: "bad line field", giveFile: `{"type": "data:process", "payload": {"key": "a", "work": 1}}` + "\n" +
			`{"type": "data:process", "payload": {"key": "a", "work": 1}, "dedup_key": "k", "dedup_release": "end"}`,
			want: `line 2: field "dedup_release" "end": want start or finish`},
		{name: "with unique", giveArgs: []string{"data:process", `{"key": "k", "work": 1}`, "--dedup-key", "k", "--unique", "1h"},
			want: `--dedup-key "k" and --unique: give one or the other`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.giveArgs
			if tt.giveFile != "" {
				args = []string{"--file", writeFile(t, "bad.jsonl", tt.giveFile)}
			}
			r := runCmd(t, env, "", args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 saying %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

// TestBulkCluster runs --file on the test cluster over two queues: one
// script per queue, so a conflict fails its queue's part of the batch and
// names its line, while the other queue's tasks are enqueued.
func TestBulkCluster(t *testing.T) {
	url := redistest.ClusterURL(t)
	env := map[string]string{"REDIS_CONNECTION_URL": url}
	qa := fmt.Sprintf("bulk-a-%d", time.Now().UnixNano())
	qb := qa + "-b"
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(strings.TrimPrefix(url, "redis+cluster://"), ",")})
	t.Cleanup(func() { rdb.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if r := runCmd(t, env, "", "data:process", `{"key": "held", "work": 1}`, "--queue", qa, "--unique", "1h"); r.code != exitOK {
		t.Fatalf("seed: exit %d: %s", r.code, r.stderr)
	}
	file := writeFile(t, "cluster.jsonl", strings.Join([]string{
		`{"type": "data:process", "payload": {"key": "a1", "work": 1}, "queue": "` + qa + `"}`,
		`{"type": "data:process", "payload": {"key": "b1", "work": 1}, "queue": "` + qb + `"}`,
		`{"type": "data:process", "payload": {"key": "held", "work": 1}, "queue": "` + qa + `", "unique": "1h"}`,
		`{"type": "data:process", "payload": {"key": "b2", "work": 1}, "queue": "` + qb + `"}`,
	}, "\n"))
	r := runCmd(t, env, "", "--file", file)
	if r.code != exitFailure || !strings.Contains(r.stdout, "enqueued 2 of 4 tasks") ||
		!strings.Contains(r.stderr, "line 3: task already exists") || !strings.Contains(r.stderr, "line 1: not enqueued: line 3 conflicts") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for q, want := range map[string]int{qa: 1, qb: 2} {
		qi, err := insp.GetQueueInfo(q)
		if err != nil || qi.Pending != want {
			t.Errorf("queue %s: %+v, %v; want %d pending", q, qi, err, want)
		}
	}
}
