package cachemgr

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The near cache: an opt-in local tier in front of Redis for hot keys,
// kept fresh by Redis itself (client tracking, BCAST mode, on the key
// prefix). docs/near-cache.md has the design and the failure cases.
//
// A read (Get, GetAsync, GetJSON) looks in the local tier first. A hit is
// served only while the tracker of the key's Redis node holds a lease: a
// PONG on the tracking connection for a PING sent less than nearLease ago,
// which proves every invalidation for a write finished before that PING has
// been applied. A miss reads GET and PTTL in one round trip and fills the
// tier unless an invalidation or flush reached the key's shard in between.

const (
	// DefaultNearCacheTTL is how long a near cache entry lives at most
	// when NearCacheOptions.TTL is zero.
	DefaultNearCacheTTL = time.Minute
	// DefaultNearCacheMaxBytes bounds the near cache's memory when
	// NearCacheOptions.MaxBytes is zero.
	DefaultNearCacheMaxBytes = 64 << 20
	// NearCacheEntryOverhead is the bytes counted per entry against
	// NearCacheOptions.MaxBytes besides its key and value.
	NearCacheEntryOverhead = 64

	// nearHeartbeat is how often a tracker pings; nearLease how long a
	// PONG lets its node's entries be served. nearLease is the hard bound
	// on staleness when the tracking connection goes silent.
	nearHeartbeat = 50 * time.Millisecond
	nearLease     = 250 * time.Millisecond
	maxNearShards = 64
	// invalidateChannel is where Redis sends invalidations to a RESP2
	// client that redirects tracking to itself.
	invalidateChannel = "__redis__:invalidate"
)

// NearCacheOptions configure the near cache, a bounded in-process tier in
// front of Redis for hot keys (see the package doc). The zero value turns
// it off.
type NearCacheOptions struct {
	// MaxEntries bounds how many keys the near cache holds
	// (CACHE_NEAR_SIZE). 0, the default, turns the near cache off.
	MaxEntries int
	// MaxBytes bounds the memory the near cache holds, counted as key +
	// value + NearCacheEntryOverhead per entry (CACHE_NEAR_MAX_BYTES).
	// Default DefaultNearCacheMaxBytes (64 MiB). A value larger than its
	// share of MaxBytes is not cached.
	MaxBytes int64
	// TTL is how long an entry lives at most (CACHE_NEAR_TTL); it never
	// outlives the key's Redis TTL either. Invalidation, not the TTL, keeps
	// entries fresh: the TTL only bounds how long a cold entry stays.
	// Default DefaultNearCacheTTL (1 min).
	TTL time.Duration
}

func (o *NearCacheOptions) init() error {
	switch {
	case o.MaxEntries < 0:
		return fmt.Errorf("%w: NearCache.MaxEntries %d is negative", ErrInvalidArgument, o.MaxEntries)
	case o.MaxBytes < 0:
		return fmt.Errorf("%w: NearCache.MaxBytes %d is negative", ErrInvalidArgument, o.MaxBytes)
	case o.TTL < 0:
		return fmt.Errorf("%w: NearCache.TTL %v is negative", ErrInvalidArgument, o.TTL)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultNearCacheMaxBytes
	}
	if o.TTL == 0 {
		o.TTL = DefaultNearCacheTTL
	}
	return nil
}

// NearStats counts the near cache's work since the manager was created.
// All zero when the near cache is off.
type NearStats struct {
	// Enabled reports whether Options.NearCache turned the near cache on.
	Enabled bool
	// Live reports whether at least one tracking connection holds a lease,
	// so entries can be served. False on a server without CLIENT TRACKING
	// (miniredis, Redis < 6, most proxies): reads then always go to Redis.
	Live bool
	// Hits and Misses count reads of Get, GetAsync and GetJSON that the
	// near cache answered, or did not.
	Hits, Misses uint64
	// Entries and Bytes are what the near cache holds now (Bytes as
	// counted against NearCacheOptions.MaxBytes).
	Entries int
	Bytes   int64
	// Evictions counts entries dropped to stay within the bounds.
	Evictions uint64
	// Invalidations counts keys invalidated, by Redis or by this
	// process's own writes; Flushes counts whole-tier flushes (tracking
	// lost, FLUSHDB, DeletePattern).
	Invalidations, Flushes uint64
}

