package cachemgr

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The async side. Every accepted call holds one token of m.sem until it
// finishes, so at most Options.AsyncMaxInFlight calls are in flight; a call
// beyond that blocks until a token frees up or its ctx ends (backpressure,
// not unbounded goroutines). Get, Set, Delete and Ping calls are queued on
// m.reqs; AsyncPipelines flusher goroutines each take whatever is queued
// (at most defaultMaxBatch calls) and send it as one pipeline, so calls made
// while a batch is on the wire leave together in the next one, and a lone
// call leaves at once.
//
// Reads and pings give up with ctx.Err() if ctx ends before they are sent.
// Writes (Set, Delete, DeletePattern) are write-behind: once accepted they
// run to completion even if ctx is cancelled, so a write started by an HTTP
// handler survives the end of its request. Close waits for all of them.
// Any queued call that has waited OpTimeout for a pipeline fails with a
// timeout instead of being sent (see unsent), so that on a Redis that does
// not answer every call ends within two socket timeouts.

// pipelined is one queued async call.
type pipelined interface {
	// queue adds the call's commands to p, or settles and resolves the
	// call with its ctx's error and returns false when the caller has gone
	// away.
	queue(m *Manager, p redis.Pipeliner) bool
	// finish reads the commands' results and resolves the call.
	finish(m *Manager)
}

// accept takes an in-flight token for one async call.
func (m *Manager) accept(ctx context.Context) error {
	m.mu.RLock()
	if m.closed.Load() {
		m.mu.RUnlock()
		return ErrClosed
	}
	m.wg.Add(1)
	m.mu.RUnlock()
	select {
	case m.sem <- struct{}{}:
	default:
		select {
		case m.sem <- struct{}{}:
		case <-ctx.Done():
			m.wg.Done()
			return ctx.Err()
		}
	}
	m.stats.inFlight.Add(1)
	return nil
}

// settle takes a call off the in-flight count. It runs just before the
// call's Future resolves, so a caller that has waited for every Future it
// holds reads Stats().AsyncInFlight without them.
func (m *Manager) settle() { m.stats.inFlight.Add(-1) }

// release gives back a settled call's token; Close waits for every release.
func (m *Manager) release() {
	<-m.sem
	m.wg.Done()
}

func (m *Manager) startFlushers() {
	for range m.opts.AsyncPipelines {
		m.flushers.Add(1)
		go m.flush()
	}
}

func (m *Manager) flush() {
	defer m.flushers.Done()
	batch := make([]pipelined, 0, defaultMaxBatch)
	pipe := m.rdb.Pipeline()
	for r := range m.reqs {
		batch = append(batch[:0], r)
	collect:
		for len(batch) < defaultMaxBatch {
			select {
			case r, ok := <-m.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			default:
				break collect
			}
		}
		m.send(pipe, batch)
	}
}

func (m *Manager) send(pipe redis.Pipeliner, batch []pipelined) {
	n := 0
	for _, r := range batch {
		if r.queue(m, pipe) {
			batch[n] = r
			n++
		} else {
			m.release()
		}
	}
	if n == 0 {
		return
	}
	// Per-command errors (a miss, a network failure) land in each command;
	// the pipeline's own error is the first of them. The deadline keeps
	// go-redis from retrying a batch on a Redis that accepts connections
	// but does not answer: the batch fails after one socket timeout.
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if m.opTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, m.opTimeout)
	}
	_, _ = pipe.Exec(ctx)
	cancel()
	m.stats.batches.Add(1)
	m.stats.batched.Add(uint64(n))
	for _, r := range batch[:n] {
		m.settle()
		r.finish(m)
		m.release()
	}
	clear(batch[:n])
}

func (m *Manager) enqueue(r pipelined) { m.reqs <- r }

