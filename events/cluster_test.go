package events_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/internal/redisurl"
)

// TestCluster publishes to the streams of queues in different hash slots
// of a Redis Cluster in one batch, and watches them.
func TestCluster(t *testing.T) {
	t.Parallel()
	p, err := redisurl.Parse(redistest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := p.NewClient(redisurl.Settings{SocketTimeout: 5 * time.Second})
	t.Cleanup(func() { rdb.Close() })
	pub := newPublisher(t, rdb, events.PublisherOptions{})
	c := events.NewClient(rdb, events.ClientOptions{})

	base := queueName(t)
	var queues []string
	for i := range 6 {
		queues = append(queues, base+"-"+strconv.Itoa(i))
	}
	for i := range 10 {
		for _, q := range queues {
			// One attempt each: not coalesced.
			pub.Publish(events.Event{Kind: events.Progress, Queue: q, TaskID: "1", Attempt: i + 1, Percent: float64(i)})
		}
	}
	pub.Publish(events.Event{Kind: events.Succeeded, Queue: queues[3], TaskID: "1", Result: []byte("done")})
	if err := pub.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		es := watch(t, c, q, "1", "0", 10, 10*time.Second)
		if len(es) != 10 || es[9].Percent != 9 {
			t.Errorf("queue %s: %d events, want 10 in order", q, len(es))
		}
	}
	res, err := c.WaitResult(context.Background(), queues[3], "1")
	if err != nil || string(res) != "done" {
		t.Errorf("WaitResult = %q, %v", res, err)
	}
}
