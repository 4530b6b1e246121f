package events_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/redistest"
)

// watch collects the events Watch yields until n have come or timeout
// passes.
func watch(tb testing.TB, c *events.Client, queue, taskID, after string, n int, timeout time.Duration) []events.Event {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got []events.Event
	for e, err := range c.Watch(ctx, queue, taskID, after) {
		if err != nil {
			tb.Fatalf("Watch after %d events: %v", len(got), err)
		}
		got = append(got, e)
		if len(got) == n {
			break
		}
	}
	return got
}

// kinds returns the kinds of es.
func kinds(es []events.Event) []events.Kind {
	out := make([]events.Kind, len(es))
	for i, e := range es {
		out[i] = e.Kind
	}
	return out
}

func TestWatch(t *testing.T) {
	t.Parallel()
	rdb, _ := miniRedis(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	c := events.NewClient(rdb, events.ClientOptions{})

	p.Publish(events.Event{Kind: events.Enqueued, Queue: "q", TaskID: "old"})
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	// From now: the event already there is not yielded. The watcher of
	// every task says when it runs (it has read the stream's end once it
	// yields an event published after it began); then task a's events.
	got := make(chan []events.Event, 1)
	running := make(chan struct{})
	var once sync.Once
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var es []events.Event
		for e, err := range c.Watch(ctx, "q", "", "") {
			if err != nil {
				t.Error(err)
				break
			}
			if e.TaskID == "old" {
				t.Error("Watch from now yielded an older event")
			}
			if e.TaskID == "ping" {
				once.Do(func() { close(running) })
				continue
			}
			es = append(es, e)
			if e.TaskID == "a" && e.Final() {
				break
			}
		}
		got <- es
	}()
	ping := time.NewTicker(10 * time.Millisecond)
	for waiting := true; waiting; {
		p.Publish(events.Event{Kind: events.Progress, Queue: "q", TaskID: "ping"})
		select {
		case <-running:
			waiting = false
		case <-ping.C:
		}
	}
	ping.Stop()
	for _, e := range []events.Event{
		{Kind: events.Started, Queue: "q", TaskID: "a", Attempt: 1},
		{Kind: events.Started, Queue: "q", TaskID: "b", Attempt: 1},
		{Kind: events.Progress, Queue: "q", TaskID: "a", Attempt: 1, Percent: 50},
		{Kind: events.Succeeded, Queue: "q", TaskID: "b", Attempt: 1},
		{Kind: events.Succeeded, Queue: "q", TaskID: "a", Attempt: 1, Result: []byte("ok")},
	} {
		p.Publish(e)
	}
	es := <-got
	// In order per task; across tasks a Started event may come later, just
	// before the next event of its task, when the Publisher wrote both in
	// one entry.
	byTask := map[string][]events.Kind{}
	for _, e := range es {
		byTask[e.TaskID] = append(byTask[e.TaskID], e.Kind)
	}
	want := map[string][]events.Kind{
		"a": {events.Started, events.Progress, events.Succeeded},
		"b": {events.Started, events.Succeeded},
	}
	if diff := cmp.Diff(want, byTask); diff != "" {
		t.Fatalf("kinds by task (-want +got):\n%s", diff)
	}
	for _, e := range es {
		if e.Queue != "q" || e.ID == "" {
			t.Errorf("event %+v: want queue q and an id", e)
		}
	}

	// Task a's alone, from the start of the stream.
	es = watch(t, c, "q", "a", "0", 3, 5*time.Second)
	if diff := cmp.Diff([]events.Kind{events.Started, events.Progress, events.Succeeded}, kinds(es)); diff != "" {
		t.Fatalf("task a's kinds (-want +got):\n%s", diff)
	}

	// Resuming after the progress event yields what followed, and "0"
	// everything the stream holds.
	if diff := cmp.Diff([]events.Kind{events.Succeeded}, kinds(watch(t, c, "q", "a", es[1].ID, 1, 5*time.Second))); diff != "" {
		t.Errorf("resumed (-want +got):\n%s", diff)
	}
	all := watch(t, c, "q", "", "0", 1, 5*time.Second)
	if len(all) != 1 || all[0].TaskID != "old" {
		t.Errorf("from 0: first %+v; want the old one", all)
	}
}

