package events_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/events"
)

// TestPublisherPacks checks that the events of a queue written in one
// batch share stream entries, in order, up to an entry's limits, with IDs
// "<entry id>:<index>", and that the readers give them back.
func TestPublisherPacks(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	ctx := context.Background()
	at := time.UnixMilli(1_765_000_000_123).UTC()
	var batch, wantQ, wantR []events.Event
	for i := range 26 {
		e := events.Event{Kind: events.Succeeded, Queue: "q", TaskID: "t" + strconv.Itoa(i), Type: "x", Time: at, Attempt: 1}
		if i%10 == 3 {
			e.Queue = "r"
			wantR = append(wantR, e)
		} else {
			wantQ = append(wantQ, e)
		}
		batch = append(batch, e)
	}
	if err := events.WriteBatch(p, batch); err != nil {
		t.Fatal(err)
	}
	got, entries, err := events.ReadAll(ctx, rdb, "q")
	if err != nil {
		t.Fatal(err)
	}
	if entries != 1 {
		t.Errorf("queue q: %d entries, want 1 (%d events)", entries, len(wantQ))
	}
	if diff := cmp.Diff(wantQ, got, ignoreIDs); diff != "" {
		t.Errorf("queue q (-want +got):\n%s", diff)
	}
	for i, e := range got {
		if want := fmt.Sprintf(":%d", i); !strings.HasSuffix(e.ID, want) || events.CheckID(e.ID) != nil {
			t.Fatalf("event %d: ID %q, want the entry's id and %q", i, e.ID, want)
		}
		if !e.Time.Equal(at) {
			t.Fatalf("event %d: Time %v, want the published %v", i, e.Time, at)
		}
	}
	gotR := read(t, rdb, "r")
	if diff := cmp.Diff(wantR, gotR, ignoreIDs); diff != "" {
		t.Errorf("queue r (-want +got):\n%s", diff)
	}

	// Over an entry's limits: more entries, in order, each within them
	// but for a single event bigger than they allow.
	var many, tiny []events.Event
	for i := range 3*events.MaxPack + 1 {
		many = append(many, events.Event{Kind: events.Started, Queue: "many", TaskID: "task-" + strconv.Itoa(i), Attempt: 1})
		tiny = append(tiny, events.Event{Kind: events.Started, Queue: "tiny", TaskID: strconv.Itoa(i % 10)})
	}
	long := bytes.Repeat([]byte("r"), events.PackBytes/2-100)
	var big []events.Event
	for i := range 5 {
		big = append(big, events.Event{Kind: events.Succeeded, Queue: "big", TaskID: strconv.Itoa(i), Attempt: 1, Result: long})
	}
	huge := []events.Event{{Kind: events.Succeeded, Queue: "huge", TaskID: "1", Attempt: 1, Result: bytes.Repeat([]byte("h"), events.MaxResultBytes)}}
	for _, tt := range []struct {
		queue      string
		batch      []events.Event
		minEntries int
	}{
		{"many", many, 1 + len(many)*20/events.PackBytes}, // 20 bytes an event at least
		{"tiny", tiny, 4}, // 64 events an entry at most
		{"big", big, 3},   // two results an entry
		{"huge", huge, 1},
	} {
		if err := events.WriteBatch(p, tt.batch); err != nil {
			t.Fatal(err)
		}
		got := read(t, rdb, tt.queue)
		if diff := cmp.Diff(tt.batch, got, ignoreIDs); diff != "" {
			t.Errorf("queue %s (-want +got):\n%s", tt.queue, diff)
		}
		counts, sizes, err := events.Entries(ctx, rdb, tt.queue)
		if err != nil {
			t.Fatal(err)
		}
		if len(counts) < tt.minEntries {
			t.Errorf("queue %s: %d events in %d entries, want %d at least", tt.queue, len(tt.batch), len(counts), tt.minEntries)
		}
		for i := range counts {
			if counts[i] > events.MaxPack || counts[i] > 1 && sizes[i] > events.PackBytes+100 {
				t.Errorf("queue %s: entry %d holds %d events in %d bytes, over the limits (%d, %d)",
					tt.queue, i, counts[i], sizes[i], events.MaxPack, events.PackBytes)
			}
			if i < len(counts)-1 && counts[i] < events.MaxPack && sizes[i] < events.PackBytes/2 {
				t.Errorf("queue %s: entry %d holds %d events in %d bytes: not full", tt.queue, i, counts[i], sizes[i])
			}
		}
	}
}

