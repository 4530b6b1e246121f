package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/telemetry"
)

// The limits task types declare (tasks.Type's RateLimit, MaxConcurrent and
// MaxConcurrentPerKey) are enforced by the limiter's middleware, before the
// handler, in Redis, so that they hold across every worker process:
//
//   - The rate is go-redis/redis_rate's GCRA script on the key
//     "rate:forgeq:limit:{<type>}:rate".
//   - A concurrency cap is a sorted set of leases,
//     "forgeq:limit:{<type>}:running" for MaxConcurrent and
//     "forgeq:limit:{<type>}:key:<key>" for MaxConcurrentPerKey: member
//     the task id, score the time (Redis's clock, in ms) the lease
//     expires. One script drops the expired leases and takes a slot in
//     every set of the task, or in none; the handler's goroutine renews
//     the lease every leaseRenew while it runs, and a second script drops
//     it when the handler returns. A worker that dies frees its slots when
//     its leases expire, leaseTTL later at most. The {<type>} hash tag puts
//     all the sets of a type in one slot of a Cluster.
//   - A task that finds its caps full is put in the cap's waiting set
//     ("...:waiting", score the time it was postponed) by the same script.
//     Freeing a slot pops the longest waiting task and moves it from the
//     retry set back to its queue at once (only when it is still waiting
//     there), so a freed slot need not wait for the task's postponement
//     to run out.
//   - A task the rate turns away is put in "forgeq:limit:{<type>}:rate:waiting";
//     under a rate faster than one per second each start moves one of
//     them back to its queue when the next start is due (rateAllowed).
//   - A task postponed on its last attempt is retried rather than
//     archived by asynq (postpone.go).
//
// Caps are taken before the rate, so a rate token is never used by a task
// that then finds its cap full; a task the rate turns away gives its slots
// back at once.
const (
	// leaseTTL is how long a concurrency lease lives without renewal: how
	// long the slots of a worker that died stay taken at most.
	leaseTTL = 30 * time.Second
	// leaseRenew is how often a running task renews its leases.
	leaseRenew = 10 * time.Second
	// capDelayMin and capDelayJitter: a task over a concurrency cap is
	// postponed for capDelayMin plus up to capDelayJitter.
	capDelayMin    = 100 * time.Millisecond
	capDelayJitter = 400 * time.Millisecond
	// waitingTTL bounds how long a waiting entry is kept: a task
	// postponed longer ago came back on its own.
	waitingTTL = time.Minute
	// limitOpTimeout bounds the release of leases and the wake-up of a
	// waiting task, which run after the task's ctx may have ended.
	limitOpTimeout = 5 * time.Second
	// maxWakeTries is how many waiting entries a release tries until one
	// names a task still waiting in its retry set.
	maxWakeTries = 3
	// rateWakeMax: a start wakes a task the rate turned away when the
	// next token comes within it (rateAllowed); slower rates rely on
	// asynq's whole seconds alone.
	rateWakeMax = time.Second
)

// limitPrefix starts every key of the limits.
const limitPrefix = "forgeq:limit:{"

// capKeys returns the lease sets of a task of typ with concurrency key
// key: the type's set when all is set, the key's when key is not "".
func capKeys(typ string, all bool, key string) []string {
	var keys []string
	if all {
		keys = append(keys, limitPrefix+typ+"}:running")
	}
	if key != "" {
		keys = append(keys, limitPrefix+typ+"}:key:"+key)
	}
	return keys
}

// rateKey is the key handed to redis_rate (which prefixes it with "rate:").
func rateKey(typ string) string { return limitPrefix + typ + "}:rate" }

// acquireScript takes a lease on a slot of every set in KEYS, or on none.
// ARGV: member (the task id), the lease in ms, the waiting entry (queue and
// task id), the waiting entries' TTL in ms, then the cap of each key.
// Returns 0 when it took the leases, else the 1-based index of the first
// full set, after adding the waiting entry to that set's waiting set.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member, lease, waiter, wttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
for i, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  if not redis.call('ZSCORE', k, member) and redis.call('ZCARD', k) >= tonumber(ARGV[4 + i]) then
    local w = k .. ':waiting'
    redis.call('ZREMRANGEBYSCORE', w, '-inf', now - wttl)
    redis.call('ZADD', w, now, waiter)
    redis.call('PEXPIRE', w, wttl)
    return i
  end