// unsent is the error of a call accepted at start that is about to be
// sent: its ctx's error when the caller has gone away (reads only: writes
// have no cancel), a timeout when it has waited OpTimeout for a pipeline
// (Redis is not keeping up, or does not answer: the caller would rather
// know now, and Close need not wait a socket timeout per batch), else nil.
// The timeout is counted as a failure of op.
func (m *Manager) unsent(ctx context.Context, op Op, verb, key string, start time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.opTimeout > 0 {
		if waited := time.Since(start); waited > m.opTimeout {
			err := m.wrap(verb, key, fmt.Errorf("%w: queued %v for a pipeline, over the socket timeout %v",
				context.DeadlineExceeded, waited.Round(time.Millisecond), m.opTimeout))
			m.stats.record(op, err)
			m.stats.took(op, start)
			return err
		}
	}
	return nil
}

// GetAsync is Get on the async side: the result arrives in the Future.
func (m *Manager) GetAsync(ctx context.Context, key string) *Future[string] {
	if err := m.check(key); err != nil {
		m.stats.read(OpGet, err)
		return failedFuture[string](err)
	}
	if m.near != nil {
		if v, ok := m.near.get(key); ok {
			m.stats.read(OpGet, nil)
			f := newFuture[string]()
			f.resolve(v, nil)
			return f
		}
	}
	if err := m.accept(ctx); err != nil {
		m.stats.read(OpGet, err)
		return failedFuture[string](err)
	}
	r := &getReq{start: time.Now(), Future: Future[string]{done: make(chan struct{})}, ctx: ctx, key: key, full: m.prefix + key}
	if m.near != nil {
		r.fill = m.near.prepare(ctx, m, key)
	}
	m.enqueue(r)
	return &r.Future
}

type getReq struct {
	start time.Time
	Future[string]
	ctx       context.Context
	key, full string
	cmd       *redis.StringCmd
	fill      nearFill           // fill.tr != nil: fill the near cache
	pttl      *redis.DurationCmd // with fill
}

func (r *getReq) queue(m *Manager, p redis.Pipeliner) bool {
	if err := m.unsent(r.ctx, OpGet, "get", r.key, r.start); err != nil {
		m.settle()
		r.resolve("", err)
		return false
	}
	r.cmd = p.Get(r.ctx, r.full)
	if r.fill.tr != nil {
		r.pttl = p.PTTL(r.ctx, r.full)
	}
	return true
}

func (r *getReq) finish(m *Manager) {
	v, err := r.cmd.Result()
	if err == nil && r.pttl != nil && r.pttl.Err() == nil {
		m.near.fill(r.fill, r.key, v, r.pttl.Val())
	}
	err = m.wrap("get", r.key, err)
	m.stats.read(OpGet, err)
	m.stats.took(OpGet, r.start)
	r.resolve(v, err)
}

// SetAsync is Set on the async side. It is write-behind: once accepted it
// completes even if ctx is cancelled, and Close waits for it. Failures
// nobody waits for are logged.
func (m *Manager) SetAsync(ctx context.Context, key string, value any, ttl time.Duration) *Future[struct{}] {
	v, exp, err := m.setArgs(key, value, ttl)
	if err == nil {
		err = m.accept(ctx)
	}
	if err != nil {
		m.stats.record(OpSet, err)
		return failedFuture[struct{}](err)
	}
	r := &setReq{start: time.Now(), Future: Future[struct{}]{done: make(chan struct{})}, ctx: context.WithoutCancel(ctx), key: key, full: m.prefix + key, val: v, exp: exp}
	m.enqueue(r)
	return &r.Future
}

type setReq struct {
	start time.Time
	Future[struct{}]
	ctx       context.Context
	key, full string
	val       any
	exp       time.Duration
	cmd       *redis.StatusCmd
}

func (r *setReq) queue(m *Manager, p redis.Pipeliner) bool {
	if err := m.unsent(r.ctx, OpSet, "set", r.key, r.start); err != nil {
		m.settle()
		r.done(m, err)
		return false
	}
	r.cmd = p.Set(r.ctx, r.full, r.val, r.exp)
	return true
}

func (r *setReq) finish(m *Manager) {
	m.nearWrote(r.key)
	err := m.wrap("set", r.key, r.cmd.Err())
	m.stats.record(OpSet, err)
	m.stats.took(OpSet, r.start)
	r.done(m, err)
}