// TestWatchShared checks that many watchers of a queue share one reader
// and each gets its own task's events, and that a slow watcher misses
// nothing.
func TestWatchShared(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	name := "events-shared-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	opts := *rdb.Options()
	opts.ClientName = name
	watching := redis.NewClient(&opts)
	t.Cleanup(func() { watching.Close() })
	q := queueName(t)
	p := newPublisher(t, rdb, events.PublisherOptions{})
	c := events.NewClient(watching, events.ClientOptions{})
	const watchers, each = 20, 50
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The stream's end before any event, so that every watcher starts
	// there however late its iteration begins.
	p.Publish(events.Event{Kind: events.Enqueued, Queue: q, TaskID: "start"})
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	start := rdb.XRevRangeN(ctx, events.StreamKey(q), "+", "-", 1).Val()[0].ID

	done := make(chan error, watchers)
	for w := range watchers {
		id := "task-" + string(rune('a'+w))
		go func() {
			// Progress events written together are coalesced: the
			// watcher sees the last of them, so a rising percent.
			n, prev := 0, -1.0
			for e, err := range c.Watch(ctx, q, id, start) {
				if err != nil {
					done <- err
					return
				}
				if e.TaskID != id || e.Percent <= prev {
					done <- fmt.Errorf("watcher of %s got an unexpected event: %s at %v after %v", id, e.TaskID, e.Percent, prev)
					return
				}
				prev = e.Percent
				if n++; w == 0 && n%10 == 0 {
					time.Sleep(20 * time.Millisecond) // a slow one
				}
				if e.Percent == each-1 {
					done <- nil
					return
				}
			}
		}()
	}
	for i := range each {
		for w := range watchers {
			p.Publish(events.Event{Kind: events.Progress, Queue: q, TaskID: "task-" + string(rune('a'+w)), Percent: float64(i)})
		}
	}
	for range watchers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// One blocking XREAD for all of them.
	n := 0
	for _, line := range strings.Split(rdb.ClientList(ctx).Val(), "\n") {
		if strings.Contains(line, "name="+name+" ") && strings.Contains(line, " flags=b ") {
			n++
		}
	}
	if n > 1 {
		t.Errorf("%d connections blocked in XREAD, want at most 1", n)
	}
}

// waitSetup is what the WaitResult tests share: a real Redis, a queue of
// the test's own with a pending task, a publisher and a Client.
type waitSetup struct {
	rdb   *redis.Client
	queue string
	id    string
	pub   *events.Publisher
	c     *events.Client
	insp  *asynq.Inspector
}

func newWaitSetup(t *testing.T, o events.ClientOptions) waitSetup {
	t.Helper()
	rdb := realRedis(t)
	s := waitSetup{rdb: rdb, queue: queueName(t), pub: newPublisher(t, rdb, events.PublisherOptions{})}
	ac := asynq.NewClientFromRedisClient(rdb)
	info, err := ac.EnqueueContext(context.Background(), asynq.NewTask("x:y", nil), asynq.Queue(s.queue))
	if err != nil {
		t.Fatal(err)
	}
	s.id = info.ID
	s.insp = asynq.NewInspectorFromRedisClient(rdb)
	s.c = events.NewClient(rdb, o)
	return s
}

