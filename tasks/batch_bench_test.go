package tasks_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/forgeq/forgeq/tasks"
)

// BenchmarkEnqueueBatch enqueues 10,000 tasks on the real test Redis in
// batches of each size, and reports tasks/s.
//
//	go test -run '^$' -bench EnqueueBatch ./tasks
func BenchmarkEnqueueBatch(b *testing.B) {
	rdb := realRedis(b)
	const n = 10_000
	items := make([]tasks.BatchItem, n)
	for i := range items {
		items[i] = tasks.BatchItem{Type: "data:process", Payload: fmt.Appendf(nil, `{"key":"bench:%d","work":100}`, i)}
	}
	for _, size := range []int{100, 1000, 10_000} {
		b.Run(fmt.Sprint("size=", size), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				rdb.FlushDB(ctx)
				b.StartTimer()
				for from := 0; from < n; from += size {
					if _, err := tasks.EnqueueBatch(ctx, rdb, items[from:from+size]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
	b.Run("asynq.Client", func(b *testing.B) {
		ctx := context.Background()
		client := asynq.NewClientFromRedisClient(rdb)
		for b.Loop() {
			b.StopTimer()
			rdb.FlushDB(ctx)
			b.StartTimer()
			for _, it := range items {
				if _, err := client.EnqueueContext(ctx, asynq.NewTask(it.Type, it.Payload)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
}
