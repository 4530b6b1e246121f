package cachemgr

import (
	"sync/atomic"
	"time"
)

// Op names an operation of the manager in Stats.
type Op int

// The operations counted in Stats. Sync and async forms of an operation
// share one Op.
const (
	OpGet Op = iota
	OpSet
	OpDelete
	OpDeletePattern
	OpPing
	OpGetOrCompute
	OpRateLimit
	OpSession
	numOps
)

var opNames = [numOps]string{"get", "set", "delete", "delete_pattern", "ping", "get_or_compute", "rate_limit", "session"}

// String returns the snake_case name used in metrics and logs.
func (o Op) String() string {
	if o < 0 || o >= numOps {
		return "unknown"
	}
	return opNames[o]
}

// Ops lists every Op, in order.
func Ops() []Op {
	out := make([]Op, numOps)
	for i := range out {
		out[i] = Op(i)
	}
	return out
}

// OpStats counts the calls of one operation since the manager was created.
// Hits and Misses are counted by reads only (get, get_or_compute, session
// reads); Errors counts calls that returned an error other than ErrMiss.
type OpStats struct {
	Calls   uint64
	Hits    uint64
	Misses  uint64
	Errors  uint64
	Latency Latency
}

// LatencyBuckets are the upper bounds of the latency histogram buckets.
var LatencyBuckets = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// Latency is a histogram of how long the calls of one operation took, from
// the call to its result (for async calls: to the Future's resolution).
type Latency struct {
	Count uint64
	Sum   time.Duration
	// Buckets[i] counts the calls that took at most LatencyBuckets[i]
	// (cumulative, as Prometheus histograms are).
	Buckets [len(LatencyBuckets)]uint64
}

// Stats is a snapshot of the manager's counters.
type Stats struct {
	Ops           map[Op]OpStats
	AsyncInFlight int64  // accepted async calls not yet finished
	Computations  uint64 // compute functions run by GetOrCompute in this process
	Batches       uint64 // pipelines sent by the async side
	BatchedCalls  uint64 // async calls sent in those pipelines
	// Tiers counts the reads of Get, GetAsync and GetJSON by the tier that
	// answered them: TierNear (zero while the near cache is off) and
	// TierRedis. A read the near cache misses counts as a near miss and
	// then as a Redis hit or miss. Ops[OpGet] counts each read once.
	Tiers map[Tier]TierStats
	// Near describes the near cache (zero when it is off).
	Near NearStats
}

// Tier names a cache tier in Stats.Tiers and in metrics.
type Tier int

// The cache tiers.
const (
	TierRedis Tier = iota // Redis itself
	TierNear              // the near cache, in process memory
	numTiers
)

var tierNames = [numTiers]string{"redis", "near"}

// String returns the name used in metrics and logs: "redis" or "near".
func (t Tier) String() string {
	if t < 0 || t >= numTiers {
		return "unknown"
	}
	return tierNames[t]
}

// Tiers lists every Tier, in order.
func Tiers() []Tier { return []Tier{TierRedis, TierNear} }

// TierStats counts the reads one tier answered with a value (Hits) or
// without one (Misses).
type TierStats struct {
	Hits, Misses uint64
}

type opCounters struct {
	calls, hits, misses, errors atomic.Uint64
	count, sumNanos             atomic.Uint64
	buckets                     [len(LatencyBuckets)]atomic.Uint64
}

// took adds the latency of one call of op that started at start.
func (c *counters) took(op Op, start time.Time) {
	d := time.Since(start)
	oc := &c.ops[op]
	oc.count.Add(1)
	oc.sumNanos.Add(uint64(d))
	for i, le := range LatencyBuckets {
		if d <= le {
			oc.buckets[i].Add(1)
			break
		}
	}
}

type counters struct {
	ops          [numOps]opCounters
	inFlight     atomic.Int64
	computations atomic.Uint64
	batches      atomic.Uint64
	batched      atomic.Uint64
}

// record counts one finished call of op. hit reports, for reads, whether
// the key was found; err == ErrMiss counts as a miss, not an error.
func (c *counters) record(op Op, err error) {
	oc := &c.ops[op]
	oc.calls.Add(1)
	if err != nil && err != ErrMiss {
		oc.errors.Add(1)
	}
}

func (c *counters) read(op Op, err error) {
	oc := &c.ops[op]
	oc.calls.Add(1)
	switch {
	case err == nil:
		oc.hits.Add(1)
	case err == ErrMiss:
		oc.misses.Add(1)
	default:
		oc.errors.Add(1)
	}
}

// Stats returns a snapshot of the counters. It is safe for concurrent use
// and works after Close.
func (m *Manager) Stats() Stats {
	s := Stats{
		Ops:           make(map[Op]OpStats, numOps),
		AsyncInFlight: m.stats.inFlight.Load(),
		Computations:  m.stats.computations.Load(),
		Batches:       m.stats.batches.Load(),
		BatchedCalls:  m.stats.batched.Load(),
	}
	for i := range m.stats.ops {
		oc := &m.stats.ops[i]
		os := OpStats{Calls: oc.calls.Load(), Hits: oc.hits.Load(), Misses: oc.misses.Load(), Errors: oc.errors.Load()}
		os.Latency.Count = oc.count.Load()
		os.Latency.Sum = time.Duration(oc.sumNanos.Load())
		var cum uint64
		for j := range oc.buckets {
			cum += oc.buckets[j].Load()
			os.Latency.Buckets[j] = cum
		}
		s.Ops[Op(i)] = os
	}
	if m.near != nil {
		s.Near = m.near.stats()
	}
	get := s.Ops[OpGet]
	s.Tiers = map[Tier]TierStats{
		TierNear:  {Hits: s.Near.Hits, Misses: s.Near.Misses},
		TierRedis: {Hits: get.Hits - min(get.Hits, s.Near.Hits), Misses: get.Misses},
	}
	return s
}
