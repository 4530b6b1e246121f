package events

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// A reader runs the one blocking XREAD of a queue's stream that a Client's
// watchers of the queue share, and hands each watcher its events.
type reader struct {
	c     *Client
	queue string

	mu   sync.Mutex // guards what follows
	last string     // the id the next XREAD reads after
	subs map[*sub]struct{}
}

// A sub is a watcher's subscription to its queue's reader.
type sub struct {
	taskID string // "": every task
	wake   chan struct{}

	mu     sync.Mutex // guards what follows
	q      []entry
	lagged bool
}

// entry is the events of one stream entry: one, or two when the entry
// holds a Started event too (see expand).
type entry struct {
	id  string
	evs []Event
}

// take returns the entries delivered since the last take and whether some
// were dropped because the watcher was slow.
func (s *sub) take() ([]entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, lagged := s.q, s.lagged
	s.q, s.lagged = nil, false
	return q, lagged
}

// deliver queues e for s, or marks s lagged when its queue is full.
func (s *sub) deliver(e entry) {
	s.mu.Lock()
	if len(s.q) < subQueue {
		s.q = append(s.q, e)
	} else {
		s.lagged = true
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// subscribe adds a watcher of taskID (every task: "") of queue, starting
// the queue's reader when none runs. The reader starts at the end of the
// stream; the watcher catches up on what came before by itself.
func (c *Client) subscribe(ctx context.Context, queue, taskID string) (*sub, error) {
	s := &sub{taskID: taskID, wake: make(chan struct{}, 1)}
	if c.join(queue, s, "") {
		return s, nil
	}
	// Read outside the lock: a reader that starts from an earlier end
	// only delivers more, which the watchers drop.
	last, err := c.lastID(ctx, StreamKey(queue))
	if err != nil {
		return nil, err
	}
	c.join(queue, s, last)
	return s, nil
}

// join adds s to the reader of queue and reports whether there was one;
// when there was none and last is not "", it starts one reading after
// last.
func (c *Client) join(queue string, s *sub, last string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.readers[queue]; r != nil {
		r.mu.Lock()
		r.subs[s] = struct{}{}
		r.mu.Unlock()
		return true
	}
	if last == "" {
		return false
	}
	r := &reader{c: c, queue: queue, last: last, subs: map[*sub]struct{}{s: {}}}
	c.readers[queue] = r
	go r.run()
	return false
}

// unsubscribe removes s from the reader of queue.
func (c *Client) unsubscribe(queue string, s *sub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.readers[queue]; r != nil {
		r.mu.Lock()
		delete(r.subs, s)
		r.mu.Unlock()
	}
}

// run reads the stream until the reader has no watcher left.
func (r *reader) run() {
	key := StreamKey(r.queue)
	bo := backoff{}
	for {
		r.c.mu.Lock()
		r.mu.Lock()
		if len(r.subs) == 0 {
			delete(r.c.readers, r.queue)
			r.mu.Unlock()
			r.c.mu.Unlock()
			return
		}
		last := r.last
		r.mu.Unlock()
		r.c.mu.Unlock()

		res, err := r.c.rdb.XRead(context.Background(), &redis.XReadArgs{
			Streams: []string{key, last}, Count: readCount, Block: readBlock,
		}).Result()
		if errors.Is(err, redis.Nil) {
			bo.reset()
			continue
		}
		if err != nil {
			_ = bo.wait(context.Background(), r.c.log, "read events", err)
			continue
		}
		bo.reset()
		r.mu.Lock()
		for _, st := range res {
			for _, m := range st.Messages {
				e := entry{id: m.ID, evs: expand(nil, r.queue, m.ID, m.Values)}
				taskID := e.evs[len(e.evs)-1].TaskID
				for s := range r.subs {
					if s.taskID == "" || s.taskID == taskID {
						s.deliver(e)
					}
				}
				r.last = m.ID
			}
		}
		r.mu.Unlock()
	}
}