end
for _, k in ipairs(KEYS) do
  redis.call('ZADD', k, now + lease, member)
  redis.call('PEXPIRE', k, lease)
  redis.call('ZREM', k .. ':waiting', waiter)
end
return 0
`)

// renewScript extends the leases of ARGV[1] in KEYS to ARGV[2] ms from now.
// Returns how many of them it no longer held (expired and dropped).
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = 0
for _, k in ipairs(KEYS) do
  if redis.call('ZADD', k, 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 0 and not redis.call('ZSCORE', k, ARGV[1]) then
    lost = lost + 1
  else
    redis.call('PEXPIRE', k, ARGV[2])
  end
end
return lost
`)

// releaseScript drops the leases of ARGV[1] in KEYS and, when ARGV[2] is
// "1", pops the longest waiting entry of each set. Returns the entries
// popped, one list (empty or of one) per set.
var releaseScript = redis.NewScript(`
local out = {}
for j, k in ipairs(KEYS) do
  redis.call('ZREM', k, ARGV[1])
  local entries = {}
  if ARGV[2] == '1' then
    local popped = redis.call('ZPOPMIN', k .. ':waiting')
    for i = 1, #popped, 2 do
      table.insert(entries, popped[i])
    end
  end
  out[j] = entries
end
return out
`)

// wakeScript moves the task ARGV[1] from its queue's retry set to its
// pending list, as asynq's RunTask does, but only while it is in the retry
// state: a waiting entry names a task postponed by a cap, which sits in
// the retry set until its delay runs out. KEYS: asynq's task hash, retry
// set and pending list of the queue (asynq v0.26's key layout). Returns 1
// when it moved the task.
var wakeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') ~= 'retry' then
  return 0
