package enqueue

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
)

// Databases of the real test Redis this package owns.
const (
	dbCLI  = 9  // enqueue only; nothing processes the tasks
	dbWait = 10 // an asynq server processes the tasks (TestWait)
)

func TestMain(m *testing.M) {
	redis.SetLogger(QuietRedis{}) // as main does
	os.Exit(m.Run())
}

// result is what one run of the command did.
type result struct {
	code   int
	stdout string
	stderr string
	took   time.Duration
}

// runCmd runs the command in-process with env as its whole environment and
// stdin as its input.
func runCmd(tb testing.TB, env map[string]string, stdin string, args ...string) result {
	tb.Helper()
	var out, errOut syncBuffer
	return runCmdTo(tb, &out, &errOut, env, stdin, args...)
}

// runCmdTo is runCmd writing to stdout and stderr as it runs, so that a
// test may watch them from another goroutine.
func runCmdTo(tb testing.TB, stdout, stderr *syncBuffer, env map[string]string, stdin string, args ...string) result {
	tb.Helper()
	start := time.Now()
	code := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), stdout, stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
}

// syncBuffer is a bytes.Buffer that is safe for concurrent use.
type syncBuffer = proctest.Buffer

// testBundle is a real Redis database, flushed, with the environment that
// points the command at it.
type testBundle struct {
	url  string
	env  map[string]string
	rdb  *redis.Client
	insp *asynq.Inspector
}

// setup flushes database db of the real test Redis and returns a bundle
// for it. Tests sharing a database must not run in parallel.
func setup(tb testing.TB, db int) *testBundle {
	tb.Helper()
	url := redistest.URL(tb, db)
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	tb.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		tb.Fatal(err)
	}
	return &testBundle{
		url:  url,
		env:  map[string]string{"REDIS_CONNECTION_URL": url},
		rdb:  rdb,
		insp: asynq.NewInspectorFromRedisClient(rdb),
	}
}

// queued returns how many tasks the database holds, in every queue and
// state.
func (b *testBundle) queued(tb testing.TB) int {
	tb.Helper()
	queues, err := b.insp.Queues()
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, q := range queues {
		qi, err := b.insp.GetQueueInfo(q)
		if err != nil {
			tb.Fatal(err)
		}
		n += qi.Pending + qi.Active + qi.Scheduled + qi.Retry + qi.Archived + qi.Completed + qi.Aggregating
	}
	return n
}
