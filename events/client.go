package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of ClientOptions.
const (
	// DefaultCheckInterval is WaitResult's default safety check interval.
	DefaultCheckInterval = time.Second
)

const (
	// readBlock is how long one XREAD waits for new entries. A reader
	// without watchers stops after at most this long.
	readBlock = 2 * time.Second
	// readCount bounds the entries one XREAD or XRANGE returns.
	readCount = 256
	// subQueue bounds the events waiting for a slow watcher; past it the
	// watcher reads the stream again from its last event.
	subQueue = 1024
	// Backoff after a failed read.
	backoffMin = 20 * time.Millisecond
	backoffMax = 2 * time.Second
)

// ClientOptions configure a Client. The zero value of a field means its
// default.
type ClientOptions struct {
	// Inspector reads the tasks' states for WaitResult. Default: an
	// inspector on the client's Redis client.
	Inspector *asynq.Inspector
	// CheckInterval is how often WaitResult reads the task's state while
	// it waits, as a safety net for events turned off or trimmed.
	// Default DefaultCheckInterval.
	CheckInterval time.Duration
	// Logger logs failed reads, which are retried. Default: none.
	Logger *zap.Logger
}

// A Client reads task events. Watchers of one queue share one blocking
// XREAD of its stream, so a Client holds one Redis connection per watched
// queue however many watchers there are.
//
// A Client is safe for concurrent use. It needs no closing: its reader of
// a queue stops within seconds of the last watcher leaving.
type Client struct {
	rdb redis.UniversalClient
	o   ClientOptions
	log *zap.Logger

	mu      sync.Mutex
	readers map[string]*reader // by queue
}

// NewClient returns a Client reading through rdb.
func NewClient(rdb redis.UniversalClient, o ClientOptions) *Client {
	if o.Inspector == nil {
		o.Inspector = asynq.NewInspectorFromRedisClient(rdb)
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Client{rdb: rdb, o: o, log: log, readers: make(map[string]*reader)}
}

// Watch returns the events of task taskID of queue (of every task of the
// queue when taskID is ""), in order, as they are published: those after
// after (an event's ID, or a stream position such as LastID returns; see
// CheckID), or, when after is "", those published from the time the
// iteration starts. after "0" starts at the oldest event the stream
// holds. To resume after a disconnection, pass the ID of the last event
// received.
//
// The sequence does not end after a final event: break out of the loop.
// It ends when ctx ends, after yielding ctx's error as its only error, and
// at once, after yielding an error, for an after that is not an ID.
// Redis errors are not yielded: Watch reads again from the last event it
// yielded, with backoff, until Redis answers, so no event is missed
// unless the stream was trimmed past it meanwhile.
func (c *Client) Watch(ctx context.Context, queue, taskID, after string) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := c.watch(ctx, queue, taskID, after, func(e Event) bool { return yield(e, nil) }); err != nil {
			yield(Event{}, err)
		}
	}
}

// watch calls fn with the events Watch yields until fn returns false (nil)
// or ctx ends (ctx's error).
func (c *Client) watch(ctx context.Context, queue, taskID, after string, fn func(Event) bool) error {
	key := StreamKey(queue)
	bo := backoff{}
	for after == "" {
		id, err := c.lastID(ctx, key)
		if err == nil {
			after = id
			break
		}
		if err := bo.wait(ctx, c.log, "read the last event id", err); err != nil {
			return err
		}
	}
	last, ok := parsePos(after)
	if !ok {
		return CheckID(after)
	}
	var s *sub
	for {
		var err error
		if s, err = c.subscribe(ctx, queue, taskID); err == nil {
			break
		}
		if err := bo.wait(ctx, c.log, "read the last event id", err); err != nil {
			return err
		}
	}
	defer c.unsubscribe(queue, s)

	// last is where the watcher is: after an event, or after a whole
	// entry (read while catching up, with no event of the task left).
	emit := func(e Event) bool {
		p, _ := parsePos(e.ID)
		if !last.before(p) {
			return true // seen while catching up
		}
		last = p
		return fn(e)
	}
	var evs []Event
	catchUp := true
	for {
		if catchUp {
			// Everything after last that the stream held when the
			// subscription began, and more: the reader delivers the
			// rest, and emit drops what both deliver.
			for {
				start := last.entryID()
				if last.whole {
					start = nextID(start)
				}
				msgs, err := c.rdb.XRangeN(ctx, key, start, "+", readCount).Result()
				if err != nil {
					if err := bo.wait(ctx, c.log, "read events", err); err != nil {
						return err
					}
					continue
				}
				bo.reset()
				for _, m := range msgs {
					if v, ok := entryValue(m.Values); ok {
						evs, _ = decodeEntry(evs[:0], queue, m.ID, v, taskID, 0)
						for _, e := range evs {
							if !emit(e) {
								return nil
							}
						}
					}
					if p, ok := parsePos(m.ID); ok && last.before(p) {
						last = p // the whole entry
					}
				}
				if len(msgs) < readCount {
					break
				}
			}
			catchUp = false
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		}
		q, lagged := s.take()
		for _, en := range q {
			for _, e := range en.evs {
				if !emit(e) {
					return nil
				}
			}
		}
		catchUp = lagged
	}
}