end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'pending')
return 1
`)

// limiter enforces the limits of the types that declare any.
type limiter struct {
	rdb    redis.UniversalClient
	rate   *redis_rate.Limiter
	defs   map[string]*tasks.Definition // the types with limits
	log    *zap.Logger
	jitter func(int64) int64 // random in [0, n), as rand.Int64N
	// task returns the id and queue of the task under ctx (taskOf).
	task func(ctx context.Context) (id, queue string)
	// last notes the tasks postponed on their last attempt (postpone.go).
	last *lastAttempts
}

// taskOf returns the id and queue asynq gives the task under ctx.
func taskOf(ctx context.Context) (id, queue string) {
	id, _ = asynq.GetTaskID(ctx)
	queue, _ = asynq.GetQueueName(ctx)
	return id, queue
}

// newLimiter returns the limiter of the types of reg that declare limits.
// Add its hook to rdb, the client the asynq server uses (before the
// pickup's), so that a task postponed on its last attempt is not archived.
func newLimiter(rdb redis.UniversalClient, reg *tasks.Registry, log *zap.Logger) *limiter {
	defs := map[string]*tasks.Definition{}
	for _, d := range reg.Definitions() {
		if d.Limited() {
			defs[d.Type()] = d
		}
	}
	return &limiter{rdb: rdb, rate: redis_rate.NewLimiter(rdb), defs: defs, log: log,
		jitter: rand.Int64N, task: taskOf, last: &lastAttempts{}}
}

// hook returns the go-redis hook that keeps a task postponed on its last
// attempt from being archived (postpone.go).
func (l *limiter) hook() redis.Hook { return l.last.hook() }

// middleware returns the asynq middleware of l: the limits of the types
// that declare any, and for every type the note of a postponement (its
// own, or a handler's tasks.Postpone) on a task's last attempt.
func (l *limiter) middleware() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		limited := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			d, ok := l.defs[t.Type()]
			if !ok {
				return next.ProcessTask(ctx, t)
			}
			return l.process(ctx, d, next, t)
		})
		return l.last.middleware(limited)
	}
}

// process runs t under the limits of d: it takes t's slots and a rate
// token, or postpones t.
func (l *limiter) process(ctx context.Context, d *tasks.Definition, next asynq.Handler, t *asynq.Task) error {
	key, err := d.ConcurrencyKey(t.Payload())
	if err != nil {
		// The handler refuses the payload for good (asynq.SkipRetry).
		publishStarted(ctx)
		return next.ProcessTask(ctx, t)
	}
	id, queue := l.task(ctx)
	keys := capKeys(d.Type(), d.MaxConcurrent() > 0, key)
	if len(keys) > 0 {
		caps := make([]int, 0, 2)
		if d.MaxConcurrent() > 0 {
			caps = append(caps, d.MaxConcurrent())
		}
		if key != "" {
			caps = append(caps, d.MaxConcurrentPerKey())
		}
		full, err := l.acquire(ctx, keys, id, queue, caps)
		if err != nil {
			return fmt.Errorf("%s: concurrency limit: %w", d.Type(), err)
		}
		if full > 0 {
			reason := tasks.PostponedConcurrency
			if full == len(keys) && key != "" {
				reason = tasks.PostponedKey
			}
			return tasks.Postpone(capDelayMin+time.Duration(l.jitter(int64(capDelayJitter))), reason)
		}
	}
	if r, ok := d.RateLimit(); ok {
		res, err := l.rate.Allow(ctx, rateKey(d.Type()), redis_rate.Limit{Rate: r.N, Period: r.Per, Burst: r.Burst})
		if err == nil && res.Allowed == 0 {
			l.release(ctx, keys, id, false)
			l.rateWaiting(ctx, d.Type(), queue+"\x00"+id)
			return tasks.Postpone(max(res.RetryAfter, time.Millisecond), tasks.PostponedRate)
		}
		if err != nil {
			l.release(ctx, keys, id, true)
			return fmt.Errorf("%s: rate limit: %w", d.Type(), err)
		}
		l.rateAllowed(ctx, d.Type(), queue+"\x00"+id, r)
	}
	// Past the limits: the attempt starts (its started event; see
	// taskEvents).
	publishStarted(ctx)
	if len(keys) == 0 {
		return next.ProcessTask(ctx, t)
	}
	stop := l.renew(ctx, d.Type(), keys, id)
	defer func() {
		stop()
		l.release(ctx, keys, id, true)
	}()
	return next.ProcessTask(ctx, t)
}

// limits reports whether tasks of type typ have limits, which may
// postpone them before they start. A nil l has none.
func (l *limiter) limits(typ string) bool {
	if l == nil {
		return false
	}
	_, ok := l.defs[typ]
	return ok
}

// rateWaitKey is the waiting set of typ's rate limit.
func rateWaitKey(typ string) string { return limitPrefix + typ + "}:rate:waiting" }

// rateWaiting adds entry, a task the rate turned away, to its type's
// waiting set. Errors are ignored: the task comes back when its
// postponement runs out all the same.
func (l *limiter) rateWaiting(ctx context.Context, typ, entry string) {
	k := rateWaitKey(typ)
	now := time.Now().UnixMilli()
	_, _ = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, k, "-inf", strconv.FormatInt(now-waitingTTL.Milliseconds(), 10))
		p.ZAdd(ctx, k, redis.Z{Score: float64(now), Member: entry})
		p.PExpire(ctx, k, waitingTTL)
		return nil
	})
}

// rateAllowed is called when the rate r of typ let the task of entry
// start: it drops the task's waiting entry and, when the next token comes
// within rateWakeMax, wakes a waiting task then. The tasks the rate
// turns away come back when asynq moves them to their queue, on whole
// seconds; each start waking one task when the next token is due keeps
// the starts going at the rate in between, rather than in bursts once a
// second that lose the tokens of a longer second.
func (l *limiter) rateAllowed(ctx context.Context, typ, entry string, r tasks.Rate) {
	k := rateWaitKey(typ)
	if err := l.rdb.ZRem(ctx, k, entry).Err(); err != nil {
		return
	}
	interval := r.Per / time.Duration(r.N)
	if interval > rateWakeMax {
		return
	}
	time.AfterFunc(interval, func() {
		wctx, cancel := context.WithTimeout(context.Background(), limitOpTimeout)
		defer cancel()
		for range maxWakeTries {
			popped, err := l.rdb.ZPopMin(wctx, k, 1).Result()
			if err != nil || len(popped) == 0 {
				return
			}
			if e, _ := popped[0].Member.(string); l.wake(wctx, e) {
				return
			}
		}
	})
}

// acquire runs acquireScript: 0 when it took a slot in every set of keys,
// else the 1-based index of the first full one.
func (l *limiter) acquire(ctx context.Context, keys []string, id, queue string, caps []int) (int, error) {
	args := []any{id, leaseTTL.Milliseconds(), queue + "\x00" + id, waitingTTL.Milliseconds()}
	for _, c := range caps {
		args = append(args, c)
	}
	return acquireScript.Run(ctx, l.rdb, keys, args...).Int()
}

// renew renews the leases of id in keys every leaseRenew until the returned
// func is called, which waits for the renewal goroutine to end.
func (l *limiter) renew(ctx context.Context, typ string, keys []string, id string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(leaseRenew)
		defer tick.Stop()
		rctx := context.WithoutCancel(ctx)
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			cctx, cancel := context.WithTimeout(rctx, limitOpTimeout)
			lost, err := renewScript.Run(cctx, l.rdb, keys, id, leaseTTL.Milliseconds()).Int()
			cancel()
			switch {
			case err != nil:
				l.log.Warn("concurrency lease not renewed; it expires unless the next renewal succeeds", append(telemetry.LogFields(ctx),
					zap.String("task_id", id), zap.String("task_type", typ), zap.Error(err))...)
			case lost > 0:
				l.log.Warn("concurrency lease lost: it expired before its renewal, so the cap may be exceeded while this task runs",
					append(telemetry.LogFields(ctx), zap.String("task_id", id), zap.String("task_type", typ))...)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// release drops id's leases in keys and, with wake, moves a task waiting
// for one of them back to its queue. Errors are logged: the leases expire
// on their own.
func (l *limiter) release(ctx context.Context, keys []string, id string, wake bool) {
	if len(keys) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limitOpTimeout)
	defer cancel()
	w := "0"
	if wake {
		w = "1"
	}
	res, err := releaseScript.Run(rctx, l.rdb, keys, id, w).Slice()
	if err != nil {
		l.log.Warn("concurrency lease not released; it expires", append(telemetry.LogFields(ctx), zap.String("task_id", id), zap.Error(err))...)
		return
	}
	// One task woken per set freed, the longest waiting first; an entry
	// whose task is no longer waiting in its retry set (it came back on
	// its own) is dropped and the next one tried.
	for i, set := range res {
		entries, _ := set.([]any)
		if len(entries) == 0 {
			continue // none waiting
		}
		entry, _ := entries[0].(string)
		for try := 1; !l.wake(rctx, entry) && try < maxWakeTries; try++ {
			popped, err := l.rdb.ZPopMin(rctx, keys[i]+":waiting", 1).Result()
			if err != nil || len(popped) == 0 {
				break
			}
			entry, _ = popped[0].Member.(string)
		}
	}
}

// wake moves the task of a waiting entry back to its queue if it is still
// waiting in its retry set, and reports whether it did.
func (l *limiter) wake(ctx context.Context, entry string) bool {
	queue, id, ok := strings.Cut(entry, "\x00")
	if !ok {
		return false
	}
	qk := "asynq:{" + queue + "}:"
	n, err := wakeScript.Run(ctx, l.rdb, []string{qk + "t:" + id, qk + "retry", qk + "pending"}, id).Int()
	if err != nil {
		l.log.Debug("waiting task not woken", zap.String("task_id", id), zap.Error(err))
		return false
	}
	return n == 1
}

// postponeDelay returns the server's RetryDelayFunc: the delay of a
// *tasks.PostponeError (which IsFailure does not count as a failure), else
// next's (nil: asynq's default).
func postponeDelay(next asynq.RetryDelayFunc) asynq.RetryDelayFunc {
	if next == nil {
		next = asynq.DefaultRetryDelayFunc
	}
	return func(n int, err error, t *asynq.Task) time.Duration {
		if pe, ok := tasks.AsPostpone(err); ok {
			return pe.Delay
		}
		return next(n, err, t)
	}
}
