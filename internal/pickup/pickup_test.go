package pickup_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/pickup"
	"github.com/forgeq/forgeq/internal/redistest"
	"github.com/forgeq/forgeq/internal/redisurl"
)

// testDB is the database of REDIS_TEST_URL these tests use.
const testDB = 14

// liveness bounds how long a test waits for something that, with the
// pickup working, happens at once.
const liveness = 20 * time.Second

var defaultQueues = map[string]int{"critical": 6, "default": 3, "low": 1}

// concurrency is the test servers' asynq Concurrency.
const concurrency = 5

// target is a Redis to run the tests on: client builds a new client of it.
type target struct {
	name    string
	client  func(pool int) redis.UniversalClient
	cluster bool
}

func targets(t *testing.T) []target {
	mr := miniredis.RunT(t)
	ts := []target{{name: "miniredis", client: func(pool int) redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: pool})
	}}}
	url := redistest.URL(t, testDB)
	ts = append(ts, target{name: "redis", client: func(pool int) redis.UniversalClient {
		o, err := redis.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		o.PoolSize = pool
		return redis.NewClient(o)
	}})
	return ts
}

// flush empties the target's database (not on the shared cluster).
func flush(t *testing.T, tg target) {
	t.Helper()
	c := tg.client(1)
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// server is an asynq server fetching through a Pickup.
type server struct {
	rdb     redis.UniversalClient // the server's client, with the hook
	counted *counter              // commands that left the hook for Redis
	waits   *counter              // commands on the pickup's own client
	pk      *pickup.Pickup
	srv     *asynq.Server
}

// counter counts the commands a client sends, by name.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.n[cmd.Name()]++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *counter) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// start runs an asynq server on tg through a Pickup with block as its
// wait, configured as the worker configures it.
func start(t *testing.T, tg target, queues map[string]int, block time.Duration, h asynq.Handler) *server {
	t.Helper()
	s := &server{rdb: tg.client(20), counted: &counter{n: map[string]int{}}, waits: &counter{n: map[string]int{}}}
	conn := tg.client(len(queues) + 2)
	conn.AddHook(s.waits)
	s.pk = pickup.New(pickup.Options{Queues: queues, Conn: conn, Block: block, Concurrency: concurrency})
	s.rdb.AddHook(s.pk.Hook())
	s.rdb.AddHook(s.counted) // after the pickup's: sees what it lets through
	s.srv = asynq.NewServerFromRedisClient(s.rdb, asynq.Config{
		Queues:                   queues,
		Concurrency:              concurrency,
		TaskCheckInterval:        pickup.TaskCheckInterval,
		DelayedTaskCheckInterval: time.Second,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return time.Second },
		LogLevel:                 asynq.FatalLevel,
	})
	if err := s.srv.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop(t)
		s.rdb.Close()
	})
	return s
}

// stop closes the pickup and shuts the server down, failing the test if
// the shutdown waits for a fetch.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.pk.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		t.Errorf("Close: %v", err)
	}
	done := make(chan struct{})
	go func() { s.srv.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(liveness):
		t.Fatalf("Server.Shutdown still waiting %v after Pickup.Close", liveness)
	}
}

// recorder records the payloads of the tasks it handles.
type recorder struct {
	mu   sync.Mutex
	seen map[string]int
	ch   chan string
	fail map[string]int // payload -> attempts that fail before it succeeds
}

func newRecorder() *recorder {
	return &recorder{seen: map[string]int{}, ch: make(chan string, 10000), fail: map[string]int{}}
}

func (r *recorder) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p := string(t.Payload())
	r.mu.Lock()
	r.seen[p]++
	n := r.seen[p]
	failing := n <= r.fail[p]
	r.mu.Unlock()
	if failing {
		if _, err := t.ResultWriter().Write([]byte(p + " result")); err != nil {
			return err
		}
		return fmt.Errorf("attempt %d of %s fails", n, p)
	}
	if _, err := t.ResultWriter().Write([]byte("result of " + p)); err != nil {
		return err
	}
	r.ch <- p
	return nil
}

