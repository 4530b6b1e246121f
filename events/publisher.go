package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of PublisherOptions.
const (
	// DefaultMaxLen is the default length a stream is trimmed to.
	DefaultMaxLen = 10000
	// MinMaxLen is the smallest MaxLen NewPublisher accepts.
	MinMaxLen = 100
	// DefaultBuffer is the default number of events a Publisher holds
	// while Redis is slow or unreachable.
	DefaultBuffer = 8192
)

// maxBatch bounds the events of one pipeline.
const maxBatch = 1024

// maxKeys bounds the stream keys a Publisher keeps ready.
const maxKeys = 1024

// A busy Publisher, one whose last write ended less than busyWithin ago,
// waits linger for more events before it writes a batch.
const (
	linger     = 4 * time.Millisecond
	busyWithin = 10 * time.Millisecond
)

// writeTimeout bounds the write of one batch.
const writeTimeout = 5 * time.Second

// stuckAfter is how long a write goes unanswered before Close takes Redis
// for gone: a batch takes milliseconds to write.
const stuckAfter = time.Second

// PublisherOptions configure a Publisher. The zero value of a field means
// its default.
type PublisherOptions struct {
	// MaxLen is the length each stream is trimmed to (approximately:
	// XADD MAXLEN ~). Default DefaultMaxLen; at least MinMaxLen.
	MaxLen int64
	// Buffer is how many published events wait for Redis at most; more
	// are dropped (see OnDropped). Progress events may fill half of it
	// only: past that they are dropped, and the other kinds still have
	// room. Default DefaultBuffer.
	Buffer int
	// Logger logs failed writes (at most one line a minute per cause is
	// not guaranteed: writes fail per batch). Default: none.
	Logger *zap.Logger
	// OnDropped, when set, is called once per dropped event: the buffer
	// was full, or Redis refused the write.
	OnDropped func()
}

// A Publisher writes events to their queues' streams. Publish never
// blocks: a goroutine writes the events in pipelined batches, each
// queue's events of a batch in as few stream entries as fit (up to 64
// events, about 1 KiB, an entry; see Event.ID). When it is idle it writes
// an event at once, so that the event reaches Redis about one round trip
// after it was published; when it is busy (it wrote a batch less than
// 10 ms before) it waits 4 ms and writes what came meanwhile with it, so
// that a worker running thousands of tasks a second writes their events
// in a few hundred XADDs a second.
//
// A Progress event followed in the same batch by a later Progress event
// of its task's attempt is not written: a handler reporting progress in a
// tight loop costs a few events a second, not one per report.
//
// A Publisher is safe for concurrent use. A nil *Publisher publishes
// nothing.
type Publisher struct {
	rdb redis.UniversalClient
	o   PublisherOptions
	log *zap.Logger

	mu     sync.RWMutex // guards closed against sends on a closed in
	closed bool
	in     chan item
	done   chan struct{}

	drops atomic.Uint64

	// stopCtx ends when CloseContext gives up on the events left: run
	// drops them instead of writing them, and the write under way ends.
	stopCtx context.Context
	stop    context.CancelFunc
	closing atomic.Bool  // Close was called
	failing atomic.Bool  // the last write failed for want of Redis (not an error reply)
	writing atomic.Int64 // when the write under way began, unix ns; 0: none

	// Used by run's goroutine only, reused from batch to batch.
	maxLen  any                 // o.MaxLen, boxed once
	keys    map[string]any      // stream keys by queue, boxed once
	buf     []byte              // the entries' values
	weights []int               // per XADD of a batch: the events it writes
	skip    []bool              // per event of a batch: coalesced
	groups  [][]int             // the batch's events by queue
	queues  map[string]int      // queue -> index in groups
	last    map[attemptKey]bool // coalesce's progress seen
}

// attemptKey identifies an attempt of a task in coalesce.
type attemptKey struct {
	queue, id string
	attempt   int
}

// item is an event to write, or, with flush set, a request to say when
// everything before it is written.
type item struct {
	e     Event
	flush chan error
}

// NewPublisher returns a Publisher writing to rdb, and starts its
// goroutine; Close stops it. A MaxLen under MinMaxLen is raised to it
// (package config rejects such settings with an error).
func NewPublisher(rdb redis.UniversalClient, o PublisherOptions) *Publisher {
	if o.MaxLen == 0 {
		o.MaxLen = DefaultMaxLen
	}
	o.MaxLen = max(o.MaxLen, MinMaxLen)
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	p := &Publisher{rdb: rdb, o: o, log: log, in: make(chan item, o.Buffer), done: make(chan struct{}),
		maxLen: o.MaxLen, keys: make(map[string]any), queues: make(map[string]int), last: make(map[attemptKey]bool)}
	p.stopCtx, p.stop = context.WithCancel(context.Background())
	go p.run()
	return p
}

