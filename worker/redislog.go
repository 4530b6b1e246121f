package worker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisLogEvery is how often at most the worker logs go-redis messages of
// one kind (one format): during an outage go-redis complains about every
// failed dial, many times a second.
const redisLogEvery = 5 * time.Second

// redisLogKinds bounds the kinds of message redisLog remembers; past it,
// it forgets them all and starts over.
const redisLogKinds = 256

// redisLogs is go-redis's logger in this process once a worker has run:
// run routes it to its own logger while it runs. It is installed with
// redis.SetLogger once, the first time a worker runs.
var redisLogs = newRedisLog(time.Now)

// redisLogInstall installs redisLogs, once.
var redisLogInstall sync.Once

// redisLog is a go-redis logger (redis.SetLogger) that writes go-redis's
// messages as zap warnings with the message in the redis_message field,
// so that a JSON log stays JSON, at most one per kind of message every
// redisLogEvery; the next one of its kind counts those dropped in the
// suppressed field. With no logger routed, it drops the messages. It is
// safe for concurrent use.
type redisLog struct {
	target atomic.Pointer[zap.Logger]
	now    func() time.Time

	mu   sync.Mutex
	last map[string]redisLogKind // by format
}

// redisLogKind is what redisLog remembers of a kind of message.
type redisLogKind struct {
	at         time.Time // when one was last logged
	suppressed int       // dropped since
}

func newRedisLog(now func() time.Time) *redisLog {
	return &redisLog{now: now, last: make(map[string]redisLogKind)}
}

// route sends go-redis's messages to log from now on, installing l as
// go-redis's logger if it is redisLogs, and returns the function that
// stops that: after it, they are dropped, unless another logger was routed
// since. A nil log drops them.
func (l *redisLog) route(log *zap.Logger) (unroute func()) {
	if l == redisLogs {
		redisLogInstall.Do(func() { redis.SetLogger(redisLogs) })
	}
	l.target.Store(log)
	return func() { l.target.CompareAndSwap(log, nil) }
}

// Printf logs one go-redis message.
func (l *redisLog) Printf(_ context.Context, format string, v ...any) {
	log := l.target.Load()
	if log == nil {
		return
	}
	now := l.now()
	l.mu.Lock()
	kind, seen := l.last[format]
	if seen && now.Sub(kind.at) < redisLogEvery {
		kind.suppressed++
		l.last[format] = kind
		l.mu.Unlock()
		return
	}
	if !seen && len(l.last) >= redisLogKinds {
		clear(l.last)
	}
	l.last[format] = redisLogKind{at: now}
	l.mu.Unlock()

	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	fields := []zap.Field{zap.String("redis_message", msg)}
	if kind.suppressed > 0 {
		fields = append(fields, zap.Int("suppressed", kind.suppressed))
	}
	log.Warn("go-redis", fields...)
}