// expect waits for the payloads want to be handled successfully.
func (r *recorder) expect(t *testing.T, want ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, w := range want {
		left[w] = true
	}
	deadline := time.After(liveness)
	for len(left) > 0 {
		select {
		case p := <-r.ch:
			delete(left, p)
		case <-deadline:
			t.Fatalf("tasks %v not handled within %v", left, liveness)
		}
	}
}

// TestEveryProducerWakesTheWorker checks that an idle worker picks up
// tasks however they become pending: enqueued to any of its queues, a
// delayed task coming due, a retry; that waits ended by a push picked
// them up; and that while idle it does not poll.
func TestEveryProducerWakesTheWorker(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			flush(t, tg)
			rec := newRecorder()
			rec.fail["retried"] = 1
			s := start(t, tg, defaultQueues, time.Minute, rec)
			cl := asynq.NewClientFromRedisClient(tg.client(2))
			defer cl.Close()

			time.Sleep(200 * time.Millisecond) // let the server go idle first
			for _, q := range []string{"low", "default", "critical"} {
				if _, err := cl.Enqueue(asynq.NewTask("t", []byte("on "+q)), asynq.Queue(q)); err != nil {
					t.Fatal(err)
				}
				rec.expect(t, "on "+q)
			}
			if _, err := cl.Enqueue(asynq.NewTask("t", []byte("delayed")), asynq.ProcessIn(time.Second)); err != nil {
				t.Fatal(err)
			}
			rec.expect(t, "delayed")
			if _, err := cl.Enqueue(asynq.NewTask("t", []byte("retried")), asynq.MaxRetry(2)); err != nil {
				t.Fatal(err)
			}
			rec.expect(t, "retried")
			if st := s.pk.Stats(); st.Wakes == 0 {
				t.Errorf("Stats = %+v: no wait ended by a push", st)
			}
			idleFetches(t, s)
		})
	}
}

// idleFetches checks that an idle server does not poll: over a second
// without tasks it fetches at most once (when a wait it was in times out,
// which with a minute's wait it does not).
func idleFetches(t *testing.T, s *server) {
	t.Helper()
	before := s.pk.Stats().Fetches
	time.Sleep(time.Second)
	if n := s.pk.Stats().Fetches - before; n > 1 {
		t.Errorf("%d fetches in a second while idle: the server polls", n)
	}
	if n := s.counted.get("evalsha") + s.counted.get("eval"); n > 0 && s.pk.Stats().Fetches == 0 {
		t.Errorf("asynq's own dequeue reached Redis %d times", n)
	}
}

// TestOneFetchPerTask checks that a worker serving three queues spends one
// dequeue round trip per task, where asynq spends one per queue it tries,
// and that asynq's own dequeue script no longer reaches Redis.
func TestOneFetchPerTask(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			flush(t, tg)
			const n = 300
			cl := asynq.NewClientFromRedisClient(tg.client(2))
			defer cl.Close()
			var want []string
			for i := range n {
				p := fmt.Sprintf("task %d", i)
				want = append(want, p)
				if _, err := cl.Enqueue(asynq.NewTask("t", []byte(p)), asynq.Queue("low")); err != nil {
					t.Fatal(err)
				}
			}
			rec := newRecorder()
			s := start(t, tg, defaultQueues, time.Minute, rec)
			rec.expect(t, want...)
			// The last handlers' done scripts may still be on their way.
			for deadline := time.Now().Add(liveness); s.pk.Stats().Finished < n && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			st := s.pk.Stats()
			// n fetches that found a task, plus the ones that found none:
			// at most one per wait and one at the start.
			if st.Fetches > n+st.Waits+1 {
				t.Errorf("%d fetches for %d tasks (%d waits); want about one per task", st.Fetches, n, st.Waits)
			}
			// Both asynq's dequeue (replaced by the pickup's) and its done
			// script (sent in the pickup's pipelines) leave the server's
			// client alone.
			if got := s.counted.get("evalsha") + s.counted.get("eval"); got > n/10 {
				t.Errorf("%d scripts reached Redis through the server's client for %d tasks, want almost none", got, n)
			}
			if st.Finished < n || st.Pipelines == 0 || st.Pipelines > st.Finished {
				t.Errorf("Stats = %+v: want the %d done scripts sent in shared pipelines", st, n)
			}
		})
	}
}