// TestWatchResumesInEntry checks that Watch after an event's ID yields the
// events after it, those of its own entry included, and after an entry's
// id (a position) the events of the entries after it.
func TestWatchResumesInEntry(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	c := events.NewClient(rdb, events.ClientOptions{})
	first := []events.Event{
		{Kind: events.Started, Queue: "q", TaskID: "a", Attempt: 1},
		{Kind: events.Started, Queue: "q", TaskID: "b", Attempt: 1},
		{Kind: events.Progress, Queue: "q", TaskID: "a", Attempt: 1, Percent: 50},
		{Kind: events.Succeeded, Queue: "q", TaskID: "b", Attempt: 1},
	}
	second := []events.Event{
		{Kind: events.Succeeded, Queue: "q", TaskID: "a", Attempt: 1},
	}
	// Live: the watcher reads the entries as they are written.
	ctx := context.Background()
	after, err := c.LastID(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	live := make(chan []events.Event, 1)
	go func() { live <- watch(t, c, "q", "a", after, 3, 5*time.Second) }()
	time.Sleep(50 * time.Millisecond)
	for _, b := range [][]events.Event{first, second} {
		if err := events.WriteBatch(p, b); err != nil {
			t.Fatal(err)
		}
	}
	all := []events.Kind{events.Started, events.Progress, events.Succeeded}
	if diff := cmp.Diff(all, kinds(<-live)); diff != "" {
		t.Errorf("live (-want +got):\n%s", diff)
	}
	es := watch(t, c, "q", "a", "0", 3, 5*time.Second)
	if diff := cmp.Diff(all, kinds(es)); diff != "" {
		t.Fatalf("from the start (-want +got):\n%s", diff)
	}
	entry, _, _ := strings.Cut(es[0].ID, ":")
	for _, tt := range []struct {
		after string
		want  []events.Kind
	}{
		{es[0].ID, all[1:]}, // in the entry
		{es[1].ID, all[2:]}, // the entry's last event of a
		{entry, all[2:]},    // a position: after the whole entry
	} {
		if diff := cmp.Diff(tt.want, kinds(watch(t, c, "q", "a", tt.after, len(tt.want), 5*time.Second))); diff != "" {
			t.Errorf("after %s (-want +got):\n%s", tt.after, diff)
		}
	}
	// Every task: b's events come from the first entry too.
	if diff := cmp.Diff([]string{"a", "b", "a", "b", "a"}, taskIDs(watch(t, c, "q", "", "0", 5, 5*time.Second))); diff != "" {
		t.Errorf("every task (-want +got):\n%s", diff)
	}
	for e, err := range c.Watch(ctx, "q", "a", "1-0:x") {
		if err == nil || e.ID != "" || !strings.Contains(err.Error(), `"1-0:x"`) {
			t.Errorf("Watch after a bad id: %v, %v; want an error naming it", e, err)
		}
		break
	}
}

// taskIDs returns the task ids of es.
func taskIDs(es []events.Event) []string {
	var ids []string
	for _, e := range es {
		ids = append(ids, e.TaskID)
	}
	return ids
}

// TestPublisherCoalescesProgress checks that of the Progress events of an
// attempt written in one batch only the last one is written, and that
// Progress events fill half the buffer at most.
func TestPublisherCoalescesProgress(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	batch := []events.Event{
		{Kind: events.Progress, Queue: "q", TaskID: "a", Attempt: 1, Percent: 10},
		{Kind: events.Progress, Queue: "q", TaskID: "b", Attempt: 1, Percent: 10},
		{Kind: events.Progress, Queue: "q", TaskID: "a", Attempt: 1, Percent: 20},
		{Kind: events.Failed, Queue: "q", TaskID: "a", Attempt: 1, Error: "boom"},
		{Kind: events.Progress, Queue: "q", TaskID: "a", Attempt: 2, Percent: 5},
		{Kind: events.Progress, Queue: "q", TaskID: "a", Attempt: 1, Percent: 30}, // late, of attempt 1
		{Kind: events.Progress, Queue: "r", TaskID: "a", Attempt: 1, Percent: 40}, // another queue
	}
	if err := events.WriteBatch(p, batch); err != nil {
		t.Fatal(err)
	}
	want := []events.Event{batch[1], batch[3], batch[4], batch[5]}
	if diff := cmp.Diff(want, read(t, rdb, "q"), ignoreIDs); diff != "" {
		t.Errorf("queue q (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(batch[6:], read(t, rdb, "r"), ignoreIDs); diff != "" {
		t.Errorf("queue r (-want +got):\n%s", diff)
	}

	t.Run("buffer", func(t *testing.T) {
		t.Parallel()
		// A Redis that does not answer: the goroutine waits on its first
		// write, and the buffer fills.
		frozen := redis.NewClient(&redis.Options{Addr: frozenRedis(t), Protocol: 2, DisableIdentity: true,
			ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxRetries: -1})
		t.Cleanup(func() { frozen.Close() })
		const buffer = 8
		p := events.NewPublisher(frozen, events.PublisherOptions{Buffer: buffer})
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			defer cancel()
			_ = p.CloseContext(ctx)
		}()
		p.Publish(events.Event{Kind: events.Started, Queue: "q", TaskID: "first"})
		for deadline := time.Now().Add(5 * time.Second); p.Dropped() == 0; {
			if time.Now().After(deadline) {
				t.Fatal("no Progress event dropped")
			}
			p.Publish(events.Event{Kind: events.Progress, Queue: "q", TaskID: "a", Attempt: 1})
			time.Sleep(time.Millisecond)
		}
		// The goroutine may take from the buffer while it has not
		// blocked yet, never after: half the buffer is left.
		dropped := p.Dropped()
		for i := range buffer/2 - 1 {
			p.Publish(events.Event{Kind: events.Succeeded, Queue: "q", TaskID: strconv.Itoa(i), Attempt: 1})
		}
		if d := p.Dropped(); d != dropped {
			t.Errorf("%d final events dropped with Progress ones filling half the buffer, want none", d-dropped)
		}
	})
}

// TestLastIDHasNewer checks LastID's position and HasNewer after
// positions and event IDs.
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
		{Kind: events.Enqueued, Queue: q, TaskID: "a"}, // late
	}); err != nil {
		t.Fatal(err)
	}
	es := read(t, rdb, q)
	if len(es) != 3 {
		t.Fatalf("%d events, want 3", len(es))
	}
	entry, _, _ := strings.Cut(es[0].ID, ":")
	if last, err = c.LastID(ctx, q); err != nil || last != entry {
		t.Fatalf("LastID = %q, %v; want the entry's id %q", last, err, entry)
	}
	// Other tasks' entries after, more than one read's worth.
	for i := range 300 {
		p.Publish(events.Event{Kind: events.Progress, Queue: q, TaskID: "other-" + strconv.Itoa(i)})
		if err := p.Flush(ctx); err != nil { // an entry each
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		id, after string
		want      bool
	}{
		{"a", "0", true},
		{"a", es[0].ID, true},  // the end, in the same entry
		{"a", es[1].ID, false}, // only the late Enqueued event after
		{"a", entry, false},
		{"nope", "0", false},
		{"other-299", es[1].ID, true},
	} {
		got, err := c.HasNewer(ctx, q, tt.id, tt.after)
		if err != nil || got != tt.want {
			t.Errorf("HasNewer(%q after %q) = %v, %v; want %v", tt.id, tt.after, got, err, tt.want)
		}
	}
	if _, err := c.HasNewer(ctx, q, "a", "x-1"); err == nil || !strings.Contains(err.Error(), `"x-1"`) {
		t.Errorf("HasNewer after a bad id: %v, want an error naming it", err)
	}
}

