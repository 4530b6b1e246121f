package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/forgeq/forgeq/cachemgr"
)

// cacheCollector turns cachemgr.Manager.Stats into metrics at scrape time,
// so the manager's counters are the only bookkeeping.
type cacheCollector struct {
	m *cachemgr.Manager

	calls, hits, misses, errors *prometheus.Desc
	duration                    *prometheus.Desc
	inFlight                    *prometheus.Desc
	computations                *prometheus.Desc
	pipelines, pipelinedCalls   *prometheus.Desc
	tierHits, tierMisses        *prometheus.Desc
	nearEntries, nearBytes      *prometheus.Desc
	nearEvictions, nearInvals   *prometheus.Desc
	nearFlushes, nearLive       *prometheus.Desc

	bounds []float64 // cachemgr.LatencyBuckets in seconds
}

func newCacheCollector(ns string, m *cachemgr.Manager) *cacheCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "cache", name), help, labels, nil)
	}
	c := &cacheCollector{
		m:              m,
		calls:          desc("calls_total", "Calls of a cache operation, sync and async.", "op"),
		hits:           desc("hits_total", "Reads of a cache operation that found their key.", "op"),
		misses:         desc("misses_total", "Reads of a cache operation that missed their key.", "op"),
		errors:         desc("errors_total", "Calls of a cache operation that failed (a miss is not an error).", "op"),
		duration:       desc("operation_duration_seconds", "Time from a cache call to its result (for async calls, to the future's resolution).", "op"),
		inFlight:       desc("async_in_flight", "Accepted async cache calls not yet finished."),
		computations:   desc("computations_total", "Compute functions run by GetOrCompute in this process."),
		pipelines:      desc("pipelines_total", "Pipelines sent by the async side of the cache."),
		pipelinedCalls: desc("pipelined_calls_total", "Async cache calls sent in pipelines."),
		tierHits:       desc("tier_hits_total", "Cache reads (Get, GetAsync, GetJSON) answered with a value by a tier: near (in process) or redis.", "tier"),
		tierMisses:     desc("tier_misses_total", "Cache reads (Get, GetAsync, GetJSON) a tier could not answer: a near miss goes on to redis.", "tier"),
		nearEntries:    desc("near_entries", "Entries held by the near cache."),
		nearBytes:      desc("near_bytes", "Bytes held by the near cache (key + value + per-entry overhead)."),
		nearEvictions:  desc("near_evictions_total", "Near cache entries evicted to stay within its bounds."),
		nearInvals:     desc("near_invalidations_total", "Near cache keys invalidated, by Redis or by this process's writes."),
		nearFlushes:    desc("near_flushes_total", "Whole near cache flushes (tracking lost, FLUSHDB, DeletePattern)."),
		nearLive:       desc("near_live", "1 while the near cache's tracking connection holds a lease and entries may be served, else 0."),
		bounds:         make([]float64, len(cachemgr.LatencyBuckets)),
	}
	for i, le := range cachemgr.LatencyBuckets {
		c.bounds[i] = le.Seconds()
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.calls, c.hits, c.misses, c.errors, c.duration,
		c.inFlight, c.computations, c.pipelines, c.pipelinedCalls, c.tierHits, c.tierMisses,
		c.nearEntries, c.nearBytes, c.nearEvictions, c.nearInvals, c.nearFlushes, c.nearLive} {
		ch <- d
	}
}

// Collect implements prometheus.Collector with one Stats snapshot.
func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.Stats()
	for _, op := range cachemgr.Ops() {
		st := s.Ops[op]
		name := op.String()
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(st.Calls), name)
		ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(st.Hits), name)
		ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(st.Misses), name)
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.Errors), name)
		buckets := make(map[float64]uint64, len(c.bounds))
		for i, le := range c.bounds {
			buckets[le] = st.Latency.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(c.duration, st.Latency.Count, st.Latency.Sum.Seconds(), buckets, name)
	}
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(s.AsyncInFlight))
	ch <- prometheus.MustNewConstMetric(c.computations, prometheus.CounterValue, float64(s.Computations))
	ch <- prometheus.MustNewConstMetric(c.pipelines, prometheus.CounterValue, float64(s.Batches))
	ch <- prometheus.MustNewConstMetric(c.pipelinedCalls, prometheus.CounterValue, float64(s.BatchedCalls))
	for _, t := range cachemgr.Tiers() {
		ts := s.Tiers[t]
		ch <- prometheus.MustNewConstMetric(c.tierHits, prometheus.CounterValue, float64(ts.Hits), t.String())
		ch <- prometheus.MustNewConstMetric(c.tierMisses, prometheus.CounterValue, float64(ts.Misses), t.String())
	}
	if !s.Near.Enabled {
		return
	}
	live := 0.0
	if s.Near.Live {
		live = 1
	}
	ch <- prometheus.MustNewConstMetric(c.nearEntries, prometheus.GaugeValue, float64(s.Near.Entries))
	ch <- prometheus.MustNewConstMetric(c.nearBytes, prometheus.GaugeValue, float64(s.Near.Bytes))
	ch <- prometheus.MustNewConstMetric(c.nearEvictions, prometheus.CounterValue, float64(s.Near.Evictions))
	ch <- prometheus.MustNewConstMetric(c.nearInvals, prometheus.CounterValue, float64(s.Near.Invalidations))
	ch <- prometheus.MustNewConstMetric(c.nearFlushes, prometheus.CounterValue, float64(s.Near.Flushes))
	ch <- prometheus.MustNewConstMetric(c.nearLive, prometheus.GaugeValue, live)
}