// TestResultWrites checks that a result is kept for a task with retention,
// that the write of a task without retention, which asynq deletes when it
// succeeds, is not sent, and that a failed task without retention keeps
// the result it wrote.
func TestResultWrites(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			flush(t, tg)
			rec := newRecorder()
			s := start(t, tg, map[string]int{"default": 1}, time.Minute, rec)
			cl := asynq.NewClientFromRedisClient(tg.client(2))
			defer cl.Close()
			kept, err := cl.Enqueue(asynq.NewTask("t", []byte("kept")), asynq.Retention(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			rec.expect(t, "kept")
			if _, err := cl.Enqueue(asynq.NewTask("t", []byte("dropped"))); err != nil {
				t.Fatal(err)
			}
			rec.expect(t, "dropped")

			insp := asynq.NewInspectorFromRedisClient(tg.client(2))
			if got := string(waitState(t, insp, kept.ID, asynq.TaskStateCompleted).Result); got != "result of kept" {
				t.Errorf("result of the kept task = %q", got)
			}
			if got := s.counted.get("hset"); got != 1 {
				t.Errorf("%d result writes sent, want 1 (the kept task's)", got)
			}
			if st := s.pk.Stats(); st.SkippedWrite != 1 {
				t.Errorf("SkippedWrite = %d, want 1", st.SkippedWrite)
			}

			// A task without retention that writes a result and fails
			// keeps its hash, so the result held back is written.
			rec.mu.Lock()
			rec.fail["partial"] = 1
			rec.mu.Unlock()
			failed, err := cl.Enqueue(asynq.NewTask("t", []byte("partial")), asynq.MaxRetry(0))
			if err != nil {
				t.Fatal(err)
			}
			if got := string(waitState(t, insp, failed.ID, asynq.TaskStateArchived).Result); got != "partial result" {
				t.Errorf("result of the failed task = %q, want the one it wrote", got)
			}
		})
	}
}

// waitState waits for task id of queue default to reach state and returns
// its info.
func waitState(t *testing.T, insp *asynq.Inspector, id string, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	for deadline := time.Now().Add(liveness); ; time.Sleep(20 * time.Millisecond) {
		info, err := insp.GetTaskInfo("default", id)
		if err == nil && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %v within %v: %v %v", id, state, liveness, info, err)
		}
	}
}

// TestPausedQueue checks that a paused queue holding tasks is skipped
// without the waits spinning on it, and served once resumed.
func TestPausedQueue(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			flush(t, tg)
			c := tg.client(2)
			defer c.Close()
			cl := asynq.NewClientFromRedisClient(c)
			insp := asynq.NewInspectorFromRedisClient(c)
			if _, err := cl.Enqueue(asynq.NewTask("t", []byte("held")), asynq.Queue("critical")); err != nil {
				t.Fatal(err)
			}
			if err := insp.PauseQueue("critical"); err != nil {
				t.Fatal(err)
			}
			rec := newRecorder()
			s := start(t, tg, defaultQueues, time.Minute, rec)
			if _, err := cl.Enqueue(asynq.NewTask("t", []byte("free")), asynq.Queue("default")); err != nil {
				t.Fatal(err)
			}
			rec.expect(t, "free")
			before := s.waits.get("blmove")
			time.Sleep(2 * time.Second)
			// A wait on the paused, non-empty list would return at once:
			// thousands of BLMOVEs in two seconds.
			if n := s.waits.get("blmove") - before; n > 20 {
				t.Errorf("%d BLMOVEs in 2s while idle with a paused queue holding a task: the waits spin", n)
			}
			rec.mu.Lock()
			held := rec.seen["held"]
			rec.mu.Unlock()
			if held != 0 {
				t.Fatal("a task of the paused queue ran")
			}
			if err := insp.UnpauseQueue("critical"); err != nil {
				t.Fatal(err)
			}
			rec.expect(t, "held")
		})
	}
}

