// Package cachemgr is forgeq's cache manager: the one go-redis client of a
// process, shared by task handlers, the web process and asynq, with a
// synchronous and an asynchronous API over a key namespace.
//
// # Sync and async
//
// Task handlers call the sync methods ([Manager.Get], [Manager.Set],
// [Manager.Delete], [Manager.DeletePattern], [Manager.Ping]) and block for
// the answer. The web process calls the Async forms, which return a
// [Future] at once. Async calls made concurrently are coalesced into
// pipelines (auto-pipelining): what is queued while one batch is on the wire
// leaves as the next batch, so under load many calls share a round trip and
// a lone call still leaves at once. At most Options.AsyncMaxInFlight async
// calls are in flight; more block (backpressure). Async writes are
// write-behind: they survive the cancellation of the ctx that started them,
// and [Manager.Close] waits for every accepted call.
//
// # Key namespace
//
// Every key given to the manager is stored under Options.KeyPrefix
// (default "cache:"): Set("user:1") writes "cache:user:1". DeletePattern
// only scans inside the prefix, so DeletePattern("*") empties the cache and
// leaves asynq's queues ("asynq:...") alone. Keys beginning "__lock__:" are
// GetOrCompute's locks: the manager refuses them as keys and pattern deletes
// skip them. [Manager.Client] gives raw access without the prefix.
//
// # Compute once
//
// [Manager.GetOrCompute] is cache-aside with stampede protection: one
// computation per key at a time inside a process (singleflight) and across
// processes (a short Redis lock that the holder renews; the others wait for
// the value, and take over if the holder dies).
//
// # Near cache
//
// Options.NearCache (off by default) adds a bounded in-process tier for hot
// keys in front of Redis: [Manager.Get], [Manager.GetAsync] and [GetJSON]
// answer a key held there without a round trip. Redis keeps it fresh: one
// dedicated connection per node (per master on a cluster), named
// "forgeq-near:<KeyPrefix>", runs CLIENT TRACKING in BCAST mode on the key
// prefix, so a write by any process invalidates the key here, typically
// within a millisecond. This process's own Set, Delete and DeletePattern
// invalidate at once. Entries are served only while that connection
// answers its heartbeat: a silent or lost connection stops the tier within
// 250ms and flushes it. Servers without client tracking (miniredis,
// Redis < 6, most proxies) turn the tier off with an error log line, and
// reads go to Redis. [Manager.Stats] counts hits and misses per tier
// (Stats.Tiers, Stats.Near). docs/near-cache.md has the design.
//
// # JSON, rate limits and sessions
//
// [GetJSON], [SetJSON] and [GetOrComputeJSON] store Go values as JSON, so
// callers never hand-marshal. [Manager.Allow] is an atomic GCRA rate
// limiter (one Lua script: concurrent callers never exceed the limit, and
// its key always has a TTL). [Manager.CreateSession] and friends store
// sessions under 256-bit random ids with sliding expiry.
//
// # Counters
//
// [Manager.Stats] returns calls, hits, misses and errors per operation, the
// async calls in flight and how many pipelines they were coalesced into,
// and hits and misses per tier (near cache, Redis), for the metrics
// endpoint.
//
// # URLs
//
//	redis://[user[:password]@]host[:port][/db][?option=value...]
//	rediss://...                                  TLS (Options.TLSConfig for CA and client certificates)
//	unix://[user[:password]@]/path/to/socket[?db=N]
//	redis+sentinel://[user[:password]@]host:port[,host:port...]/master[/db][?sentinel_password=...]
//	redis+cluster://[user[:password]@]host:port[,host:port...]
//
// Query options are go-redis's (dial_timeout, read_timeout, ...). Errors and
// logs never contain the password.
//
// # Usage
//
//	m, err := cachemgr.New(cachemgr.Options{URL: "redis://localhost:6379"})
//	if err != nil { ... }
//	defer m.Close()
//	v, hit, err := m.GetOrCompute(ctx, "report:42", time.Hour, func(ctx context.Context) (string, error) {
//		return buildReport(ctx, 42)
//	})
package cachemgr
