// Package pickup makes an asynq server fetch tasks in one round trip over
// all its queues and wait for them to arrive instead of polling. It works
// through a go-redis hook on the client handed to
// asynq.NewServerFromRedisClient; asynq's data in Redis stays asynq's.
// docs/pickup.md is the design note: the mechanism, what a crash between
// any two steps leaves, and how it stays compatible.
package pickup

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultBlock is how long one wait blocks in Redis, and the longest the
// hook holds asynq's fetch before letting its loop run once.
const DefaultBlock = 5 * time.Second

// requeueTimeout bounds the requeues at Close, all of them.
const requeueTimeout = 5 * time.Second

// DefaultPollInterval is Options.PollInterval's default.
const DefaultPollInterval = 10 * time.Millisecond

// TaskCheckInterval is the asynq server's TaskCheckInterval to use with a
// Pickup: the Pickup paces the fetches, asynq's pause after one that found
// nothing only delays the next.
const TaskCheckInterval = time.Millisecond

// pausedRecheck is how often a paused queue holding tasks is looked at
// again: about as often as asynq notices a resumed queue.
const pausedRecheck = time.Second

// errorBackoff is how long a watcher rests after a failed wait, so that a
// Redis that is down is not asked again in a tight loop.
const errorBackoff = time.Second

// maxBatch is the most tasks one fetch takes: fewer when fewer of the
// server's Concurrency slots are free, so that every task taken is handed
// to asynq at once.
const maxBatch = 16

var (
	//go:embed dequeue.lua
	dequeueSrc    string
	dequeueScript = redis.NewScript(dequeueSrc)
	//go:embed requeue.lua
	requeueSrc    string
	requeueScript = redis.NewScript(requeueSrc)
)

// Options configure a Pickup.
type Options struct {
	// Queues are the queues the asynq server serves with their weights,
	// as in asynq.Config.Queues.
	Queues map[string]int
	// StrictPriority is asynq.Config.StrictPriority.
	StrictPriority bool
	// Concurrency is the server's asynq.Config.Concurrency (0: one per
	// CPU, as asynq does). A fetch takes up to as many tasks as there are
	// free slots, at most 16, and hands the others to asynq's next calls
	// without a round trip.
	Concurrency int
	// Conn is a client of the same Redis for the waits (one blocking
	// connection per queue), forgeq's dequeue script and the pipelines of
	// the scripts that finish tasks; give it a pool of at least
	// len(Queues)+2 connections. The Pickup owns it: Close closes
	// it.
	Conn redis.UniversalClient
	// Block is how long one wait blocks. Default DefaultBlock.
	Block time.Duration
	// PollInterval is how long a fetch that found nothing pauses when
	// Redis refused the waits (BLMOVE needs Redis 6.2): the server polls
	// at this interval then. Default DefaultPollInterval. The asynq
	// server's own TaskCheckInterval should be short (a millisecond):
	// the Pickup paces the fetches.
	PollInterval time.Duration
	// Logger receives the switch to polling when Redis refuses BLMOVE.
	// Default: no logging.
	Logger *zap.Logger
}

// Stats count what a Pickup did.
type Stats struct {
	Fetches      int64 // dequeue scripts run by the hook
	Prefetched   int64 // tasks handed to asynq without a round trip
	Requeued     int64 // prefetched tasks put back at Close
	Finished     int64 // scripts finishing a task sent in shared pipelines
	Pipelines    int64 // the pipelines that carried them
	Waits        int64 // times the hook waited for a push
	Wakes        int64 // waits ended by a push
	SkippedWrite int64 // result writes held back (no retention), sent only if the task failed
}

// Pickup is the hook's state. Make one per asynq server with New, add
// Hook to the client the server uses, and Close it before
// Server.Shutdown.
type Pickup struct {
	o   Options
	log *zap.Logger
	// perQueue: Redis refuses scripts over keys in several slots (a
	// Cluster, or a proxy sharding like one): asynq's own per-queue
	// calls go through, and only the wait and what follows it apply.
	perQueue atomic.Bool
	queues   []string // by priority, highest first, then by name
	keys     map[string]*queueKeys

	batcher  *batcher
	watchers map[string]*watcher
	events   chan event
	done     chan struct{}
	closed   atomic.Bool
	polling  atomic.Bool // Redis refused BLMOVE: asynq's own polling
	wg       sync.WaitGroup

	// fetchMu is held by the fetch asynq is in (one at a time: asynq's
	// processor fetches from one goroutine) and by Close.
	fetchMu   sync.Mutex
	buffered  []string        // taken for asynq's next calls (fetchMu)
	skip      map[string]bool // answered empty locally for the rest of this fetch (fetchMu)
	seenEmpty map[string]bool // cluster: queues asynq found empty in this fetch (fetchMu)

	mu       sync.Mutex
	inflight map[string]handed // ids handed to asynq and not finished (mu)
	swept    time.Time         // the last sweep of inflight (fetchMu)

	held sync.Map // task id -> *heldResult: running tasks without retention

	fetches, waits, wakes, skipped, prefetched, requeued atomic.Int64
}

