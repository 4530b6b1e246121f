package events_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/events"
)

// TestPublisherMergesStarted checks that a Started event written in one
// batch with the next event of its attempt shares that event's entry, and
// that the readers give both back, in order, with the Started event's own
// ID and time.
func TestPublisherMergesStarted(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	c := events.NewClient(rdb, events.ClientOptions{})
	ctx := context.Background()
	at := time.UnixMilli(1_765_000_000_123).UTC()
	const tr = "4bf92f3577b34da6a3ce929d0e0e4736"
	batch := []events.Event{
		{Kind: events.Started, Queue: "q", TaskID: "a", Type: "x", Time: at, Attempt: 1, TraceID: tr},
		{Kind: events.Started, Queue: "q", TaskID: "b", Type: "x", Time: at, Attempt: 1},
		{Kind: events.Progress, Queue: "q", TaskID: "a", Type: "x", Attempt: 1, Percent: 50, Message: "half", TraceID: tr},
		{Kind: events.Succeeded, Queue: "q", TaskID: "b", Type: "x", Attempt: 1, Result: []byte("ok")},
		{Kind: events.Succeeded, Queue: "q", TaskID: "a", Type: "x", Attempt: 1, TraceID: tr},
		// Not merged: the next event is of another attempt, or of a kind
		// that does not follow a start, or there is none, or the Started
		// event carries more than a start.
		{Kind: events.Started, Queue: "q", TaskID: "c", Type: "x", Attempt: 1},
		{Kind: events.Failed, Queue: "q", TaskID: "c", Type: "x", Attempt: 2, Error: "boom"},
		{Kind: events.Started, Queue: "q", TaskID: "d", Type: "x", Attempt: 1},
		{Kind: events.Retried, Queue: "q", TaskID: "d", Type: "x", Attempt: 1},
		{Kind: events.Started, Queue: "q", TaskID: "e", Type: "x", Attempt: 1, Message: "odd"},
		{Kind: events.Succeeded, Queue: "q", TaskID: "e", Type: "x", Attempt: 1},
		{Kind: events.Started, Queue: "q", TaskID: "f", Type: "x", Attempt: 1},
	}
	if err := events.WriteBatch(p, batch); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, events.StreamKey("q")).Val(); n != int64(len(batch)-2) {
		t.Errorf("stream length %d, want %d: two Started events merged", n, len(batch)-2)
	}
	got := read(t, rdb, "q")
	// Per entry, in the stream's order: a's start and progress, b's
	// start and end, a's end, then the others as published.
	want := []events.Event{batch[0], batch[2], batch[1], batch[3]}
	want = append(want, batch[4:]...)
	if diff := cmp.Diff(want, got, ignoreIDs); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	for _, i := range []int{0, 2} { // the merged Started events
		if got[i].ID == "" || got[i].ID >= got[i+1].ID && len(got[i].ID) == len(got[i+1].ID) {
			t.Errorf("merged Started ID %q, want just before its entry's %q", got[i].ID, got[i+1].ID)
		}
		if !got[i].Time.Equal(at) {
			t.Errorf("merged Started Time %v, want the published %v", got[i].Time, at)
		}
	}

	// Task a alone, then resumed after its Started event: the entry comes
	// again, Started included; after the progress, only the end.
	if diff := cmp.Diff([]events.Kind{events.Started, events.Progress, events.Succeeded},
		kinds(watch(t, c, "q", "a", "0", 3, 5*time.Second))); diff != "" {
		t.Errorf("task a (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]events.Kind{events.Started, events.Progress, events.Succeeded},
		kinds(watch(t, c, "q", "a", got[0].ID, 3, 5*time.Second))); diff != "" {
		t.Errorf("task a after its Started event (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]events.Kind{events.Succeeded},
		kinds(watch(t, c, "q", "a", got[1].ID, 1, 5*time.Second))); diff != "" {
		t.Errorf("task a after its progress (-want +got):\n%s", diff)
	}
}

// TestPublisherMergedAfterSameTask checks that a merged Started event
// whose ID is that of the entry before (same millisecond), of the same
// task, is not taken for an event already seen.
func TestPublisherMergedAfterSameTask(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	c := events.NewClient(rdb, events.ClientOptions{})
	batch := []events.Event{
		{Kind: events.Failed, Queue: "q", TaskID: "a", Attempt: 1, Error: "boom"},
		{Kind: events.Retried, Queue: "q", TaskID: "a", Attempt: 1, Error: "boom"},
		{Kind: events.Started, Queue: "q", TaskID: "a", Attempt: 2},
		{Kind: events.Succeeded, Queue: "q", TaskID: "a", Attempt: 2},
	}
	// Live: the watcher reads the entries as they are written.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	after, err := c.LastID(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	live := make(chan []events.Event, 1)
	go func() { live <- watch(t, c, "q", "a", after, 4, 5*time.Second) }()
	time.Sleep(50 * time.Millisecond)
	if err := events.WriteBatch(p, batch); err != nil {
		t.Fatal(err)
	}
	want := []events.Kind{events.Failed, events.Retried, events.Started, events.Succeeded}
	if diff := cmp.Diff(want, kinds(<-live)); diff != "" {
		t.Errorf("live (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, kinds(watch(t, c, "q", "a", "0", 4, 5*time.Second))); diff != "" {
		t.Errorf("from the start (-want +got):\n%s", diff)
	}
}

func TestLastIDHasNewer(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	q := queueName(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	c := events.NewClient(rdb, events.ClientOptions{})
	ctx := context.Background()
	last, err := c.LastID(ctx, q)
	if err != nil || last != "0-0" {
		t.Fatalf("LastID of no stream = %q, %v; want 0-0", last, err)
	}
	if err := events.WriteBatch(p, []events.Event{
		{Kind: events.Started, Queue: q, TaskID: "a", Attempt: 1},
		{Kind: events.Succeeded, Queue: q, TaskID: "a", Attempt: 1},
	}); err != nil {
		t.Fatal(err)
	}
	es := read(t, rdb, q)
	if len(es) != 2 {
		t.Fatalf("%d events, want a merged pair", len(es))
	}
	if last, err = c.LastID(ctx, q); err != nil || last != es[1].ID {
		t.Errorf("LastID = %q, %v; want %q", last, err, es[1].ID)
	}
	// Other tasks' entries after, more than one read's worth.
	for i := range 600 {
		p.Publish(events.Event{Kind: events.Progress, Queue: q, TaskID: "other-" + strconv.Itoa(i)})
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		id, after string
		want      bool
	}{
		{"a", "0", true},
		{"a", es[0].ID, true}, // the end is in the entry after the Started event's ID
		{"a", es[1].ID, false},
		{"nope", "0", false},
		{"other-599", es[1].ID, true},
	} {
		got, err := c.HasNewer(ctx, q, tt.id, tt.after)
		if err != nil || got != tt.want {
			t.Errorf("HasNewer(%q after %q) = %v, %v; want %v", tt.id, tt.after, got, err, tt.want)
		}
	}
	if _, err := c.HasNewer(ctx, q, "a", "x-1"); err == nil {
		t.Error("HasNewer after a bad id: no error")
	}
}

// frozenRedis returns the address of a server that accepts connections
// and never answers, as a frozen Redis (SIGSTOP) does.
func frozenRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func() {
				var b [4096]byte
				for {
					if _, err := c.Read(b[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestPublisherCloseFrozenRedis checks that Close does not write batch
// after batch, each after its own timeout, to a Redis that does not
// answer, and that CloseContext gives up when its ctx ends.
func TestPublisherCloseFrozenRedis(t *testing.T) {
	t.Parallel()
	const readTimeout = 100 * time.Millisecond
	client := func() *redis.Client {
		rdb := redis.NewClient(&redis.Options{Addr: frozenRedis(t), Protocol: 2, DisableIdentity: true,
			ReadTimeout: readTimeout, WriteTimeout: readTimeout, MaxRetries: -1})
		t.Cleanup(func() { rdb.Close() })
		return rdb
	}
	const n = 5000 // ten batches

	t.Run("after a failed write", func(t *testing.T) {
		t.Parallel()
		p := events.NewPublisher(client(), events.PublisherOptions{})
		p.Publish(events.Event{Kind: events.Started, Queue: "q", TaskID: "first"})
		if err := p.Flush(context.Background()); err == nil {
			t.Fatal("Flush to a frozen Redis = nil")
		}
		for i := range n {
			p.Publish(events.Event{Kind: events.Progress, Queue: "q", TaskID: strconv.Itoa(i)})
		}
		start := time.Now()
		err := p.Close()
		if d := time.Since(start); d > 5*readTimeout {
			t.Errorf("Close took %v, want about one read timeout (%v) at most", d, readTimeout)
		}
		if err == nil {
			t.Error("Close = nil, want an error")
		}
		waitDropped(t, p, n+1)
	})

	t.Run("write unanswered for a second", func(t *testing.T) {
		t.Parallel()
		rdb := redis.NewClient(&redis.Options{Addr: frozenRedis(t), Protocol: 2, DisableIdentity: true,
			ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxRetries: -1})
		t.Cleanup(func() { rdb.Close() })
		p := events.NewPublisher(rdb, events.PublisherOptions{})
		for i := range n {
			p.Publish(events.Event{Kind: events.Progress, Queue: "q", TaskID: strconv.Itoa(i)})
		}
		time.Sleep(1200 * time.Millisecond)
		start := time.Now()
		if err := p.Close(); err == nil {
			t.Error("Close = nil, want an error")
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("Close took %v, want it at once", d)
		}
		rdb.Close() // ends the write under way
		waitDropped(t, p, n)
	})

	t.Run("CloseContext", func(t *testing.T) {
		t.Parallel()
		rdb := client()
		p := events.NewPublisher(rdb, events.PublisherOptions{})
		for i := range n {
			p.Publish(events.Event{Kind: events.Progress, Queue: "q", TaskID: strconv.Itoa(i)})
		}
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout/2)
		defer cancel()
		start := time.Now()
		err := p.CloseContext(ctx)
		if d := time.Since(start); d > readTimeout {
			t.Errorf("CloseContext took %v, want its ctx's %v", d, readTimeout/2)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("CloseContext = %v, want ctx's error", err)
		}
		// The goroutine drops the rest once its write under way ends.
		waitDropped(t, p, n)
	})
}

// waitDropped waits until p has dropped n events.
func waitDropped(t *testing.T, p *events.Publisher, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); p.Dropped() != n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Dropped = %d, want %d", p.Dropped(), n)
		}
	}
}

// TestWaitResultTruncated checks that WaitResult returns the whole result
// of a Succeeded event whose result was cut, read from the task while
// asynq retains it, and the cut one with ErrResultTruncated otherwise.
func TestWaitResultTruncated(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("0123456789"), events.MaxResultBytes/5) // 2 x MaxResultBytes

	t.Run("retained", func(t *testing.T) {
		t.Parallel()
		rdb := realRedis(t)
		q := queueName(t)
		pub := newPublisher(t, rdb, events.PublisherOptions{})
		written, release := make(chan string), make(chan struct{})
		runServer(t, rdb, q, func(ctx context.Context, task *asynq.Task) error {
			if _, err := task.ResultWriter().Write(big); err != nil {
				return err
			}
			id, _ := asynq.GetTaskID(ctx)
			written <- id
			<-release
			return nil
		})
		ac := asynq.NewClientFromRedisClient(rdb)
		info, err := ac.EnqueueContext(context.Background(), asynq.NewTask("x:y", nil), asynq.Queue(q), asynq.Retention(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		c := events.NewClient(rdb, events.ClientOptions{CheckInterval: slow})
		<-written
		out := make(chan waitOutcome, 1)
		go func() {
			res, err := c.WaitResult(context.Background(), q, info.ID)
			out <- waitOutcome{res: res, err: err}
		}()
		time.Sleep(100 * time.Millisecond) // WaitResult follows the stream
		// Published as the worker does: as the handler returns, before
		// asynq marks the task completed.
		pub.Publish(events.Event{Kind: events.Succeeded, Queue: q, TaskID: info.ID, Attempt: 1, Result: big})
		if err := pub.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		var o waitOutcome
		select {
		case o = <-out:
		case <-time.After(10 * time.Second):
			t.Fatal("WaitResult did not return")
		}
		close(release)
		if o.err != nil || !bytes.Equal(o.res, big) {
			t.Fatalf("WaitResult = %d bytes, %v; want the whole %d", len(o.res), o.err, len(big))
		}
	})

	t.Run("gone", func(t *testing.T) {
		t.Parallel()
		s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
		s.publish(t, events.Event{Kind: events.Succeeded, Attempt: 1, Result: big})
		if err := s.insp.DeleteTask(s.queue, s.id); err != nil {
			t.Fatal(err)
		}
		res, err := s.c.WaitResult(context.Background(), s.queue, s.id)
		if !errors.Is(err, events.ErrResultTruncated) || !bytes.Equal(res, big[:events.MaxResultBytes]) {
			t.Fatalf("WaitResult = %d bytes, %v; want the first %d and ErrResultTruncated", len(res), err, events.MaxResultBytes)
		}
	})
}
