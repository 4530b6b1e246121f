package events

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A reader runs the one blocking XREAD of a queue's stream that a Client's
// watchers of the queue share, and hands each watcher its events.
type reader struct {
	c     *Client
	queue string

	mu     sync.Mutex // guards what follows
	last   string     // the id the next XREAD reads after
	subs   int        // watchers
	all    map[*sub]struct{}
	byTask map[string][]*sub
}

// A sub is a watcher's subscription to its queue's reader.
type sub struct {
	taskID string // "": every task
	wake   chan struct{}

	mu     sync.Mutex // guards what follows
	q      []entry
	lagged bool
}

// entry is the events of one stream entry that a watcher watches.
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
	s.wakeUp()
}

// deliverEvent queues event e of entry id for s, in the entry queued last
// when it is that one.
func (s *sub) deliverEvent(id string, e Event) {
	s.mu.Lock()
	switch n := len(s.q); {
	case n > 0 && s.q[n-1].id == id:
		s.q[n-1].evs = append(s.q[n-1].evs, e)
	case n < subQueue:
		s.q = append(s.q, entry{id: id, evs: []Event{e}})
	default:
		s.lagged = true
	}
	s.mu.Unlock()
	s.wakeUp()
}

// wakeUp tells s's watcher that it has events to take.
func (s *sub) wakeUp() {
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
		r.add(s)
		r.mu.Unlock()
		return true
	}
	if last == "" {
		return false
	}
	r := &reader{c: c, queue: queue, last: last, all: make(map[*sub]struct{}), byTask: make(map[string][]*sub)}
	r.add(s)
	c.readers[queue] = r
	go r.run()
	return false
}

// add adds s to r's watchers; r.mu is held.
func (r *reader) add(s *sub) {
	r.subs++
	if s.taskID == "" {
		r.all[s] = struct{}{}
		return
	}
	r.byTask[s.taskID] = append(r.byTask[s.taskID], s)
}

// remove removes s from r's watchers; r.mu is held.
func (r *reader) remove(s *sub) {
	if s.taskID == "" {
		if _, ok := r.all[s]; ok {
			delete(r.all, s)
			r.subs--
		}
		return
	}
	subs := r.byTask[s.taskID]
	for i, x := range subs {
		if x == s {
			subs = append(subs[:i], subs[i+1:]...)
			r.subs--
			break
		}
	}
	if len(subs) == 0 {
		delete(r.byTask, s.taskID)
	} else {
		r.byTask[s.taskID] = subs
	}
}

// unsubscribe removes s from the reader of queue.
func (c *Client) unsubscribe(queue string, s *sub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.readers[queue]; r != nil {
		r.mu.Lock()
		r.remove(s)
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
		if r.subs == 0 {
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
				r.dispatch(m)
				r.last = m.ID
			}
		}
		r.mu.Unlock()
	}
}

// dispatch hands the events of stream entry m to their watchers; r.mu is
// held.
func (r *reader) dispatch(m redis.XMessage) {
	v, ok := entryValue(m.Values)
	if !ok {
		return // not an events entry
	}
	evs, err := decodeEntry(nil, r.queue, m.ID, v, "", 0)
	if err != nil {
		r.c.log.Debug("task events: entry skipped", zap.String("id", m.ID), zap.Error(err))
	}
	if len(evs) == 0 {
		return
	}
	for s := range r.all {
		s.deliver(entry{id: m.ID, evs: evs})
	}
	if len(r.byTask) == 0 {
		return
	}
	for _, e := range evs {
		for _, s := range r.byTask[e.TaskID] {
			s.deliverEvent(m.ID, e)
		}
	}
}
