package worker

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/forgeq/forgeq/schedule"
)

// The dashboard's Schedulers page lists the entries of asynq's
// schedulers: the sorted set asynq:schedulers holds the key of each
// scheduler's entry list, scored by when it expires, and that list holds
// one SchedulerEntry protobuf message per entry (asynq's
// internal/proto/asynq.proto). Every replica publishes the entries it runs
// under the one scheduler id "forgeq", so the page lists each entry once
// however many replicas run; they agree on the ticks, so it does not
// matter which one wrote last. Each enqueued tick is recorded in asynq's
// history of the entry (its id is the entry's name), which the page shows
// too.
const (
	// boardSchedulers is asynq's sorted set of scheduler entry lists.
	boardSchedulers = "asynq:schedulers"
	// boardKey is forgeq's entry list.
	boardKey = "asynq:schedulers:{forgeq}"
	// boardTTL is how long the list outlives the last replica that
	// wrote it.
	boardTTL = 30 * time.Second
	// boardEvery is how often a replica rewrites the list when nothing
	// changed; boardMinGap the least time between two writes for new
	// previous ticks alone.
	boardEvery  = 5 * time.Second
	boardMinGap = time.Second
	// boardHistory is how many enqueue events are kept per entry, as
	// asynq keeps.
	boardHistory = 1000
)

// board publishes a scheduler's entries where the dashboard reads them.
type board struct {
	rdb       redis.UniversalClient
	log       *zap.Logger
	published bool      // the list was written and not cleared since
	last      time.Time // last write
	changed   bool      // the entries changed since the last write
	dirty     bool      // a previous tick changed since the last write
	failing   bool      // the last write failed (logged once)
}

func newBoard(rdb redis.UniversalClient, log *zap.Logger) *board {
	return &board{rdb: rdb, log: log, changed: true}
}

// publish writes the entries with their next and previous ticks when they
// changed, or when boardEvery has passed.
func (b *board) publish(ctx context.Context, now time.Time, entries []*periodic, next []time.Time, prev map[string]time.Time) {
	since := now.Sub(b.last)
	if !b.changed && !(b.dirty && since >= boardMinGap) && since < boardEvery {
		return
	}
	var err error
	if len(entries) == 0 {
		if b.published {
			_, err = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, boardSchedulers, boardKey)
				p.Del(ctx, boardKey)
				return nil
			})
		}
	} else {
		msgs := make([]any, len(entries))
		for i, e := range entries {
			msgs[i] = encodeBoardEntry(e, next[i], prev[e.name])
		}
		// The sorted set and the list may be on different cluster
		// slots: two round trips.
		err = b.rdb.ZAdd(ctx, boardSchedulers, redis.Z{Score: float64(now.Add(boardTTL).Unix()), Member: boardKey}).Err()
		if err == nil {
			_, err = b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, boardKey)
				p.RPush(ctx, boardKey, msgs...)
				p.Expire(ctx, boardKey, boardTTL)
				return nil
			})
		}
	}
	if err != nil {
		if !b.failing && ctx.Err() == nil {
			b.log.Warn("schedule entries not published to the dashboard", zap.Error(err))
		}
		b.failing = true
		b.last = now // try again in boardEvery
		return
	}
	if b.failing {
		b.log.Info("schedule entries published to the dashboard again")
	}
	b.failing = false
	b.published = len(entries) > 0
	b.last, b.changed, b.dirty = now, false, false
}

// record adds the enqueue of e's tick to its history.
func (b *board) record(ctx context.Context, e *periodic, id string, tick, at time.Time) {
	key := schedule.HistoryKeyPrefix + e.name
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByRank(ctx, key, 0, -boardHistory)
		p.ZAdd(ctx, key, redis.Z{Score: float64(tick.Unix()), Member: encodeBoardEvent(id, at)})
		return nil
	})
	if err != nil && ctx.Err() == nil {
		b.log.Debug("schedule history not recorded", zap.String("schedule", e.name), zap.Error(err))
	}
}

// encodeBoardEntry encodes e as asynq's SchedulerEntry message:
//
//	1 id string, 2 spec string, 3 task_type string, 4 task_payload bytes,
//	5 enqueue_options repeated string, 6 next_enqueue_time and
//	7 prev_enqueue_time google.protobuf.Timestamp
//
// A zero prev is written as asynq writes it (the Timestamp of Go's zero
// time), which the dashboard shows as never.
func encodeBoardEntry(e *periodic, next, prev time.Time) []byte {
	var b []byte
	b = appendString(b, 1, e.name)
	b = appendString(b, 2, e.spec)
	b = appendString(b, 3, e.typ)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, e.task.Payload())
	for _, o := range e.opts {
		b = appendString(b, 5, o)
	}
	b = appendTimestamp(b, 6, next)
	b = appendTimestamp(b, 7, prev)
	return b
}

// encodeBoardEvent encodes asynq's SchedulerEnqueueEvent message: 1
// task_id string, 2 enqueue_time Timestamp.
func encodeBoardEvent(id string, at time.Time) []byte {
	return appendTimestamp(appendString(nil, 1, id), 2, at)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendTimestamp appends t as a google.protobuf.Timestamp (1 seconds
// int64, 2 nanos int32) in field num.
func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	var m []byte
	if s := t.Unix(); s != 0 {
		m = protowire.AppendTag(m, 1, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		m = protowire.AppendTag(m, 2, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(n))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// boardOptions returns the enqueue options the dashboard shows for an
// entry, in asynq's text form (which asynq's inspector parses back).
func boardOptions(defaults []asynq.Option, extra []asynq.Option, queue string, retention time.Duration) []string {
	var out []string
	for _, o := range append(append([]asynq.Option(nil), defaults...), extra...) {
		switch o.Type() {
		case asynq.QueueOpt, asynq.RetentionOpt, asynq.TaskIDOpt:
			continue
		}
		out = append(out, o.String())
	}
	return append(out, asynq.Queue(queue).String(), asynq.Retention(retention).String())
}