// WaitResult waits for task taskID of queue to end and returns its result
// when it succeeded. When it failed for good, the error is a *TaskError
// (Kind Archived or Cancelled); ErrNotFound when the task is neither in
// Redis nor in the stream; ErrResultTruncated, with the result's first
// MaxResultBytes, for a long result of a task no longer in Redis; ctx's
// error when ctx ends first.
//
// WaitResult returns at once for a task that has ended, and otherwise as
// soon as its final event is published: it does not poll. It reads the
// task's state each CheckInterval only as a safety net, for workers with
// events off.
func (c *Client) WaitResult(ctx context.Context, queue, taskID string) ([]byte, error) {
	if queue == "" || taskID == "" {
		return nil, fmt.Errorf("%w: queue %q, id %q", ErrNotFound, queue, taskID)
	}
	bo := backoff{}
	var last string
	for {
		var err error
		if last, err = c.LastID(ctx, queue); err == nil {
			break
		}
		if err := bo.wait(ctx, c.log, "read the last event id", err); err != nil {
			return nil, err
		}
	}
	// The state after the stream's position: an end between the two is
	// in the stream after last.
	if res, err, done := c.check(ctx, queue, taskID, false); done {
		return res, err
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type outcome struct {
		res []byte
		err error
	}
	out := make(chan outcome, 1)
	go func() {
		var o outcome
		err := c.watch(wctx, queue, taskID, last, func(e Event) bool {
			if !e.Final() {
				return true
			}
			o.res, o.err = c.final(e)
			return false
		})
		if err != nil {
			o.err = err
		}
		out <- o
	}()
	// The first check comes early: a final event written just before
	// the stream's position was read, for an end asynq recorded just
	// after the state was read, is not followed (see EarlyCheck).
	tick := time.NewTimer(min(EarlyCheck, c.o.CheckInterval))
	defer tick.Stop()
	missing := 0
	for {
		select {
		case o := <-out:
			if o.err != nil && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return o.res, o.err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
			tick.Reset(c.o.CheckInterval)
			res, err, done := c.check(ctx, queue, taskID, true)
			if !done {
				missing = 0
				continue
			}
			if errors.Is(err, ErrNotFound) {
				// Gone from Redis without a final event yet: it may be
				// on its way (published as the handler returned).
				if missing++; missing < 2 {
					continue
				}
			}
			return res, err
		}
	}
}

// check reads the state of the task and, when it has ended, returns its
// outcome with done set. A task missing from Redis is looked up in the
// stream; when the stream has no final event of it, the outcome is
// ErrNotFound if the stream has no event of it at all (or if gone is
// set), and otherwise not done.
func (c *Client) check(ctx context.Context, queue, taskID string, gone bool) (res []byte, err error, done bool) {
	info, err := c.o.Inspector.GetTaskInfo(queue, taskID)
	switch {
	case err == nil:
		switch info.State {
		case asynq.TaskStateCompleted:
			return info.Result, nil, true
		case asynq.TaskStateArchived:
			return nil, archived(info), true
		}
		return nil, nil, false
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
	default:
		c.log.Debug("task state not read", zap.String("queue", queue), zap.String("task_id", taskID), zap.Error(err))
		return nil, nil, false // the events still come
	}
	e, seen, err := c.Lookup(ctx, queue, taskID)
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err(), true
		}
		return nil, nil, false
	case e.Final():
		res, err := c.final(e)
		return res, err, true
	case !seen || gone:
		return nil, fmt.Errorf("%w: %s in queue %s", ErrNotFound, taskID, queue), true
	}
	return nil, nil, false
}

// Lookup reads queue's stream from its end for the events of task
// taskID: it returns the task's last final event (Succeeded, Archived or
// Cancelled) when the stream holds one (final.ID is "" otherwise), and
// whether the stream holds any event of the task at all. It reads the
// whole stream (at most WORKER_EVENTS_MAX_LEN entries) when it holds no
// final event of the task.
func (c *Client) Lookup(ctx context.Context, queue, taskID string) (final Event, seen bool, err error) {
	key := StreamKey(queue)
	end := "+"
	var evs []Event
	for {
		msgs, err := c.rdb.XRevRangeN(ctx, key, end, "-", readCount).Result()
		if err != nil {
			return Event{}, seen, err
		}
		for _, m := range msgs {
			v, ok := entryValue(m.Values)
			if !ok {
				continue
			}
			evs, _ = decodeEntry(evs[:0], queue, m.ID, v, taskID, 0)
			for i := len(evs) - 1; i >= 0; i-- {
				seen = true
				if evs[i].Final() {
					return evs[i], true, nil
				}
			}
		}
		if len(msgs) < readCount {
			return Event{}, seen, nil
		}
		end = prevID(msgs[len(msgs)-1].ID)
		if end == "" {
			return Event{}, seen, nil
		}
	}
}