// TestCloseReleasesTheFetch checks that Close ends a wait at once, so that
// Server.Shutdown is not held by it (the wait here would last a minute).
func TestCloseReleasesTheFetch(t *testing.T) {
	tg := targets(t)[1]
	flush(t, tg)
	s := start(t, tg, defaultQueues, time.Minute, newRecorder())
	deadline := time.Now().Add(liveness)
	for s.pk.Stats().Waits == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server never waited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.stop(t) // fails the test if Shutdown is held
}

// TestCluster runs the pickup on a Redis Cluster, where asynq's calls per
// queue go through and only the wait applies.
func TestCluster(t *testing.T) {
	p, err := redisurl.Parse(redistest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	prefix := redistest.Prefix(t)
	queues := map[string]int{prefix + "a": 2, prefix + "b": 1}
	tg := target{name: "cluster", cluster: true, client: func(pool int) redis.UniversalClient {
		return p.NewClient(redisurl.Settings{PoolSize: pool})
	}}
	rec := newRecorder()
	s := start(t, tg, queues, time.Minute, rec)
	cl := asynq.NewClientFromRedisClient(tg.client(2))
	defer cl.Close()
	time.Sleep(200 * time.Millisecond)
	for q := range queues {
		if _, err := cl.Enqueue(asynq.NewTask("t", []byte("on "+q)), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
		rec.expect(t, "on "+q)
	}
	if st := s.pk.Stats(); st.Wakes == 0 {
		t.Errorf("Stats = %+v: no wait ended by a push", st)
	}
	t.Cleanup(func() {
		insp := asynq.NewInspectorFromRedisClient(tg.client(2))
		for q := range queues {
			_ = insp.DeleteQueue(q, true)
		}
	})
}

// TestPrefetchedTasksRequeuedAtClose checks that tasks a fetch took ahead
// for free slots are all handled, and that those still waiting for asynq
// when the pickup closes go back to their queue: nothing is lost or left
// active.
func TestPrefetchedTasksRequeuedAtClose(t *testing.T) {
	tg := targets(t)[1]
	flush(t, tg)
	c := tg.client(2)
	defer c.Close()
	cl := asynq.NewClientFromRedisClient(c)
	const n = 40
	for i := range n {
		if _, err := cl.Enqueue(asynq.NewTask("t", []byte(fmt.Sprint("task ", i)))); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	var mu sync.Mutex
	started := 0
	s := start(t, tg, map[string]int{"default": 1}, time.Minute, asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		mu.Lock()
		started++
		mu.Unlock()
		<-release
		return nil
	}))
	deadline := time.Now().Add(liveness)
	for {
		mu.Lock()
		k := started
		mu.Unlock()
		if k == concurrency {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d handlers started, want %d", k, concurrency)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.pk.Stats(); st.Prefetched == 0 {
		t.Errorf("Stats = %+v: no task handed over without a round trip", st)
	}
	close(release)
	s.stop(t)
	insp := asynq.NewInspectorFromRedisClient(c)
	q, err := insp.GetQueueInfo("default")
	if err != nil {
		t.Fatal(err)
	}
	if q.Active != 0 || q.Pending+q.Processed != n {
		t.Errorf("queue after shutdown: %d pending, %d active, %d processed; want %d pending or processed, none active",
			q.Pending, q.Active, q.Processed, n)
	}
}
