package events_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/redistest"
)

// Real Redis databases of this package's tests (each test uses queues of
// its own in it).
const realDB = 38

var flushOnce sync.Once

// realRedis returns a client of test database realDB, flushed once per
// run of the package's tests. It skips, or fails under CI, without
// REDIS_TEST_URL.
func realRedis(tb testing.TB) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(redistest.URL(tb, realDB))
	if err != nil {
		tb.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	tb.Cleanup(func() { rdb.Close() })
	var ferr error
	flushOnce.Do(func() { ferr = rdb.FlushDB(context.Background()).Err() })
	if ferr != nil {
		tb.Fatal(ferr)
	}
	return rdb
}

// miniRedis returns a client of a new miniredis.
func miniRedis(tb testing.TB) (*redis.Client, *miniredis.Miniredis) {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	return rdb, mr
}

// queueName returns a queue name of the test's own.
func queueName(tb testing.TB) string {
	return fmt.Sprintf("%s-%d", tb.Name(), time.Now().UnixNano())
}

// newPublisher returns a Publisher on rdb, closed at cleanup.
func newPublisher(tb testing.TB, rdb redis.UniversalClient, o events.PublisherOptions) *events.Publisher {
	tb.Helper()
	p := events.NewPublisher(rdb, o)
	tb.Cleanup(func() { p.Close() })
	return p
}

// read returns every event of queue's stream, oldest first.
func read(tb testing.TB, rdb redis.UniversalClient, queue string) []events.Event {
	tb.Helper()
	got, _, err := events.ReadAll(context.Background(), rdb, queue)
	if err != nil {
		tb.Fatal(err)
	}
	return got
}

// ignoreIDs leaves the stream ids, and the times they hold, out of
// comparisons.
var ignoreIDs = cmpopts.IgnoreFields(events.Event{}, "ID", "Time")

