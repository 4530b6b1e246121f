package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
//	go test -run '^$' -bench BulkEnqueue -benchtime 5x ./cmd/enqueue
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

// TestBulkFasterThanLoop measures the same two ways in one run and checks
// that the CLI's bulk mode is at least 3 times as fast as the loop. Timing
// under -race or on a loaded machine says little, so it runs only when
// ENQUEUE_MEASURE=1:
//
//	ENQUEUE_MEASURE=1 go test -run BulkFasterThanLoop -v ./cmd/enqueue
func TestBulkFasterThanLoop(t *testing.T) {
	if os.Getenv("ENQUEUE_MEASURE") != "1" {
		t.Skip("set ENQUEUE_MEASURE=1 to measure")
	}
	tb := setup(t, dbCLI)
	path := writeBenchFile(t, benchTasks)
	m, err := cachemgr.New(cachemgr.Options{URL: tb.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	client := asynq.NewClientFromRedisClient(m.Client())

	const rounds = 3
	var loop, bulk time.Duration
	for range rounds {
		tb.rdb.FlushDB(context.Background())
		start := time.Now()
		loopEnqueue(t, client, benchTasks)
		loop += time.Since(start)

		tb.rdb.FlushDB(context.Background())
		r := runCmd(t, tb.env, "", "--file", path)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		bulk += r.took
		if n := tb.queued(t); n != benchTasks {
			t.Fatalf("%d tasks queued, want %d", n, benchTasks)
		}
	}
	rate := func(d time.Duration) float64 { return float64(rounds*benchTasks) / d.Seconds() }
	ratio := loop.Seconds() / bulk.Seconds()
	t.Logf("%d tasks x %d rounds: loop %.0f tasks/s, enqueue --file %.0f tasks/s: %.2fx", benchTasks, rounds, rate(loop), rate(bulk), ratio)
	if ratio < 3 {
		t.Errorf("bulk enqueue is %.2fx the loop, want at least 3x", ratio)
	}
}