// New returns a Pickup for an asynq server with o's queues. It starts one
// watcher goroutine per queue; Close stops them.
func New(o Options) *Pickup {
	if o.Block <= 0 {
		o.Block = DefaultBlock
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	p := &Pickup{
		o:         o,
		log:       o.Logger,
		watchers:  make(map[string]*watcher, len(o.Queues)),
		events:    make(chan event, 2*len(o.Queues)+1),
		done:      make(chan struct{}),
		skip:      make(map[string]bool),
		seenEmpty: make(map[string]bool),
		inflight:  make(map[string]handed),
	}
	if p.o.Concurrency <= 0 {
		p.o.Concurrency = runtime.NumCPU()
	}
	p.batcher = newBatcher(o.Conn)
	_, cluster := o.Conn.(*redis.ClusterClient)
	p.perQueue.Store(cluster)
	p.keys = make(map[string]*queueKeys, len(o.Queues))
	for q := range o.Queues {
		p.queues = append(p.queues, q)
		p.keys[q] = newQueueKeys(q)
	}
	slices.SortFunc(p.queues, func(a, b string) int {
		if wa, wb := o.Queues[a], o.Queues[b]; wa != wb {
			return wb - wa
		}
		return strings.Compare(a, b)
	})
	for _, q := range p.queues {
		w := &watcher{p: p, queue: q, key: pendingKey(q), arm: make(chan struct{}, 1)}
		p.watchers[q] = w
		p.wg.Add(1)
		go w.run()
	}
	return p
}

// Close stops the waits (a fetch blocked in one returns "empty" at once),
// puts the tasks it took for asynq but had not handed over back at the
// head of their queues, and closes Options.Conn. The hook passes asynq's
// calls through from then on. Close is safe to call more than once.
func (p *Pickup) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	close(p.done)
	p.fetchMu.Lock()
	err := p.requeue(p.buffered)
	p.buffered = nil
	p.fetchMu.Unlock()
	p.batcher.stop()
	if cerr := p.o.Conn.Close(); err == nil { // ends the BLMOVEs in flight
		err = cerr
	}
	p.wg.Wait()
	return err
}

// requeue puts msgs, taken by the dequeue script, back at the head of
// their queues, one script per task (a cluster keeps queues in different
// slots).
func (p *Pickup) requeue(msgs []string) error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), requeueTimeout)
	defer cancel()
	// Newest first: each goes to the head, so the oldest ends up next.
	for _, msg := range slices.Backward(msgs) {
		m, ok := decodeMessage([]byte(msg))
		if !ok || m.id == "" || p.keys[m.queue] == nil {
			errs = append(errs, fmt.Errorf("pickup: requeue: undecodable task message"))
			continue
		}
		k := p.keys[m.queue]
		err := requeueScript.Run(ctx, p.o.Conn, []string{k.active, k.lease, k.pending, k.taskPrefix + m.id}, m.id).Err()
		if err != nil {
			errs = append(errs, fmt.Errorf("pickup: requeue task %s of queue %s: %w", m.id, m.queue, err))
			continue
		}
		p.requeued.Add(1)
	}
	return errors.Join(errs...)
}

// Stats returns the counts so far.
func (p *Pickup) Stats() Stats {
	pipes, calls := p.batcher.stats()
	return Stats{Fetches: p.fetches.Load(), Prefetched: p.prefetched.Load(), Requeued: p.requeued.Load(),
		Finished: calls, Pipelines: pipes,
		Waits: p.waits.Load(), Wakes: p.wakes.Load(), SkippedWrite: p.skipped.Load()}
}

// Polling reports whether Redis refused the waits, so that the server is
// back on asynq's polling.
func (p *Pickup) Polling() bool { return p.polling.Load() }