func TestCheckID(t *testing.T) {
	for _, id := range []string{"0", "0-0", "1733571234567-0", "1733571234567-12:0", "1-2:63"} {
		if err := events.CheckID(id); err != nil {
			t.Errorf("CheckID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", "x", "1-x", "1-2:", "1-2:-1", "1-2:01", "1-2:x", "1-2:3:4", "-1", "1-2:99999999"} {
		if err := events.CheckID(id); err == nil || !strings.Contains(err.Error(), strconv.Quote(id)) {
			t.Errorf("CheckID(%q) = %v, want an error naming it", id, err)
		}
	}
}

// frozenRedis returns the address of a server that accepts connections
// and never answers, as a frozen Redis (SIGSTOP) does.
func frozenRedis(t *testing.T) string {
	addr, _ := countingFrozenRedis(t)
	return addr
}

// countingFrozenRedis is frozenRedis, and counts the connections made to
// it: go-redis drops a connection whose command timed out, so each write
// after a failed one comes on a new connection.
func countingFrozenRedis(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
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
			conns.Add(1)
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
	return l.Addr().String(), &conns
}

// TestPublisherCloseFrozenRedis checks that Close does not write batch
// after batch, each after its own timeout, to a Redis that does not
// answer, and that CloseContext gives up when its ctx ends.
func TestPublisherCloseFrozenRedis(t *testing.T) {
	t.Parallel()
	const readTimeout = 100 * time.Millisecond
	client := func() (*redis.Client, *atomic.Int32) {
		addr, conns := countingFrozenRedis(t)
		rdb := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true,
			ReadTimeout: readTimeout, WriteTimeout: readTimeout, MaxRetries: -1})
		t.Cleanup(func() { rdb.Close() })
		return rdb, conns
	}
	const n = 5000 // batches

	t.Run("after a failed write", func(t *testing.T) {
		t.Parallel()
		rdb, conns := client()
		p := events.NewPublisher(rdb, events.PublisherOptions{})
		p.Publish(events.Event{Kind: events.Started, Queue: "q", TaskID: "first"})
		if err := p.Flush(context.Background()); err == nil {
			t.Fatal("Flush to a frozen Redis = nil")
		}
		for i := range n {
			p.Publish(events.Event{Kind: events.Failed, Queue: "q", TaskID: strconv.Itoa(i)})
		}
		before := conns.Load()
		if err := p.Close(); err == nil {
			t.Error("Close = nil, want an error")
		}
		waitDropped(t, p, n+1)
		// At most one write begun as Close was called: not one per
		// batch left, each after its timeout.
		if c := conns.Load() - before; c > 1 {
			t.Errorf("%d writes to the frozen Redis after Close, want 1 at most", c)
		}
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
		// Close returns without waiting for the write under way, which
		// only its minute's timeout (or rdb.Close below) would end.
		closed := make(chan error, 1)
		go func() { closed <- p.Close() }()
		select {
		case err := <-closed:
			if err == nil {
				t.Error("Close = nil, want an error")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Close waits for the unanswered write")
		}
		rdb.Close() // ends the write under way
		waitDropped(t, p, n)
	})

	t.Run("CloseContext", func(t *testing.T) {
		t.Parallel()
		rdb, _ := client()
		p := events.NewPublisher(rdb, events.PublisherOptions{})
		for i := range n {
			p.Publish(events.Event{Kind: events.Failed, Queue: "q", TaskID: strconv.Itoa(i)})
		}
		// Its ctx ends before the first write's timeout: it gives up.
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout/2)
		defer cancel()
		err := p.CloseContext(ctx)
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
