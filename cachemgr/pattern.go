package cachemgr

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// scanCount is the COUNT hint of each SCAN step, and so the size of the
// UNLINK batches.
const scanCount = 500

// DeletePattern deletes every key under the manager's prefix whose remainder
// matches the glob pattern, and returns how many it deleted. It walks the
// keyspace with SCAN and deletes each batch with UNLINK (never KEYS), on
// every master of a cluster. Because the prefix is matched literally, the
// pattern "*" deletes every cache key and nothing else: asynq's keys are
// never touched, nor are GetOrCompute's locks (they expire on their own).
// An empty pattern wraps ErrInvalidArgument.
//
// Keys written while the scan runs may or may not be deleted, as SCAN
// guarantees only keys present for the whole walk. With Options.NearCache
// on, the whole near cache is flushed when the walk ends.
func (m *Manager) DeletePattern(ctx context.Context, pattern string) (int64, error) {
	if err := m.closedErr(); err != nil {
		m.stats.record(OpDeletePattern, err)
		return 0, err
	}
	return m.runDeletePattern(ctx, pattern)
}

// runDeletePattern is DeletePattern for a call already accepted.
func (m *Manager) runDeletePattern(ctx context.Context, pattern string) (int64, error) {
	defer m.stats.took(OpDeletePattern, time.Now())
	n, err := m.deletePattern(ctx, pattern)
	if m.near != nil && pattern != "" {
		// Redis invalidates each deleted key too, but this process must
		// not wait for that to see its own delete.
		m.near.flush()
	}
	m.stats.record(OpDeletePattern, err)
	return n, err
}

func (m *Manager) deletePattern(ctx context.Context, pattern string) (int64, error) {
	if pattern == "" {
		return 0, fmt.Errorf("%w: empty pattern", ErrInvalidArgument)
	}
	match := escapeGlob(m.prefix) + pattern
	if m.cluster == nil {
		n, err := m.scanUnlink(ctx, m.rdb, match, false)
		return n, m.wrap("delete pattern", pattern, err)
	}
	var total atomic.Int64
	err := m.cluster.ForEachMaster(ctx, func(ctx context.Context, shard *redis.Client) error {
		n, err := m.scanUnlink(ctx, shard, match, true)
		total.Add(n)
		return err
	})
	return total.Load(), m.wrap("delete pattern", pattern, err)
}

// scanUnlink deletes the keys of one node that match. perKey sends one
// UNLINK per key in a pipeline, as a cluster node needs when keys of one
// batch fall into different slots. Each round trip, not the walk, is
// bounded by OpTimeout.
func (m *Manager) scanUnlink(ctx context.Context, c redis.Cmdable, match string, perKey bool) (int64, error) {
	var (
		cursor uint64
		total  int64
	)
	for {
		rctx := m.roundTrip(ctx)
		keys, next, err := c.Scan(rctx, cursor, match, scanCount).Result()
		if err != nil {
			return total, err
		}
		keys = m.withoutLocks(keys)
		if len(keys) > 0 {
			rctx := m.roundTrip(ctx)
			n, err := unlink(rctx, c, keys, perKey)
			total += n
			if err != nil {
				return total, err
			}
		}
		if next == 0 {
			return total, nil
		}
		cursor = next
	}
}

// withoutLocks drops GetOrCompute's locks from keys, in place: a pattern
// delete during a computation must not let another process start the same
// computation. Locks expire on their own within Options.LockTTL.
func (m *Manager) withoutLocks(keys []string) []string {
	locks := m.prefix + lockSegment
	return slices.DeleteFunc(keys, func(k string) bool { return strings.HasPrefix(k, locks) })
}

func unlink(ctx context.Context, c redis.Cmdable, keys []string, perKey bool) (int64, error) {
	if !perKey {
		return c.Unlink(ctx, keys...).Result()
	}
	cmds := make([]*redis.IntCmd, len(keys))
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Unlink(ctx, k)
		}
		return nil
	})
	var n int64
	for _, cmd := range cmds {
		n += cmd.Val()
	}
	return n, err
}

// escapeGlob makes s match itself literally in a Redis glob pattern.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
