package enqueue

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
)

// benchTasks is how many tasks one round of the bulk benchmark enqueues.
const benchTasks = 10_000

// writeBenchFile writes n data:process lines to a file and returns its path.
func writeBenchFile(tb testing.TB, n int) string {
	tb.Helper()
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, `{"type": "data:process", "payload": {"key": "bench:%d", "work": 100}}`+"\n", i)
	}
	path := filepath.Join(tb.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// loopEnqueue enqueues n data:process tasks one at a time with a plain
// client.EnqueueContext loop: the baseline the CLI's bulk mode is
// measured against.
func loopEnqueue(tb testing.TB, client *asynq.Client, n int) {
	tb.Helper()
	ctx := context.Background()
	for i := range n {
		task, err := tasks.NewProcessDataTask(tasks.ProcessData{Key: "bench:" + strconv.Itoa(i), Work: 100})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := client.EnqueueContext(ctx, task); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkBulkEnqueue compares, on the real test Redis, enqueueing
// benchTasks tasks with `enqueue --file` (run in-process: reading,
// checking every line, connecting and the concurrent enqueue) against a
// plain one-at-a-time EnqueueContext loop. Each reports tasks/s.
//
//	go test -run '^$' -bench BulkEnqueue -benchtime 5x ./internal/enqueue
func BenchmarkBulkEnqueue(b *testing.B) {
	tb := setup(b, dbCLI)
	path := writeBenchFile(b, benchTasks)
	m, err := cachemgr.New(cachemgr.Options{URL: tb.url})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	client := asynq.NewClientFromRedisClient(m.Client())

	b.Run("loop", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			tb.rdb.FlushDB(context.Background())
			b.StartTimer()
			loopEnqueue(b, client, benchTasks)
		}
		b.ReportMetric(float64(benchTasks*b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	b.Run("cli", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			tb.rdb.FlushDB(context.Background())
			b.StartTimer()
			if r := runCmd(b, tb.env, "", "--file", path); r.code != 0 {
				b.Fatalf("exit %d: %s", r.code, r.stderr)
			}
		}
		b.ReportMetric(float64(benchTasks*b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
}

// BenchmarkBulkVsLoop measures the same two ways, alternating within one
// run so that machine noise hits both, and reports the median ratio of the
// CLI's bulk rate to the loop's (target: at least 3). BENCHMARKS.md has the
// figures:
//
//	go test -run '^$' -bench BulkVsLoop -benchtime 1x -v ./internal/enqueue
func BenchmarkBulkVsLoop(b *testing.B) {
	t := b
	tb := setup(t, dbCLI)
	path := writeBenchFile(t, benchTasks)
	m, err := cachemgr.New(cachemgr.Options{URL: tb.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	client := asynq.NewClientFromRedisClient(m.Client())

	const rounds = 5
	rate := func(d time.Duration) float64 { return benchTasks / d.Seconds() }
	ratios := make([]float64, rounds)
	for i := range rounds {
		tb.rdb.FlushDB(context.Background())
		start := time.Now()
		loopEnqueue(t, client, benchTasks)
		loop := time.Since(start)

		tb.rdb.FlushDB(context.Background())
		r := runCmd(t, tb.env, "", "--file", path)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if n := tb.queued(t); n != benchTasks {
			t.Fatalf("%d tasks queued, want %d", n, benchTasks)
		}
		ratios[i] = loop.Seconds() / r.took.Seconds()
		t.Logf("round %d: loop %.0f tasks/s, enqueue --file %.0f tasks/s (%s): %.2fx",
			i+1, rate(loop), rate(r.took), strings.TrimSpace(r.stdout), ratios[i])
	}
	slices.Sort(ratios)
	median := ratios[rounds/2]
	t.Logf("%d tasks, %d rounds: median %.2fx (min %.2fx, max %.2fx)", benchTasks, rounds, median, ratios[0], ratios[rounds-1])
	b.ReportMetric(median, "bulk/loop")
}