// onDequeue handles asynq's dequeue script call for queue q.
func (p *Pickup) onDequeue(ctx context.Context, cmd *redis.Cmd, c dequeueCall, next redis.ProcessHook) error {
	p.fetchMu.Lock()
	defer p.fetchMu.Unlock()
	if p.closed.Load() {
		return p.passThrough(ctx, cmd, next)
	}
	if len(p.buffered) > 0 {
		msg := p.buffered[0]
		p.buffered = p.buffered[1:]
		clear(p.skip)
		p.prefetched.Add(1)
		return p.found(cmd, msg)
	}
	if p.skip[c.queue] {
		delete(p.skip, c.queue)
		return empty(cmd)
	}
	clear(p.skip)

	if p.perQueue.Load() {
		return p.onClusterDequeue(ctx, cmd, c, next)
	}
	msg, paused, err := p.fetch(ctx, p.queues, c.queue, c.lease)
	if err == nil && msg == "" {
		msg, err = p.idle(ctx, c.lease, paused)
	}
	if isCrossSlot(err) && len(p.queues) > 1 {
		if !p.perQueue.Swap(true) {
			p.log.Warn("Redis refuses scripts over several queues (CROSSSLOT: a proxy that shards keys?): the worker fetches one queue per round trip, as asynq does", zap.Error(err))
		}
		return p.onClusterDequeue(ctx, cmd, c, next)
	}
	if err != nil {
		// asynq calls again at once after an error: keep a Redis that
		// is down from being asked in a tight loop.
		p.pause(errorBackoff)
		cmd.SetErr(err)
		return err
	}
	if msg != "" {
		return p.found(cmd, msg)
	}
	// Every queue was looked at: asynq's calls for the others in this
	// fetch need no round trip.
	for _, q := range p.queues {
		if q != c.queue {
			p.skip[q] = true
		}
	}
	return empty(cmd)
}

// onClusterDequeue lets asynq's per-queue calls through (its queues live
// in different slots) and waits once all of them found nothing.
func (p *Pickup) onClusterDequeue(ctx context.Context, cmd *redis.Cmd, c dequeueCall, next redis.ProcessHook) error {
	err := p.passThrough(ctx, cmd, next)
	if !errors.Is(err, redis.Nil) {
		clear(p.seenEmpty)
		return err
	}
	p.seenEmpty[c.queue] = true
	all := len(p.seenEmpty) >= len(p.queues)
	if all {
		clear(p.seenEmpty)
	}
	if !all {
		return err
	}
	msg, ierr := p.idle(ctx, c.lease, nil)
	switch {
	case ierr != nil:
		cmd.SetErr(ierr)
		return ierr
	case msg != "":
		return p.found(cmd, msg)
	}
	return empty(cmd)
}

// passThrough runs asynq's own call and notes the task it returns.
func (p *Pickup) passThrough(ctx context.Context, cmd *redis.Cmd, next redis.ProcessHook) error {
	err := next(ctx, cmd)
	if err == nil {
		if s, ok := cmd.Val().(string); ok {
			p.note(s)
		}
	}
	return err
}

// found answers asynq's call with the task message msg.
func (p *Pickup) found(cmd *redis.Cmd, msg string) error {
	p.note(msg)
	cmd.SetErr(nil)
	cmd.SetVal(msg)
	return nil
}

// empty answers asynq's call with "no task".
func empty(cmd *redis.Cmd) error {
	cmd.SetErr(redis.Nil)
	return redis.Nil
}

// idle waits for a push on one of the queues and fetches, until it gets a
// task or DefaultBlock passes ("" then: asynq's loop runs once and calls
// again). paused are queues that hold tasks but are paused: not waited on.
func (p *Pickup) idle(ctx context.Context, lease any, paused []string) (string, error) {
	if p.polling.Load() {
		// Redis refused BLMOVE: poll, as asynq would.
		p.pause(p.o.PollInterval)
		return "", nil
	}
	deadline := time.Now().Add(p.o.Block)
	for time.Now().Before(deadline) {
		until := deadline
		if len(paused) > 0 {
			until = time.Now().Add(min(time.Until(deadline), pausedRecheck))
		}
		q, ok := p.wait(until, paused)
		var qs []string
		switch {
		case ok && p.perQueue.Load():
			qs = []string{q}
		case ok:
			qs = p.queues
		case len(paused) > 0 && !p.closed.Load() && time.Now().Before(deadline):
			// Look at the paused queues again: resuming one is no push.
			qs = paused
		default:
			return "", nil
		}
		msg, pz, err := p.fetch(ctx, qs, "", lease)
		if err != nil || msg != "" {
			return msg, err
		}
		if ok || len(paused) > 0 {
			paused = pz
		}
	}
	return "", nil
}

