package cachemgr

import "sync/atomic"

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
	Calls  uint64
	Hits   uint64
	Misses uint64
	Errors uint64
}

// Stats is a snapshot of the manager's counters.
type Stats struct {
	Ops           map[Op]OpStats
	AsyncInFlight int64  // accepted async calls not yet finished
	Computations  uint64 // compute functions run by GetOrCompute in this process
	Batches       uint64 // pipelines sent by the async side
	BatchedCalls  uint64 // async calls sent in those pipelines
}

type opCounters struct {
	calls, hits, misses, errors atomic.Uint64
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
		s.Ops[Op(i)] = OpStats{Calls: oc.calls.Load(), Hits: oc.hits.Load(), Misses: oc.misses.Load(), Errors: oc.errors.Load()}
	}
	return s
}