// Publish queues e for writing to the stream of e.Queue and returns at
// once. An event with no Queue or TaskID is ignored; one published while
// the buffer is full (half full for a Progress event), or after Close, is
// dropped (OnDropped is called). Publish sets e's Time to now; its ID is
// set when it is written, from its stream entry's.
func (p *Publisher) Publish(e Event) {
	if p == nil || e.Queue == "" || e.TaskID == "" {
		return
	}
	e.Time = time.Now()
	p.mu.RLock()
	ok := !p.closed
	if ok && e.Kind == Progress && len(p.in) >= cap(p.in)/2 {
		ok = false
	}
	if ok {
		select {
		case p.in <- item{e: e}:
		default:
			ok = false
		}
	}
	p.mu.RUnlock()
	if !ok {
		p.dropped(1)
	}
}

// Flush waits until every event published before it is written (or
// dropped). It returns ctx's error if ctx ends first, and the error of the
// last failed write, if any, among those events.
func (p *Publisher) Flush(ctx context.Context) error {
	if p == nil {
		return nil
	}
	ch := make(chan error, 1)
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return nil
	}
	select {
	case p.in <- item{flush: ch}:
	case <-ctx.Done():
		p.mu.RUnlock()
		return ctx.Err()
	}
	p.mu.RUnlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes the events published so far and stops the Publisher;
// events published afterwards are dropped. It returns the error of the
// last failed write, if any. Close is idempotent; nil-safe.
//
// Close does not wait for Redis to come back. When the last write before
// it failed for want of Redis (a timeout, a connection error), or the
// write under way has gone unanswered for a second, Close returns at once
// and the Publisher's goroutine drops the events left (counted, see
// OnDropped) once that write ends; when a write fails while Close waits,
// the events left are dropped too, rather than written batch after
// batch, each after its own timeout. Close may still take a write's
// timeout (5 s, or less with the client's socket timeout) when Redis
// stops answering just then; CloseContext bounds it.
func (p *Publisher) Close() error { return p.CloseContext(context.Background()) }

// CloseContext is Close, but gives up when ctx ends: it then drops the
// events not written yet and returns an error wrapping ctx's, without
// waiting for the write under way.
func (p *Publisher) CloseContext(ctx context.Context) error {
	if p == nil {
		return nil
	}
	ch := make(chan error, 1)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("events: close: %w", ctx.Err())
		}
	}
	p.closed = true
	p.closing.Store(true)
	gone := false
	if w := p.writing.Load(); p.failing.Load() || w != 0 && time.Since(time.Unix(0, w)) > stuckAfter {
		// Redis did not answer the last write, or does not answer this
		// one: drop the rest, without waiting for the write under way.
		gone = true
		p.stop()
	}
	// Nothing sends on in any more (Publish and Flush check closed under
	// the lock, which no send holds now): the last send and the close
	// need no lock, and a Publish meanwhile drops at once instead of
	// waiting for a full buffer to drain.
	p.mu.Unlock()
	select {
	case p.in <- item{flush: ch}: // waits while the buffer is full: the goroutine drains it
	case <-ctx.Done():
		ch = nil
	}
	close(p.in)
	if gone {
		return errGaveUp
	}
	if ch == nil {
		p.stop()
		return fmt.Errorf("events: close: %w; the events not written are dropped", ctx.Err())
	}
	select {
	case <-p.done:
		return <-ch
	case <-ctx.Done():
		p.stop()
		return fmt.Errorf("events: close: %w; the events not written are dropped", ctx.Err())
	}
}

// run writes batches until in is closed.
func (p *Publisher) run() {
	defer close(p.done)
	batch := make([]Event, 0, maxBatch)
	var (
		flushes   []chan error
		lastErr   error
		lastWrite time.Time
		closed    bool // in is closed and empty
	)
	// drain adds what in holds to the batch, without waiting.
	drain := func() {
		for len(batch) < maxBatch {
			select {
			case it, ok := <-p.in:
				if !ok {
					closed = true
					return
				}
				batch, flushes = add(batch, flushes, it)
			default:
				return
			}
		}
	}
	timer := time.NewTimer(linger)
	timer.Stop()
	for !closed {
		it, ok := <-p.in
		if !ok {
			break
		}
		batch, flushes = add(batch[:0], flushes[:0], it)
		drain()
		// Busy: wait a little for more, so that a worker running
		// thousands of tasks a second writes their events in a few
		// round trips instead of one or two each. An event that comes
		// to an idle publisher, or a Flush, is written at once.
		// It sleeps rather than wait on the channel: a publisher
		// goroutine woken by every event would cost the handlers' CPU
		// what the batching saves.
		busy := time.Since(lastWrite) < busyWithin
		if len(batch) > 0 && len(flushes) == 0 && len(batch) < maxBatch && busy && !closed && !p.closing.Load() {
			timer.Reset(linger)
			<-timer.C
			drain()
		}
		if len(batch) > 0 {
			if p.stopCtx.Err() != nil {
				// Closing, and Redis did not answer: drop.
				p.dropped(len(batch))
				if lastErr == nil {
					lastErr = errGaveUp
				}
			} else if err := p.write(batch); err != nil {
				lastErr = err
				var rerr redis.Error
				if !errors.As(err, &rerr) {
					p.failing.Store(true)
					if p.closing.Load() {
						p.stop()
					}
				}
			} else {
				p.failing.Store(false)
			}
			lastWrite = time.Now()
			clear(batch) // keeps no result alive
		}
		for _, ch := range flushes {
			ch <- lastErr
			lastErr = nil
		}
	}
}

