package events

import (
	"context"
	"errors"
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

// maxBatch bounds the XADDs of one pipeline.
const maxBatch = 512

// maxKeys bounds the stream keys a Publisher keeps ready.
const maxKeys = 1024

// A busy Publisher, one whose last write ended less than busyWithin ago,
// waits linger for more events before it writes a batch.
const (
	linger     = time.Millisecond
	busyWithin = 5 * time.Millisecond
)

// writeTimeout bounds the write of one batch.
const writeTimeout = 5 * time.Second

// PublisherOptions configure a Publisher. The zero value of a field means
// its default.
type PublisherOptions struct {
	// MaxLen is the length each stream is trimmed to (approximately:
	// XADD MAXLEN ~). Default DefaultMaxLen; at least MinMaxLen.
	MaxLen int64
	// Buffer is how many published events wait for Redis at most; more
	// are dropped (see OnDropped). Default DefaultBuffer.
	Buffer int
	// Logger logs failed writes (at most one line a minute per cause is
	// not guaranteed: writes fail per batch). Default: none.
	Logger *zap.Logger
	// OnDropped, when set, is called once per dropped event: the buffer
	// was full, or Redis refused the write.
	OnDropped func()
}

// A Publisher writes events to their queues' streams. Publish never
// blocks: a goroutine writes the events in pipelined batches of XADDs.
// When it is idle it writes an event at once, so that the event reaches
// Redis about one round trip after it was published; when it is busy
// (it wrote a batch less than 5 ms before) it waits 1 ms and writes what
// came meanwhile with it, so that many events cost few round trips and
// few wake-ups.
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

	// Used by run's goroutine only.
	maxLen any            // o.MaxLen, boxed once
	keys   map[string]any // stream keys by queue, boxed once
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
		maxLen: o.MaxLen, keys: make(map[string]any)}
	go p.run()
	return p
}

// Publish queues e for writing to the stream of e.Queue and returns at
// once. An event with no Queue or TaskID is ignored; one published while
// the buffer is full, or after Close, is dropped (OnDropped is called).
// e's ID and Time are the stream entry's, set when it is written.
func (p *Publisher) Publish(e Event) {
	if p == nil || e.Queue == "" || e.TaskID == "" {
		return
	}
	p.mu.RLock()
	ok := !p.closed
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
func (p *Publisher) Close() error {
	if p == nil {
		return nil
	}
	ch := make(chan error, 1)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	p.in <- item{flush: ch} // blocks while the buffer is full: the goroutine drains it
	close(p.in)
	p.mu.Unlock()
	<-p.done
	return <-ch
}

// run writes batches until in is closed.
func (p *Publisher) run() {
	defer close(p.done)
	batch := make([]Event, 0, maxBatch)
	var (
		flushes   []chan error
		lastErr   error
		lastWrite time.Time
	)
	timer := time.NewTimer(linger)
	timer.Stop()
	for it := range p.in {
		batch, flushes = add(batch[:0], flushes[:0], it)
	drain:
		for len(batch) < maxBatch {
			select {
			case it, ok := <-p.in:
				if !ok {
					break drain
				}
				batch, flushes = add(batch, flushes, it)
			default:
				break drain
			}
		}
		// Busy: wait a little for more, so that a worker running
		// thousands of tasks a second writes their events in a few
		// round trips instead of one or two each. An event that comes
		// to an idle publisher, or a Flush, is written at once.
		// It sleeps rather than wait on the channel: a publisher
		// goroutine woken by every event would cost the handlers' CPU
		// what the batching saves.
		if len(batch) > 0 && len(flushes) == 0 && len(batch) < maxBatch && time.Since(lastWrite) < busyWithin {
			timer.Reset(linger)
			<-timer.C
		more:
			for len(batch) < maxBatch {
				select {
				case it, ok := <-p.in:
					if !ok {
						break more
					}
					batch, flushes = add(batch, flushes, it)
				default:
					break more
				}
			}
		}
		if len(batch) > 0 {
			if err := p.write(batch); err != nil {
				lastErr = err
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

// write XADDs batch in one pipeline.
func (p *Publisher) write(batch []Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	pipe := p.rdb.Pipeline()
	for i := range batch {
		e := &batch[i]
		key, ok := p.keys[e.Queue]
		if !ok {
			if len(p.keys) >= maxKeys {
				clear(p.keys)
			}
			key = StreamKey(e.Queue)
			p.keys[e.Queue] = key
		}
		// XADD key MAXLEN ~ n * field value ..., built here rather than
		// through XAddArgs: fewer allocations for each event.
		args := make([]any, 0, 24)
		args = append(args, "xadd", key, "maxlen", "~", p.maxLen, "*")
		_ = pipe.Process(ctx, redis.NewStringCmd(ctx, e.appendValues(args)...))
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	n := 0
	for _, c := range cmds {
		if c.Err() != nil {
			n++
		}
	}
	if n == 0 && !errors.Is(err, redis.Nil) {
		n = len(batch)
	}
	p.dropped(n)
	p.log.Warn("task events not written", zap.Int("events", n), zap.Error(err))
	return err
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