// pause sleeps for d or until Close.
func (p *Pickup) pause(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
}

// wait arms the watchers of the queues not in paused and returns the
// queue of the first push, or false at deadline, at Close, or when a wait
// failed.
func (p *Pickup) wait(deadline time.Time, paused []string) (string, bool) {
	p.waits.Add(1)
	for _, q := range p.queues {
		if !slices.Contains(paused, q) {
			p.watchers[q].start()
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return "", false
		case <-t.C:
			return "", false
		case ev := <-p.events:
			switch {
			case ev.err != nil:
				return "", false
			case ev.woken:
				p.wakes.Add(1)
				return ev.queue, true
			case !slices.Contains(paused, ev.queue):
				p.watchers[ev.queue].start() // it timed out: wait again
			}
		}
	}
}

// fetch runs forgeq's dequeue script over queues qs (in priority order),
// taking up to one task per free concurrency slot, each from the first
// non-empty queue of an order drawn for it as asynq draws one per dequeue
// (first, when set, leads the first order): the first task message taken
// (the others wait in buffered for asynq's next calls), or "" and the
// queues that hold tasks but are paused. The caller holds fetchMu.
func (p *Pickup) fetch(ctx context.Context, qs []string, first string, lease any) (string, []string, error) {
	p.fetches.Add(1)
	p.sweep(ctx)
	slots := p.batch()
	keys := make([]string, 0, 4*len(qs))
	args := make([]any, 2, 2+len(qs)*(1+slots))
	args[0], args[1] = lease, slots
	pos := make(map[string]int, len(qs))
	for i, q := range qs {
		k := p.keys[q]
		keys = append(keys, k.pending, k.paused, k.active, k.lease)
		args = append(args, k.taskPrefix)
		pos[q] = i + 1
	}
	for slot := range slots {
		if slot > 0 {
			first = ""
		}
		for _, q := range p.orderOf(qs, first) {
			args = append(args, pos[q])
		}
	}
	res, err := dequeueScript.Run(ctx, p.o.Conn, keys, args...).Slice()
	if err != nil {
		return "", nil, err
	}
	var paused []string
	var msgs []any
	if len(res) == 2 {
		msgs, _ = res[0].([]any)
		pz, _ := res[1].([]any)
		for _, x := range pz {
			if i, ok := x.(int64); ok && i >= 1 && int(i) <= len(qs) {
				paused = append(paused, qs[i-1])
			}
		}
	}
	var taken string
	for _, m := range msgs {
		s, ok := m.(string)
		switch {
		case !ok:
		case taken == "":
			taken = s
		default:
			p.buffered = append(p.buffered, s)
		}
	}
	return taken, paused, nil
}

// handed is a task handed to asynq: its queue and when.
type handed struct {
	queue string
	at    time.Time
}

// sweepAfter is how old an entry of inflight must be before a sweep looks
// it up in Redis, and how often sweeps run.
const sweepAfter = 30 * time.Second

// sweep drops from inflight the tasks handed to asynq over sweepAfter ago
// that hold no lease in Redis any more: asynq gave them up without a
// script of its own naming them (its processor drops a task whose lease
// ran out during a Redis outage), so they no longer take a slot. A
// running task always holds a lease (asynq's heartbeat extends it). The
// caller holds fetchMu.
func (p *Pickup) sweep(ctx context.Context) {
	now := time.Now()
	if now.Sub(p.swept) < sweepAfter {
		return
	}
	p.swept = now
	p.mu.Lock()
	var old []string
	var queues []string
	for id, h := range p.inflight {
		if now.Sub(h.at) > sweepAfter {
			old = append(old, id)
			queues = append(queues, h.queue)
		}
	}
	p.mu.Unlock()
	if len(old) == 0 {
		return
	}
	cmds := make([]*redis.FloatCmd, len(old))
	_, _ = p.o.Conn.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, id := range old {
			cmds[i] = pipe.ZScore(ctx, "asynq:{"+queues[i]+"}:lease", id)
		}
		return nil
	})
	p.mu.Lock()
	for i, c := range cmds {
		if errors.Is(c.Err(), redis.Nil) {
			delete(p.inflight, old[i])
		}
	}
	p.mu.Unlock()
}

