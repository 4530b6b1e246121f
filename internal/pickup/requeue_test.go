package pickup

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
)

// emptyRedis returns the options of database 14 of REDIS_TEST_URL, which
// it flushes, and a client of it closed at the end of the test.
func emptyRedis(t *testing.T) (*redis.Options, *redis.Client) {
	t.Helper()
	o, err := redis.ParseURL(redistest.URL(t, 14))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	return o, c
}

// TestCloseRequeuesPrefetched checks that tasks a fetch took ahead and
// never handed to asynq go back to the head of their queue at Close, in
// state pending, with no lease left behind.
func TestCloseRequeuesPrefetched(t *testing.T) {
	o, c := emptyRedis(t)
	ctx := context.Background()
	cl := asynq.NewClientFromRedisClient(c)
	var ids []string
	for range 3 {
		info, err := cl.Enqueue(asynq.NewTask("t", nil))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	p := New(Options{Queues: map[string]int{"default": 1}, Conn: redis.NewClient(o), Concurrency: 10})
	p.fetchMu.Lock()
	first, _, err := p.fetch(ctx, []string{"default"}, "", time.Now().Add(30*time.Second).Unix())
	p.fetchMu.Unlock()
	if err != nil || first == "" || len(p.buffered) != 2 {
		t.Fatalf("fetch = %q, %v with %d buffered; want a task and 2 buffered", first, err, len(p.buffered))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Requeued; got != 2 {
		t.Errorf("Requeued = %d, want 2", got)
	}
	insp := asynq.NewInspectorFromRedisClient(c)
	for _, id := range ids[1:] {
		info, err := insp.GetTaskInfo("default", id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State != asynq.TaskStatePending {
			t.Errorf("task %s is %v after Close, want pending", id, info.State)
		}
		if _, err := c.ZScore(ctx, "asynq:{default}:lease", id).Result(); err != redis.Nil {
			t.Errorf("task %s still has a lease (%v)", id, err)
		}
	}
	// The oldest went first and would be running: it stays active.
	if info, err := insp.GetTaskInfo("default", ids[0]); err != nil || info.State != asynq.TaskStateActive {
		t.Errorf("first task: %v, %v; want active", info, err)
	}
	// The requeued ones are next in line, oldest first.
	next, err := c.LRange(ctx, "asynq:{default}:pending", -2, -1).Result()
	if err != nil || len(next) != 2 || next[1] != ids[1] {
		t.Errorf("pending = %v, %v; want %s at the head", next, err, ids[1])
	}
}

// TestTaskMessageFields checks the field numbers decodeMessage reads
// against messages asynq.Client writes: an asynq upgrade that moves them
// fails here.
func TestTaskMessageFields(t *testing.T) {
	_, c := emptyRedis(t)
	ctx := context.Background()
	cl := asynq.NewClientFromRedisClient(c)
	for _, tc := range []struct {
		queue     string
		retention time.Duration
	}{{"default", 0}, {"reports", 90 * time.Second}} {
		info, err := cl.Enqueue(asynq.NewTask("t", []byte("x")), asynq.Queue(tc.queue), asynq.Retention(tc.retention))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := c.HGet(ctx, "asynq:{"+tc.queue+"}:t:"+info.ID, "msg").Result()
		if err != nil {
			t.Fatal(err)
		}
		m, ok := decodeMessage([]byte(raw))
		if !ok || m.id != info.ID || m.queue != tc.queue || m.retention != int64(tc.retention/time.Second) {
			t.Errorf("decodeMessage = %+v, %v; want id %s, queue %s, retention %d", m, ok, info.ID, tc.queue, int64(tc.retention/time.Second))
		}
	}
}

// TestBatchFollowsWeights checks that a fetch of several tasks draws a
// queue for each, as asynq does for each dequeue, instead of draining the
// queue drawn first: with weights 6 and 1 and both queues full, most of a
// batch comes from the heavier one.
func TestBatchFollowsWeights(t *testing.T) {
	o, c := emptyRedis(t)
	ctx := context.Background()
	cl := asynq.NewClientFromRedisClient(c)
	for range 100 {
		for _, q := range []string{"critical", "low"} {
			if _, err := cl.Enqueue(asynq.NewTask("t", nil), asynq.Queue(q)); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := New(Options{Queues: map[string]int{"critical": 6, "low": 1}, Conn: redis.NewClient(o), Concurrency: maxBatch})
	defer p.Close()
	from := map[string]int{}
	for range 4 {
		p.fetchMu.Lock()
		first, _, err := p.fetch(ctx, p.queues, "", time.Now().Add(30*time.Second).Unix())
		msgs := append([]string{first}, p.buffered...)
		p.buffered = nil
		p.fetchMu.Unlock()
		if err != nil || len(msgs) != maxBatch {
			t.Fatalf("fetch: %d tasks, %v; want %d", len(msgs), err, maxBatch)
		}
		for _, msg := range msgs {
			m, _ := decodeMessage([]byte(msg))
			from[m.queue]++
		}
	}
	// Each of the 64 picks is critical with probability 6/7: about 55.
	if from["critical"] < 40 || from["low"] == 0 {
		t.Errorf("64 tasks taken: %v; want about 6 critical for 1 low", from)
	}
}

// TestSweepDropsAbandonedTasks checks that a task counted as running but
// holding no lease in Redis any more (asynq gave it up without a script
// naming it) stops taking a slot, and that one with a lease keeps it.
func TestSweepDropsAbandonedTasks(t *testing.T) {
	o, c := emptyRedis(t)
	ctx := context.Background()
	if err := c.ZAdd(ctx, "asynq:{default}:lease", redis.Z{Score: float64(time.Now().Add(30 * time.Second).Unix()), Member: "running"}).Err(); err != nil {
		t.Fatal(err)
	}
	p := New(Options{Queues: map[string]int{"default": 1}, Conn: redis.NewClient(o), Concurrency: 4})
	defer p.Close()
	long := time.Now().Add(-time.Minute)
	p.inflight["running"] = handed{queue: "default", at: long}
	p.inflight["abandoned"] = handed{queue: "default", at: long}
	p.inflight["recent"] = handed{queue: "default", at: time.Now()}
	p.fetchMu.Lock()
	p.sweep(ctx)
	p.fetchMu.Unlock()
	if _, ok := p.inflight["abandoned"]; ok {
		t.Error("a task without a lease still takes a slot")
	}
	for _, id := range []string{"running", "recent"} {
		if _, ok := p.inflight[id]; !ok {
			t.Errorf("task %q was dropped", id)
		}
	}
	if got := p.batch(); got != 2 {
		t.Errorf("batch = %d, want 2 (4 slots, 2 busy)", got)
	}
}