// final returns WaitResult's answer for final event e.
func (c *Client) final(e Event) ([]byte, error) {
	switch e.Kind {
	case Succeeded:
		if len(e.Result) > 0 && !e.ResultTruncated {
			// A copy: the event is shared by every watcher of the task.
			return bytes.Clone(e.Result), nil
		}
		// The whole result, when the task is still in Redis (a result
		// written with the ResultWriter alone has no copy in the event).
		if info, err := c.o.Inspector.GetTaskInfo(e.Queue, e.TaskID); err == nil && len(info.Result) > 0 {
			return info.Result, nil
		}
		if e.ResultTruncated {
			return bytes.Clone(e.Result), ErrResultTruncated
		}
		return bytes.Clone(e.Result), nil
	case Cancelled, Archived:
		return nil, &TaskError{Queue: e.Queue, ID: e.TaskID, Kind: e.Kind, Err: e.Error, Attempts: e.Attempt}
	}
	return nil, fmt.Errorf("events: %s is not a final event", e.Kind)
}

// archived returns the TaskError of an archived task.
func archived(info *asynq.TaskInfo) *TaskError {
	k := Archived
	if strings.HasPrefix(info.LastErr, "cancelled by ") {
		k = Cancelled
	}
	return &TaskError{Queue: info.Queue, ID: info.ID, Kind: k, Err: info.LastErr, Attempts: info.Retried + 1}
}

// EarlyCheck is when WaitResult reads a task's state the second time,
// after the read before it follows the events. A worker writes a task's
// final event about when asynq records the task's end, a little before or
// after: a waiter that reads the stream's position just after the event
// and the state just before the end follows the stream from after the
// event, and learns of the end from the state. This check makes that rare
// case take a tenth of a second rather than CheckInterval.
const EarlyCheck = 100 * time.Millisecond

// LastID returns the ID of the last entry of queue's event stream, "0-0"
// when it has none (or does not exist): the position to pass to Watch as
// after, read before the state of a task, so that nothing that happens
// to the task after that read is missed (but for the case EarlyCheck
// describes: read the state again shortly after).
func (c *Client) LastID(ctx context.Context, queue string) (string, error) {
	return c.lastID(ctx, StreamKey(queue))
}

// HasNewer reports whether queue's event stream holds an event of task
// taskID after after (an event's ID, or a position from LastID), other
// than an Enqueued one (the enqueuing process publishes it once the
// enqueue has returned, possibly after the task's other events). It reads
// the stream from after to its end.
func (c *Client) HasNewer(ctx context.Context, queue, taskID, after string) (bool, error) {
	p, ok := parsePos(after)
	if !ok {
		return false, CheckID(after)
	}
	key := StreamKey(queue)
	start, from := p.entryID(), p.idx+1
	if p.whole {
		start, from = nextID(start), 0
	}
	var evs []Event
	for {
		msgs, err := c.rdb.XRangeN(ctx, key, start, "+", readCount).Result()
		if err != nil {
			return false, err
		}
		for _, m := range msgs {
			if v, ok := entryValue(m.Values); ok {
				if m.ID != p.entryID() {
					from = 0
				}
				evs, _ = decodeEntry(evs[:0], queue, m.ID, v, taskID, from)
				for _, e := range evs {
					if e.Kind != Enqueued {
						return true, nil
					}
				}
			}
		}
		if len(msgs) < readCount {
			return false, nil
		}
		start = nextID(msgs[len(msgs)-1].ID)
	}
}

// lastID returns the id of the last entry of the stream key, "0-0" when
// there is none.
func (c *Client) lastID(ctx context.Context, key string) (string, error) {
	msgs, err := c.rdb.XRevRangeN(ctx, key, "+", "-", 1).Result()
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

// backoff spaces retries after failed reads.
type backoff struct{ d time.Duration }

func (b *backoff) reset() { b.d = 0 }

// wait logs err and sleeps the next backoff, or returns ctx's error.
func (b *backoff) wait(ctx context.Context, log *zap.Logger, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.d = min(max(2*b.d, backoffMin), backoffMax)
	log.Debug("task events: "+what+"; retrying", zap.Duration("in", b.d), zap.Error(err))
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