// add adds it to the batch or to the flush requests.
func add(batch []Event, flushes []chan error, it item) ([]Event, []chan error) {
	if it.flush != nil {
		return batch, append(flushes, it.flush)
	}
	return append(batch, it.e), flushes
}

// errGaveUp is what Close returns for the events it dropped because
// Redis did not answer.
var errGaveUp = errors.New("events: Redis did not answer: the events left at close are dropped")

// coalesce returns, for each event of batch, whether it is left out: a
// Progress event followed in batch by a later Progress event of the same
// attempt.
func (p *Publisher) coalesce(batch []Event) []bool {
	skip := p.skip[:0]
	n := 0
	for i := range batch {
		skip = append(skip, false)
		if batch[i].Kind == Progress {
			n++
		}
	}
	p.skip = skip
	if n < 2 {
		return skip
	}
	seen := p.last
	for i := len(batch) - 1; i >= 0; i-- {
		e := &batch[i]
		if e.Kind != Progress {
			continue
		}
		k := attemptKey{e.Queue, e.TaskID, e.Attempt}
		if seen[k] {
			skip[i] = true
		} else {
			seen[k] = true
		}
	}
	clear(seen)
	return skip
}

// write XADDs batch in one pipeline: each queue's events, in order, in as
// few entries as fit (maxPack, packBytes).
func (p *Publisher) write(batch []Event) error {
	ctx, cancel := context.WithTimeout(p.stopCtx, writeTimeout)
	defer cancel()
	skip := p.coalesce(batch)
	groups := p.groups[:0]
	for i := range batch {
		if skip[i] {
			continue
		}
		g, ok := p.queues[batch[i].Queue]
		if !ok {
			g = len(groups)
			p.queues[batch[i].Queue] = g
			if g < cap(groups) {
				groups = groups[:g+1]
				groups[g] = groups[g][:0]
			} else {
				groups = append(groups, nil)
			}
		}
		groups[g] = append(groups[g], i)
	}
	clear(p.queues)
	pipe := p.rdb.Pipeline()
	buf, weights := p.buf[:0], p.weights[:0]
	for _, g := range groups {
		key := p.key(batch[g[0]].Queue)
		start, n := len(buf), 0
		xadd := func() {
			v := buf[start:len(buf):len(buf)]
			_ = pipe.Process(ctx, redis.NewStringCmd(ctx, "xadd", key, "maxlen", "~", p.maxLen, "*", entryField, v))
			weights = append(weights, n)
			start, n = len(buf), 0
		}
		for _, i := range g {
			e := &batch[i]
			size := e.size()
			if n > 0 && (n == maxPack || len(buf)-start+size > packBytes) {
				xadd()
			}
			buf = appendEvent(buf, e, size)
			n++
		}
		xadd()
	}
	p.groups = groups
	p.writing.Store(time.Now().UnixNano())
	cmds, err := pipe.Exec(ctx)
	p.writing.Store(0)
	p.buf, p.weights = buf[:0], weights[:0]
	if err == nil {
		return nil
	}
	n := 0
	for i, c := range cmds {
		if c.Err() != nil && i < len(weights) {
			n += weights[i]
		}
	}
	if n == 0 && !errors.Is(err, redis.Nil) {
		for _, w := range weights {
			n += w
		}
	}
	p.dropped(n)
	p.log.Warn("task events not written", zap.Int("events", n), zap.Error(err))
	return err
}

// key returns the stream key of queue, boxed once.
func (p *Publisher) key(queue string) any {
	key, ok := p.keys[queue]
	if !ok {
		if len(p.keys) >= maxKeys {
			clear(p.keys)
		}
		key = StreamKey(queue)
		p.keys[queue] = key
	}
	return key
}

// Dropped returns how many events p dropped so far (0 for a nil p).
func (p *Publisher) Dropped() uint64 {
	if p == nil {
		return 0
	}
	return p.drops.Load()
}

// dropped counts n dropped events.
func (p *Publisher) dropped(n int) {
	p.drops.Add(uint64(n))
	if p.o.OnDropped == nil {
		return
	}
	for range n {
		p.o.OnDropped()
	}
}