func TestPublisherWritesInOrder(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	at := time.UnixMilli(1_765_000_000_000).UTC()
	var want []events.Event
	for i := range 300 {
		// Failed events: Progress ones of a task would be coalesced.
		e := events.Event{Kind: events.Failed, Queue: "a", TaskID: "t" + strconv.Itoa(i%3), Type: "x",
			Time: at, Attempt: i + 1, Error: "step " + strconv.Itoa(i)}
		if i%50 == 49 {
			e.Queue = "b"
		}
		p.Publish(e)
		if e.Queue == "a" {
			want = append(want, e)
		}
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := read(t, rdb, "a")
	if diff := cmp.Diff(want, got, ignoreIDs); diff != "" {
		t.Errorf("stream a (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if d := time.Since(e.Time); d < 0 || d > time.Minute {
			t.Fatalf("event %s written at %v, %v ago", e.ID, e.Time, d)
		}
	}
	if n := len(read(t, rdb, "b")); n != 6 {
		t.Errorf("stream b holds %d events, want 6", n)
	}
}

func TestPublisherFields(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	at := time.UnixMilli(1_765_000_000_000).UTC()
	big := make([]byte, events.MaxResultBytes+10)
	for i := range big {
		big[i] = 'x'
	}
	give := []events.Event{
		{Kind: events.Enqueued, Queue: "q", TaskID: "1", Type: "t", Time: at, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{Kind: events.Failed, Queue: "q", TaskID: "1", Type: "t", Time: at, Attempt: 2, Error: "boom"},
		{Kind: events.Retried, Queue: "q", TaskID: "1", Type: "t", Time: at, Attempt: 2, Error: "boom", NextAt: at.Add(time.Second)},
		{Kind: events.Succeeded, Queue: "q", TaskID: "1", Type: "t", Time: at, Attempt: 3, Result: []byte(`{"ok":true}`)},
		{Kind: events.Succeeded, Queue: "q", TaskID: "2", Type: "t", Time: at, Attempt: 1, Result: big},
	}
	for _, e := range give {
		p.Publish(e)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := append([]events.Event(nil), give...)
	want[4].Result, want[4].ResultTruncated = big[:events.MaxResultBytes], true
	if diff := cmp.Diff(want, read(t, rdb, "q"), ignoreIDs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestPublisherIgnoresIncomplete(t *testing.T) {
	t.Parallel()
	rdb, mr := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	p.Publish(events.Event{Kind: events.Started, TaskID: "no queue"})
	p.Publish(events.Event{Kind: events.Started, Queue: "no-task"})
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		t.Errorf("keys %q written, want none", keys)
	}
	var nilp *events.Publisher
	nilp.Publish(events.Event{Kind: events.Started, Queue: "q", TaskID: "1"})
	if err := nilp.Close(); err != nil || nilp.Dropped() != 0 {
		t.Errorf("nil Publisher: Close = %v, Dropped = %d", err, nilp.Dropped())
	}
}

func TestPublisherDrops(t *testing.T) {
	t.Parallel()

	t.Run("after close", func(t *testing.T) {
		t.Parallel()
		rdb, _ := miniRedis(t)
		var n atomic.Int64
		p := events.NewPublisher(rdb, events.PublisherOptions{OnDropped: func() { n.Add(1) }})
		p.Publish(events.Event{Kind: events.Started, Queue: "q", TaskID: "1"})
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if l := rdb.XLen(context.Background(), events.StreamKey("q")).Val(); l != 1 {
			t.Errorf("stream length after Close = %d, want 1 (Close writes what was published)", l)
		}
		p.Publish(events.Event{Kind: events.Started, Queue: "q", TaskID: "2"})
		if n.Load() != 1 || p.Dropped() != 1 {
			t.Errorf("OnDropped calls, Dropped = %d, %d; want 1, 1", n.Load(), p.Dropped())
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})

	t.Run("redis down, buffer full", func(t *testing.T) {
		t.Parallel()
		rdb, mr := miniRedis(t)
		mr.Close()
		p := events.NewPublisher(rdb, events.PublisherOptions{Buffer: 10})
		start := time.Now()
		for i := range 1000 {
			p.Publish(events.Event{Kind: events.Started, Queue: "q", TaskID: strconv.Itoa(i)})
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("1000 Publish calls with Redis down took %v: Publish blocks", d)
		}
		if err := p.Close(); err == nil {
			t.Error("Close with Redis down = nil, want the write's error")
		}
		if d := p.Dropped(); d != 1000 {
			t.Errorf("Dropped = %d, want 1000", d)
		}
	})
}

// TestPublisherMaxLen checks the trimming on a real Redis: XADD MAXLEN ~
// trims whole stream nodes, so the stream holds at least MaxLen entries
// and less than MaxLen plus a node (stream-node-max-entries, 100).
func TestPublisherMaxLen(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	q := queueName(t)
	p := newPublisher(t, rdb, events.PublisherOptions{MaxLen: 100})
	for i := range 500 {
		// A Flush each: an entry each.
		p.Publish(events.Event{Kind: events.Progress, Queue: q, TaskID: strconv.Itoa(i), Percent: 50, Message: "half way"})
		if err := p.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	n, err := rdb.XLen(context.Background(), events.StreamKey(q)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 || n > 200 {
		t.Errorf("stream length after 500 entries with MaxLen 100 = %d, want 100 to 200", n)
	}
	// The newest entries are the ones kept.
	got := read(t, rdb, q)
	if len(got) == 0 || got[len(got)-1].TaskID != "499" || got[0].TaskID == "0" {
		t.Errorf("%d events kept, want the newest, up to task 499's", len(got))
	}
}

// TestPublisherWritesUnasked checks that an event published to an idle
// Publisher reaches Redis with no Flush or Close (how soon is measured by
// BenchmarkWaitLatency in internal/enqueue).
func TestPublisherWritesUnasked(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	q := queueName(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	for i := range 3 {
		p.Publish(events.Event{Kind: events.Progress, Queue: q, TaskID: "1", Percent: float64(i)})
		deadline := time.Now().Add(10 * time.Second)
		for len(read(t, rdb, q)) != i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("event %d not in Redis 10s after Publish", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