// batch is how many tasks the next fetch may take: one per free slot of
// the server's Concurrency, at least one (asynq asks only with a slot
// free), at most maxBatch.
func (p *Pickup) batch() int {
	p.mu.Lock()
	busy := len(p.inflight)
	p.mu.Unlock()
	return max(1, min(maxBatch, p.o.Concurrency-busy))
}

// orderOf is the order asynq would try the queues qs (in priority order)
// in: by priority with strict priority, else weighted-random (each next
// queue drawn with a probability proportional to its weight among those
// left); first, when set, goes first.
func (p *Pickup) orderOf(qs []string, first string) []string {
	if p.o.StrictPriority || len(qs) == 1 {
		if first == "" || first == qs[0] {
			return qs
		}
		rest := slices.DeleteFunc(slices.Clone(qs), func(q string) bool { return q == first })
		return append([]string{first}, rest...)
	}
	out := make([]string, 0, len(qs))
	left := 0
	for _, q := range qs {
		left += max(p.o.Queues[q], 1)
	}
	if first != "" {
		out = append(out, first)
		left -= max(p.o.Queues[first], 1)
	}
	for len(out) < len(qs) {
		r := rand.IntN(left)
		for _, q := range qs {
			if slices.Contains(out, q) {
				continue
			}
			w := max(p.o.Queues[q], 1)
			if r < w {
				out = append(out, q)
				left -= w
				break
			}
			r -= w
		}
	}
	return out
}

// queueKeys are asynq's keys of one queue that the dequeue script uses.
type queueKeys struct {
	pending, paused, active, lease, taskPrefix string
}

func newQueueKeys(q string) *queueKeys {
	base := "asynq:{" + q + "}:"
	return &queueKeys{pending: base + "pending", paused: base + "paused", active: base + "active",
		lease: base + "lease", taskPrefix: base + "t:"}
}

func pendingKey(q string) string { return "asynq:{" + q + "}:pending" }

// event is a watcher's report: a push (woken), a timeout (neither) or an
// error.
type event struct {
	queue string
	woken bool
	err   error
}

// watcher waits, when started, for its queue's pending list to be
// non-empty: BLMOVE from the list's head back to its head, which leaves
// the list as it was.
type watcher struct {
	p     *Pickup
	queue string
	key   string
	arm   chan struct{}
	busy  atomic.Bool // a BLMOVE is in flight or about to be
}

// start makes the watcher wait once, unless it already is.
func (w *watcher) start() {
	if w.busy.CompareAndSwap(false, true) {
		w.arm <- struct{}{}
	}
}

func (w *watcher) run() {
	defer w.p.wg.Done()
	p := w.p
	for {
		select {
		case <-p.done:
			return
		case <-w.arm:
		}
		err := p.o.Conn.BLMove(context.Background(), w.key, w.key, "LEFT", "LEFT", p.o.Block).Err()
		w.busy.Store(false)
		if p.closed.Load() {
			return
		}
		ev := event{queue: w.queue}
		switch {
		case err == nil:
			ev.woken = true
		case errors.Is(err, redis.Nil):
		default:
			ev.err = err
			if isRefused(err) && !p.polling.Swap(true) {
				p.log.Warn("Redis refused BLMOVE: the worker polls for tasks at WORKER_TASK_CHECK_INTERVAL (Redis 6.2 or later, with BLMOVE allowed, waits for them instead)",
					zap.Error(err))
			}
		}
		select {
		case p.events <- ev:
		default: // nobody is listening and the buffer is full: a stale hint
		}
		if ev.err != nil {
			select {
			case <-p.done:
				return
			case <-time.After(errorBackoff):
			}
		}
	}
}

// isRefused reports whether Redis refuses a command outright: unknown to
// it (before Redis 6.2 for BLMOVE), denied by an ACL, or not allowed by a
// proxy.
func isRefused(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "unknown command") || strings.Contains(s, "unknown or unsupported command") ||
		strings.HasPrefix(s, "noperm") || strings.Contains(s, "not allowed")
}

// isCrossSlot reports whether Redis refused a script over keys in several
// hash slots.
func isCrossSlot(err error) bool {
	return err != nil && strings.Contains(strings.ToUpper(err.Error()), "CROSSSLOT")
}