// done resolves the call, logging a failure: nobody may wait for it.
func (r *setReq) done(m *Manager, err error) {
	if err != nil {
		m.log.Warn("async cache write failed", zap.String("cache_key", r.key), zap.Error(err))
	}
	r.resolve(struct{}{}, err)
}

// DeleteAsync is Delete on the async side, write-behind like SetAsync.
func (m *Manager) DeleteAsync(ctx context.Context, keys ...string) *Future[int64] {
	full, err := m.keys(keys)
	if err == nil && len(keys) == 0 {
		err = m.closedErr()
		if err == nil {
			m.stats.record(OpDelete, nil)
			f := newFuture[int64]()
			f.resolve(0, nil)
			return f
		}
	}
	if err == nil {
		err = m.accept(ctx)
	}
	if err != nil {
		m.stats.record(OpDelete, err)
		return failedFuture[int64](err)
	}
	r := &delReq{start: time.Now(), Future: Future[int64]{done: make(chan struct{})}, ctx: context.WithoutCancel(ctx), keys: full, perKey: m.cluster != nil}
	m.enqueue(r)
	return &r.Future
}

type delReq struct {
	start time.Time
	Future[int64]
	ctx    context.Context
	keys   []string // with prefix
	perKey bool
	cmds   []*redis.IntCmd
}

func (r *delReq) queue(m *Manager, p redis.Pipeliner) bool {
	if err := m.unsent(r.ctx, OpDelete, "delete", r.first(m), r.start); err != nil {
		m.settle()
		r.done(m, 0, err)
		return false
	}
	if !r.perKey {
		r.cmds = []*redis.IntCmd{p.Unlink(r.ctx, r.keys...)}
		return true
	}
	r.cmds = make([]*redis.IntCmd, len(r.keys))
	for i, k := range r.keys {
		r.cmds[i] = p.Unlink(r.ctx, k)
	}
	return true
}

func (r *delReq) finish(m *Manager) {
	var (
		n   int64
		err error
	)
	for _, c := range r.cmds {
		n += c.Val()
		if err == nil {
			err = c.Err()
		}
	}
	m.nearWroteFull(r.keys)
	err = m.wrap("delete", r.first(m), err)
	m.stats.record(OpDelete, err)
	m.stats.took(OpDelete, r.start)
	r.done(m, n, err)
}

// first is the first key as the caller gave it, for errors and logs.
func (r *delReq) first(m *Manager) string { return r.keys[0][len(m.prefix):] }

// done resolves the call, logging a failure: nobody may wait for it.
func (r *delReq) done(m *Manager, n int64, err error) {
	if err != nil {
		m.log.Warn("async cache delete failed", zap.String("cache_key", r.first(m)), zap.Int("keys", len(r.keys)), zap.Error(err))
	}
	r.resolve(n, err)
}

// DeletePatternAsync is DeletePattern on its own goroutine, write-behind
// like SetAsync.
func (m *Manager) DeletePatternAsync(ctx context.Context, pattern string) *Future[int64] {
	return goAsync(m, ctx, context.WithoutCancel(ctx), func(ctx context.Context) (int64, error) {
		n, err := m.runDeletePattern(ctx, pattern)
		if err != nil {
			m.log.Warn("async cache pattern delete failed", zap.String("pattern", pattern), zap.Error(err))
		}
		return n, err
	})
}

// PingAsync is Ping on its own goroutine.
func (m *Manager) PingAsync(ctx context.Context) *Future[struct{}] {
	return goAsync(m, ctx, ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, m.runPing(ctx)
	})
}

// goAsync runs fn(runCtx) on a goroutine under an in-flight token taken
// with acceptCtx. fn must not refuse to run after Close: once accepted, a
// call runs to its end, and Close waits for it.
func goAsync[T any](m *Manager, acceptCtx, runCtx context.Context, fn func(context.Context) (T, error)) *Future[T] {
	if err := m.accept(acceptCtx); err != nil {
		return failedFuture[T](err)
	}
	f := newFuture[T]()
	go func() {
		defer m.release()
		v, err := fn(runCtx)
		m.settle()
		f.resolve(v, err)
	}()
	return f
}