// nearCache is the local tier. Reads take a shard's read lock; fills,
// invalidations and evictions its write lock.
type nearCache struct {
	shards     []nearShard
	mask       uint32
	maxEntries int   // per shard
	maxBytes   int64 // per shard
	ttl        time.Duration
	base       time.Time // origin of now(); carries the monotonic clock
	prefix     string

	hits, misses, evictions, invalidations, flushes atomic.Uint64

	trackers trackers
}

type nearShard struct {
	mu    sync.RWMutex
	m     map[string]*nearEntry
	ring  []*nearEntry // CLOCK order
	hand  int
	bytes int64
	// seq changes, under mu, on every invalidation or flush of the shard.
	// A fill that read seq before its GET stores only if seq is unchanged.
	seq atomic.Uint64
	_   [40]byte // keep shards on separate cache lines
}

type nearEntry struct {
	key, val string
	expires  int64 // nanoseconds after nearCache.base
	size     int64
	tr       *tracker // the tracker of the key's node
	ref      atomic.Bool
	idx      int // in ring, under the shard's mu
}

func newNearCache(o NearCacheOptions, prefix string) *nearCache {
	n := 1
	for n < maxNearShards && n*2*64 <= o.MaxEntries {
		n *= 2
	}
	nc := &nearCache{
		shards:     make([]nearShard, n),
		mask:       uint32(n - 1),
		maxEntries: max(1, o.MaxEntries/n),
		maxBytes:   max(1, o.MaxBytes/int64(n)),
		ttl:        o.TTL,
		base:       time.Now(),
		prefix:     prefix,
	}
	for i := range nc.shards {
		nc.shards[i].m = make(map[string]*nearEntry)
	}
	return nc
}

// now is the monotonic time in nanoseconds after nc.base.
func (nc *nearCache) now() int64 { return int64(time.Since(nc.base)) }

func (nc *nearCache) shard(key string) *nearShard {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return &nc.shards[h&nc.mask]
}

// get returns key's value when the tier holds a fresh entry whose node's
// tracker holds a lease. It counts the hit or miss.
func (nc *nearCache) get(key string) (string, bool) { return nc.getAt(key, time.Now()) }

// getAt is get for a caller that has read the clock already.
func (nc *nearCache) getAt(key string, t time.Time) (string, bool) {
	s := nc.shard(key)
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	if e != nil {
		now := int64(t.Sub(nc.base))
		if now < e.expires && e.tr.live(now) {
			if !e.ref.Load() {
				e.ref.Store(true)
			}
			nc.hits.Add(1)
			return e.val, true
		}
	}
	nc.misses.Add(1)
	return "", false
}

// nearFill is what a miss needs to fill the tier once its reply arrives.
type nearFill struct {
	s   *nearShard
	seq uint64
	tr  *tracker
}

// prepare snapshots key's shard before the read that will fill it. tr is
// nil when the key's node has no live tracker: the read then fills nothing.
func (nc *nearCache) prepare(ctx context.Context, m *Manager, key string) nearFill {
	s := nc.shard(key)
	f := nearFill{s: s, seq: s.seq.Load()}
	if tr := nc.trackers.forKey(ctx, m, nc, m.prefix+key); tr != nil && tr.live(nc.now()) {
		f.tr = tr
	}
	return f
}

// fill stores val for key, read with the snapshot f, for at most the
// near TTL and the key's Redis TTL pttl (-1: none, -2: key gone).
func (nc *nearCache) fill(f nearFill, key, val string, pttl time.Duration) {
	if f.tr == nil || pttl == -2 || (pttl >= 0 && pttl < time.Millisecond) {
		return
	}
	size := int64(len(key)+len(val)) + NearCacheEntryOverhead
	if size > nc.maxBytes {
		return
	}
	now := nc.now()
	if !f.tr.live(now) {
		return
	}
	ttl := nc.ttl
	if pttl > 0 {
		ttl = min(ttl, pttl)
	}
	e := &nearEntry{key: key, val: val, expires: now + int64(ttl), size: size, tr: f.tr}
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq.Load() != f.seq {
		return // invalidated or flushed since the read: the value may be old
	}
	if old := s.m[key]; old != nil {
		s.remove(old)
	}
	for len(s.ring) > 0 && (len(s.ring) >= nc.maxEntries || s.bytes+size > nc.maxBytes) {
		s.evictOne()
		nc.evictions.Add(1)
	}
	e.idx = len(s.ring)
	s.ring = append(s.ring, e)
	s.m[key] = e
	s.bytes += size
}