// publish publishes e for the setup's task and waits until it is written.
func (s waitSetup) publish(t *testing.T, e events.Event) {
	t.Helper()
	e.Queue, e.TaskID = s.queue, s.id
	s.pub.Publish(e)
	if err := s.pub.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waitAsync runs WaitResult in a goroutine.
func (s waitSetup) waitAsync(ctx context.Context) <-chan waitOutcome {
	out := make(chan waitOutcome, 1)
	go func() {
		res, err := s.c.WaitResult(ctx, s.queue, s.id)
		out <- waitOutcome{res, err}
	}()
	return out
}

type waitOutcome struct {
	res []byte
	err error
}

// slow is a CheckInterval no test waits for: the answers they expect come
// from the events.
const slow = time.Hour

func TestWaitResultAlreadyDone(t *testing.T) {
	t.Parallel()

	t.Run("completed, retained", func(t *testing.T) {
		t.Parallel()
		rdb := realRedis(t)
		q := queueName(t)
		srv := runServer(t, rdb, q, func(ctx context.Context, task *asynq.Task) error {
			_, err := task.ResultWriter().Write([]byte("the result"))
			return err
		})
		_ = srv
		ac := asynq.NewClientFromRedisClient(rdb)
		info, err := ac.EnqueueContext(context.Background(), asynq.NewTask("x:y", nil), asynq.Queue(q), asynq.Retention(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		insp := asynq.NewInspectorFromRedisClient(rdb)
		waitState(t, insp, q, info.ID, asynq.TaskStateCompleted)
		c := events.NewClient(rdb, events.ClientOptions{CheckInterval: slow})
		res, err := c.WaitResult(context.Background(), q, info.ID)
		if err != nil || string(res) != "the result" {
			t.Fatalf("WaitResult = %q, %v; want the result", res, err)
		}
	})

	t.Run("archived", func(t *testing.T) {
		t.Parallel()
		s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
		if err := s.insp.ArchiveTask(s.queue, s.id); err != nil {
			t.Fatal(err)
		}
		_, err := s.c.WaitResult(context.Background(), s.queue, s.id)
		var te *events.TaskError
		if !errors.As(err, &te) || te.Kind != events.Archived || te.ID != s.id || te.Queue != s.queue {
			t.Fatalf("WaitResult error = %v, want a TaskError of kind archived", err)
		}
	})

	t.Run("gone, found in the stream", func(t *testing.T) {
		t.Parallel()
		s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
		s.publish(t, events.Event{Kind: events.Started, Attempt: 1})
		s.publish(t, events.Event{Kind: events.Succeeded, Attempt: 1, Result: []byte(`{"n":1}`)})
		for range 300 { // later events of other tasks
			s.pub.Publish(events.Event{Kind: events.Progress, Queue: s.queue, TaskID: "other"})
		}
		s.publish(t, events.Event{Kind: events.Progress}) // a stray one after the end
		// No retention: asynq deletes a completed task.
		if err := s.insp.DeleteTask(s.queue, s.id); err != nil {
			t.Fatal(err)
		}
		res, err := s.c.WaitResult(context.Background(), s.queue, s.id)
		if err != nil || string(res) != `{"n":1}` {
			t.Fatalf("WaitResult = %q, %v; want the result from the stream", res, err)
		}
	})

	t.Run("gone, cancelled in the stream", func(t *testing.T) {
		t.Parallel()
		s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
		s.publish(t, events.Event{Kind: events.Cancelled, Attempt: 2, Error: "cancelled by ops"})
		if err := s.insp.DeleteTask(s.queue, s.id); err != nil {
			t.Fatal(err)
		}
		_, err := s.c.WaitResult(context.Background(), s.queue, s.id)
		want := &events.TaskError{Queue: s.queue, ID: s.id, Kind: events.Cancelled, Err: "cancelled by ops", Attempts: 2}
		var te *events.TaskError
		if !errors.As(err, &te) {
			t.Fatalf("WaitResult error = %v, want a TaskError", err)
		}
		if diff := cmp.Diff(want, te); diff != "" {
			t.Errorf("TaskError (-want +got):\n%s", diff)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		t.Parallel()
		rdb := realRedis(t)
		c := events.NewClient(rdb, events.ClientOptions{CheckInterval: slow})
		for _, give := range [][2]string{{queueName(t), "nope"}, {"", "x"}, {"default", ""}} {
			_, err := c.WaitResult(context.Background(), give[0], give[1])
			if !errors.Is(err, events.ErrNotFound) {
				t.Errorf("WaitResult(%q, %q) error = %v, want ErrNotFound", give[0], give[1], err)
			}
		}
	})
}

func TestWaitResultDoneLater(t *testing.T) {
	t.Parallel()
	s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
	out := s.waitAsync(context.Background())
	time.Sleep(200 * time.Millisecond)
	s.publish(t, events.Event{Kind: events.Started, Attempt: 1})
	s.publish(t, events.Event{Kind: events.Progress, Attempt: 1, Percent: 50})
	select {
	case o := <-out:
		t.Fatalf("WaitResult returned %q, %v before the end", o.res, o.err)
	case <-time.After(100 * time.Millisecond):
	}
	// The task stays pending in asynq and the state is read once an hour
	// (but for the early check, long past): only the event can end it.
	s.publish(t, events.Event{Kind: events.Succeeded, Attempt: 1, Result: []byte("done")})
	select {
	case o := <-out:
		if o.err != nil || string(o.res) != "done" {
			t.Fatalf("WaitResult = %q, %v; want done", o.res, o.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitResult did not return 5s after the succeeded event")
	}
}

func TestWaitResultFailsLater(t *testing.T) {
	t.Parallel()
	s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
	out := s.waitAsync(context.Background())
	time.Sleep(100 * time.Millisecond)
	s.publish(t, events.Event{Kind: events.Failed, Attempt: 3, Error: "boom"})
	s.publish(t, events.Event{Kind: events.Archived, Attempt: 3, Error: "boom"})
	o := <-out
	var te *events.TaskError
	if !errors.As(o.err, &te) || te.Kind != events.Archived || te.Attempts != 3 || te.Err != "boom" {
		t.Fatalf("WaitResult error = %v, want archived after 3 attempts: boom", o.err)
	}
}

func TestWaitResultContext(t *testing.T) {
	t.Parallel()
	s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
	ctx, cancel := context.WithCancel(context.Background())
	out := s.waitAsync(ctx)
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case o := <-out:
		if !errors.Is(o.err, context.Canceled) {
			t.Errorf("WaitResult error = %v, want context.Canceled", o.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitResult did not return after its ctx was cancelled")
	}
}

// TestWaitResultSafetyCheck: with no events at all (a worker with events
// off), WaitResult learns the end from the task's state.
func TestWaitResultSafetyCheck(t *testing.T) {
	t.Parallel()
	s := newWaitSetup(t, events.ClientOptions{CheckInterval: 50 * time.Millisecond})
	out := s.waitAsync(context.Background())
	time.Sleep(100 * time.Millisecond)
	if err := s.insp.ArchiveTask(s.queue, s.id); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-out:
		var te *events.TaskError
		if !errors.As(o.err, &te) || te.Kind != events.Archived {
			t.Errorf("WaitResult error = %v, want archived", o.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitResult did not see the archived state")
	}
}

// TestWaitResultEarlyCheck checks the race EarlyCheck covers: the final
// event is in the stream before WaitResult reads its position, and the
// end reaches asynq after WaitResult's first state read (here the task is
// archived then). With a CheckInterval of an hour, only the early check
// can see it.
func TestWaitResultEarlyCheck(t *testing.T) {
	t.Parallel()
	s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
	s.publish(t, events.Event{Kind: events.Archived, Attempt: 1, Error: "boom"})
	out := s.waitAsync(context.Background())
	time.Sleep(25 * time.Millisecond) // after the first state read, most likely (EarlyCheck is 100 ms)
	if err := s.insp.ArchiveTask(s.queue, s.id); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-out:
		var te *events.TaskError
		if !errors.As(o.err, &te) || te.Kind != events.Archived {
			t.Errorf("WaitResult error = %v, want archived", o.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitResult did not read the state again")
	}
}

// TestWaitResultReconnect kills the connection WaitResult (and a Watch)
// read on, keeps Redis out of their reach while the task reports progress
// and succeeds, then lets them reconnect: they read on from their last
// event and miss nothing.
func TestWaitResultReconnect(t *testing.T) {
	t.Parallel()
	url := redistest.URL(t, realDB)
	realRedis(t) // flushed once
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if down.Load() {
			return nil, errors.New("test: Redis unreachable")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	opts.ClientName = "events-reconnect-" + time.Now().Format("150405.000000")
	watched := redis.NewClient(opts)
	t.Cleanup(func() { watched.Close() })

	s := newWaitSetup(t, events.ClientOptions{CheckInterval: slow})
	s.c = events.NewClient(watched, events.ClientOptions{CheckInterval: slow})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	out := s.waitAsync(ctx)
	watchDone := make(chan []events.Event, 1)
	go func() {
		var es []events.Event
		for e, err := range s.c.Watch(ctx, s.queue, s.id, "") {
			if err != nil {
				break
			}
			es = append(es, e)
			if e.Final() {
				break
			}
		}
		watchDone <- es
	}()
	time.Sleep(200 * time.Millisecond)
	s.publish(t, events.Event{Kind: events.Started, Attempt: 1})

	// Kill the reader's connection; no new one can be made.
	down.Store(true)
	killed := int64(0)
	for _, line := range strings.Split(s.rdb.ClientList(ctx).Val(), "\n") {
		if strings.Contains(line, "name="+opts.ClientName+" ") {
			id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
			n, err := s.rdb.ClientKillByFilter(ctx, "ID", id).Result()
			if err != nil {
				t.Fatal(err)
			}
			killed += n
		}
	}
	if killed == 0 {
		t.Fatal("no connection of the watching client to kill")
	}
	for i := range 5 {
		s.publish(t, events.Event{Kind: events.Progress, Attempt: 1, Percent: float64(20 * (i + 1))})
	}
	s.publish(t, events.Event{Kind: events.Succeeded, Attempt: 1, Result: []byte("after the outage")})
	time.Sleep(300 * time.Millisecond)
	select {
	case o := <-out:
		t.Fatalf("WaitResult returned %q, %v while Redis was unreachable", o.res, o.err)
	default:
	}
	down.Store(false)

	select {
	case o := <-out:
		if o.err != nil || string(o.res) != "after the outage" {
			t.Fatalf("WaitResult = %q, %v; want the result published during the outage", o.res, o.err)
		}
	case <-ctx.Done():
		t.Fatal("WaitResult did not return after Redis came back")
	}
	es := <-watchDone
	want := []events.Kind{events.Started, events.Progress, events.Progress, events.Progress, events.Progress, events.Progress, events.Succeeded}
	if diff := cmp.Diff(want, kinds(es)); diff != "" {
		t.Errorf("Watch across the outage (-want +got):\n%s", diff)
	}
}

// runServer runs an asynq server on queue q with h for the test.
func runServer(t *testing.T, rdb redis.UniversalClient, q string, h asynq.HandlerFunc) *asynq.Server {
	t.Helper()
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Queues: map[string]int{q: 1}, Concurrency: 2, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 10 * time.Millisecond,
	})
	if err := srv.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// waitState waits until the task is in state.
func waitState(t *testing.T, insp *asynq.Inspector, q, id string, state asynq.TaskState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := insp.GetTaskInfo(q, id)
		if err == nil && info.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %v within 10s (%v, %v)", id, state, info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
