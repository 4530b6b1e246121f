package events_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/forgeq/forgeq/events"
)

// BenchmarkPublish measures the cost of one event in this process, from
// Publish to its write to a real Redis, with 50 goroutines publishing.
//
//	go test -run '^$' -bench Publish ./events
func BenchmarkPublish(b *testing.B) {
	rdb := realRedis(b)
	q := queueName(b)
	p := events.NewPublisher(rdb, events.PublisherOptions{})
	defer p.Close()
	b.SetParallelism(25)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			p.Publish(events.Event{Kind: events.Started, Queue: q, TaskID: strconv.Itoa(i), Type: "bench:noop", Attempt: 1})
			if i%100 == 0 {
				_ = p.Flush(context.Background()) // no drops: wait for Redis
			}
		}
	})
	if err := p.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	if d := p.Dropped(); d > 0 {
		b.Fatalf("%d dropped", d)
	}
}

// BenchmarkPublishTask is BenchmarkPublish for a short task's two events,
// Started then Succeeded, published together as a busy worker does: most
// are written in one stream entry. An op is one task.
//
//	go test -run '^$' -bench PublishTask -benchtime 100000x ./events
func BenchmarkPublishTask(b *testing.B) {
	rdb := realRedis(b)
	q := queueName(b)
	p := events.NewPublisher(rdb, events.PublisherOptions{})
	defer p.Close()
	b.SetParallelism(25)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			e := events.Event{Kind: events.Started, Queue: q, TaskID: strconv.Itoa(i), Type: "bench:noop", Attempt: 1}
			p.Publish(e)
			e.Kind = events.Succeeded
			p.Publish(e)
			if i%40 == 0 {
				_ = p.Flush(context.Background()) // no drops: wait for Redis
			}
		}
	})
	if err := p.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	if d := p.Dropped(); d > 0 {
		b.Fatalf("%d dropped", d)
	}
}