// remove drops e; s.mu is held.
func (s *nearShard) remove(e *nearEntry) {
	delete(s.m, e.key)
	last := s.ring[len(s.ring)-1]
	s.ring[e.idx] = last
	last.idx = e.idx
	s.ring[len(s.ring)-1] = nil
	s.ring = s.ring[:len(s.ring)-1]
	s.bytes -= e.size
}

// evictOne drops one entry not read since the hand last passed it (CLOCK,
// an approximation of LRU that needs no write on a hit); s.mu is held and
// s.ring is not empty.
func (s *nearShard) evictOne() {
	for {
		if s.hand >= len(s.ring) {
			s.hand = 0
		}
		e := s.ring[s.hand]
		if e.ref.Load() {
			e.ref.Store(false)
			s.hand++
			continue
		}
		s.remove(e)
		return
	}
}

// invalidate drops key (as the caller gives it, without the prefix) and
// makes fills in flight for its shard give up.
func (nc *nearCache) invalidate(key string) {
	s := nc.shard(key)
	s.mu.Lock()
	s.seq.Add(1)
	if e := s.m[key]; e != nil {
		s.remove(e)
	}
	s.mu.Unlock()
	nc.invalidations.Add(1)
}

// invalidateFull is invalidate for a key as Redis names it.
func (nc *nearCache) invalidateFull(full string) {
	if len(full) >= len(nc.prefix) && full[:len(nc.prefix)] == nc.prefix {
		nc.invalidate(full[len(nc.prefix):])
	}
}

// flush empties the tier and makes every fill in flight give up.
func (nc *nearCache) flush() {
	for i := range nc.shards {
		s := &nc.shards[i]
		s.mu.Lock()
		s.seq.Add(1)
		clear(s.m)
		clear(s.ring)
		s.ring = s.ring[:0]
		s.bytes = 0
		s.mu.Unlock()
	}
	nc.flushes.Add(1)
}

// fence makes every fill in flight give up, keeping the entries.
func (nc *nearCache) fence() {
	for i := range nc.shards {
		s := &nc.shards[i]
		s.mu.Lock()
		s.seq.Add(1)
		s.mu.Unlock()
	}
}

func (nc *nearCache) stats() NearStats {
	st := NearStats{
		Enabled:       true,
		Live:          nc.trackers.anyLive(nc.now()),
		Hits:          nc.hits.Load(),
		Misses:        nc.misses.Load(),
		Evictions:     nc.evictions.Load(),
		Invalidations: nc.invalidations.Load(),
		Flushes:       nc.flushes.Load(),
	}
	for i := range nc.shards {
		s := &nc.shards[i]
		s.mu.RLock()
		st.Entries += len(s.ring)
		st.Bytes += s.bytes
		s.mu.RUnlock()
	}
	return st
}

// nearLoad is Get after a near cache miss: GET + PTTL in one round trip,
// and a fill of the tier.
func (m *Manager) nearLoad(ctx context.Context, key string) (string, error) {
	f := m.near.prepare(ctx, m, key)
	full := m.prefix + key
	var (
		get  *redis.StringCmd
		pttl *redis.DurationCmd
	)
	_, _ = m.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, full)
		pttl = p.PTTL(ctx, full)
		return nil
	})
	v, err := get.Result()
	if err == nil && pttl.Err() == nil {
		m.near.fill(f, key, v, pttl.Val())
	}
	return v, err
}

// nearWrote invalidates keys locally after this process wrote them, so
// that its next read sees its own write without waiting for Redis's
// invalidation. It runs whether the write succeeded or not.
func (m *Manager) nearWrote(keys ...string) {
	if m.near == nil {
		return
	}
	for _, k := range keys {
		m.near.invalidate(k)
	}
}

// nearWroteFull is nearWrote for keys with the prefix.
func (m *Manager) nearWroteFull(full []string) {
	if m.near == nil {
		return
	}
	for _, k := range full {
		m.near.invalidateFull(k)
	}
}
