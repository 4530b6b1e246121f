package pickup

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// batcher sends the scripts that finish tasks (asynq's done, complete,
// retry and archive), which the server's handler goroutines run one each,
// together: calls made while a pipeline is on the wire leave in the next
// one, and a lone call leaves at once. Each script is still atomic and
// answers its own caller; only the round trips are shared.
type batcher struct {
	conn redis.UniversalClient

	mu      sync.Mutex
	queue   []*batched
	stopped bool

	kick chan struct{} // buffered 1: the queue has calls
	quit chan struct{}
	wg   sync.WaitGroup

	pipelines, calls int64 // under mu
}

// batched is one caller's commands and the channel closed once they have
// their answers.
type batched struct {
	cmds []redis.Cmder
	done chan struct{}
}

func newBatcher(conn redis.UniversalClient) *batcher {
	b := &batcher{conn: conn, kick: make(chan struct{}, 1), quit: make(chan struct{})}
	b.wg.Add(1)
	go b.run()
	return b
}

// do sends cmds, in order, in the next pipeline and waits for their
// answers; err is the last one's. It reports sent false when the batcher
// has stopped: the caller sends them itself.
func (b *batcher) do(cmds ...redis.Cmder) (sent bool, err error) {
	c := &batched{cmds: cmds, done: make(chan struct{})}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return false, nil
	}
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	// The pipeline fills cmd in; the caller may read it only after. The
	// wait is bounded by the connection's socket timeouts.
	<-c.done
	return true, cmds[len(cmds)-1].Err()
}

func (b *batcher) run() {
	defer b.wg.Done()
	for {
		select {
		case <-b.kick:
			b.flush()
		case <-b.quit:
			b.flush() // what was queued before stop
			return
		}
	}
}

// flush sends every queued call in one pipeline, until none is left.
func (b *batcher) flush() {
	for {
		b.mu.Lock()
		batch := b.queue
		b.queue = nil
		if len(batch) > 0 {
			b.pipelines++
			b.calls += int64(len(batch)) // callers: one script each
		}
		b.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		pipe := b.conn.Pipeline()
		ctx := context.Background()
		for _, c := range batch {
			for _, cmd := range c.cmds {
				_ = pipe.Process(ctx, cmd)
			}
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		for _, c := range batch {
			close(c.done)
		}
	}
}

// stop sends what is queued and makes later calls go their own way.
func (b *batcher) stop() {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	b.stopped = true
	b.mu.Unlock()
	close(b.quit)
	b.wg.Wait()
}

// stats returns the pipelines sent and the calls they carried.
func (b *batcher) stats() (pipelines, calls int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pipelines, b.calls
}

// workflowKeyPrefix begins the keys of one workflow (workflow.KeyPrefix
// and its hash tag).
const workflowKeyPrefix = "forgeq:wf:{"

// finishesTask reports whether a script's keys are those of asynq's
// scripts that finish a running task (its queue's active list and lease
// set, and its task key), or of forgeq's workflow scripts that the
// handler goroutines run as a step starts and ends (their keys all begin
// "forgeq:wf:{").
func finishesTask(keys []any) bool {
	if len(keys) > 0 && strings.HasPrefix(argString(keys[0]), workflowKeyPrefix) {
		return true
	}
	var active, lease, task bool
	for _, k := range keys {
		s := argString(k)
		if !strings.HasPrefix(s, "asynq:{") {
			continue
		}
		switch {
		case strings.HasSuffix(s, "}:active"):
			active = true
		case strings.HasSuffix(s, "}:lease"):
			lease = true
		case strings.Contains(s, "}:t:"):
			task = true
		}
	}
	return active && lease && task
}
