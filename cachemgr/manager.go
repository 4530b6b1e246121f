package cachemgr

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/forgeq/forgeq/internal/redisurl"
)

// Manager is a process's cache: one go-redis client shared by task handlers
// (the sync methods), the web process (the Async methods) and asynq (through
// Client). A Manager is safe for concurrent use.
type Manager struct {
	rdb       redis.UniversalClient
	cluster   *redis.ClusterClient // rdb, when it is a cluster client
	ownClient bool
	opts      Options
	prefix    string
	log       *zap.Logger
	stats     counters

	// async side
	mu       sync.RWMutex // guards closed against wg.Add
	closed   atomic.Bool
	wg       sync.WaitGroup // accepted async calls
	sem      chan struct{}  // one token per accepted async call
	reqs     chan pipelined
	flushers sync.WaitGroup

	limiter *redis_rate.Limiter
	// opTimeout bounds each sync round trip (through deadlines), each
	// async pipeline and each queued async call's wait for one: the
	// client's socket timeout (0: unbounded, when it has none).
	opTimeout time.Duration
	deadlines deadlines // of sync round trips, opTimeout away
	flights   singleflight.Group
	flightCtx flightTable

	near *nearCache // nil when Options.NearCache is off
}

// New builds a Manager and its client from o.URL. It does not dial: the
// first call does. Errors wrap ErrInvalidArgument for bad options and never
// contain the URL's password.
func New(o Options) (*Manager, error) {
	if err := o.init(); err != nil {
		return nil, err
	}
	p, err := redisurl.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	if o.TLSConfig != nil && !p.TLS() {
		return nil, fmt.Errorf("%w: TLSConfig is set but URL %q does not use TLS (rediss://)", ErrInvalidArgument, redisurl.Redact(o.URL))
	}
	rdb := p.NewClient(redisurl.Settings{PoolSize: o.PoolSize, SocketTimeout: o.SocketTimeout, TLSConfig: o.TLSConfig})
	if err := nearSupported(rdb, o); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	m := newManager(rdb, o)
	m.ownClient = true
	return m, nil
}

// NewFromClient builds a Manager on an existing client, which the caller
// keeps owning: Close does not close it. The connection fields of o (URL,
// PoolSize, SocketTimeout, TLSConfig) are ignored.
func NewFromClient(rdb redis.UniversalClient, o Options) (*Manager, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidArgument)
	}
	if err := o.init(); err != nil {
		return nil, err
	}
	if err := nearSupported(rdb, o); err != nil {
		return nil, err
	}
	return newManager(rdb, o), nil
}

func newManager(rdb redis.UniversalClient, o Options) *Manager {
	m := &Manager{
		rdb:    rdb,
		opts:   o,
		prefix: o.KeyPrefix,
		log:    o.Logger,
		sem:    make(chan struct{}, o.AsyncMaxInFlight),
		reqs:   make(chan pipelined, o.AsyncMaxInFlight),
	}
	m.cluster, _ = rdb.(*redis.ClusterClient)
	m.limiter = redis_rate.NewLimiter(rdb)
	m.opTimeout = socketTimeout(rdb)
	m.deadlines.d = m.opTimeout
	if o.NearCache.MaxEntries > 0 {
		m.near = newNearCache(o.NearCache, o.KeyPrefix)
		m.near.trackers.log = o.Logger
	}
	m.startFlushers()
	return m
}

// nearSupported refuses a near cache on a client it cannot track: only a
// single-node (or Sentinel) client and a cluster client can.
func nearSupported(rdb redis.UniversalClient, o Options) error {
	if o.NearCache.MaxEntries == 0 {
		return nil
	}
	switch c := rdb.(type) {
	case *redis.Client:
		return nil
	case *redis.ClusterClient:
		// The trackers watch the masters: a read served by a replica that
		// has not applied a write yet would be filled after the write's
		// invalidation, and stay stale.
		if co := c.Options(); co.ReadOnly || co.RouteByLatency || co.RouteRandomly {
			return fmt.Errorf("%w: NearCache needs reads from the masters; the cluster client reads from replicas (read_only, route_by_latency or route_randomly)", ErrInvalidArgument)
		}
		return nil
	}
	return fmt.Errorf("%w: NearCache needs a *redis.Client or *redis.ClusterClient, not %T", ErrInvalidArgument, rdb)
}

// socketTimeout is the longer of rdb's read and write timeouts, or 0 when
// the client waits forever.
func socketTimeout(rdb redis.UniversalClient) time.Duration {
	var read, write time.Duration
	switch c := rdb.(type) {
	case *redis.Client:
		read, write = c.Options().ReadTimeout, c.Options().WriteTimeout
	case *redis.ClusterClient:
		read, write = c.Options().ReadTimeout, c.Options().WriteTimeout
	default:
		read, write = 3*time.Second, 3*time.Second // go-redis's defaults
	}
	if read <= 0 || write <= 0 { // -1 or -2: no timeout
		return 0
	}
	return max(read, write)
}

// OpTimeout is how long a call waits for Redis before it fails: the
// client's socket timeout (Options.SocketTimeout, REDIS_SOCKET_TIMEOUT), or
// 0 when the client has none. Each round trip of a sync call fails after
// about that long when Redis does not answer (see deadline.go),
// instead of being retried by go-redis on connections as dead as the
// first. An async call spends at most that long queued for a pipeline
// (else it fails unsent), and a pipeline at most that long on the wire. A caller that needs an
// async answer within one OpTimeout, as an HTTP handler does, waits with
// Future.WaitContext and a deadline.
func (m *Manager) OpTimeout() time.Duration { return m.opTimeout }

// Client returns the underlying client, for commands the manager does not
// wrap and for asynq's ...FromRedisClient constructors. Keys given to it
// directly are raw: no KeyPrefix is added.
func (m *Manager) Client() redis.UniversalClient { return m.rdb }

// KeyPrefix returns the prefix the manager puts in front of every key.
func (m *Manager) KeyPrefix() string { return m.prefix }

// Key returns the Redis key the manager uses for key.
func (m *Manager) Key(key string) string { return m.prefix + key }

// DefaultTTL returns the TTL used for ttl == 0 (NoExpiry for none).
func (m *Manager) DefaultTTL() time.Duration { return m.opts.DefaultTTL }

// Get returns the value stored under key. It returns ErrMiss when the key
// does not exist and ErrClosed after Close. With Options.NearCache on, a
// hot key is answered from the near cache without a round trip.
func (m *Manager) Get(ctx context.Context, key string) (string, error) {
	start := time.Now()
	defer m.stats.took(OpGet, start)
	if err := m.check(key); err != nil {
		m.stats.read(OpGet, err)
		return "", err
	}
	if m.near != nil {
		if v, ok := m.near.getAt(key, start); ok {
			m.stats.read(OpGet, nil)
			return v, nil
		}
	}
	ctx = m.roundTripAt(ctx, start)
	var (
		v   string
		err error
	)
	if m.near != nil {
		v, err = m.nearLoad(ctx, key)
	} else {
		v, err = m.rdb.Get(ctx, m.prefix+key).Result()
	}
	err = m.wrap("get", key, err)
	m.stats.read(OpGet, err)
	return v, err
}

// Set stores value under key for ttl: 0 means Options.DefaultTTL and
// NoExpiry means no expiry. value may be a string, []byte, number, bool,
// time.Time or encoding.BinaryMarshaler; use SetJSON for other types.
// Errors wrap ErrInvalidArgument for a bad key, TTL or value.
func (m *Manager) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	start := time.Now()
	defer m.stats.took(OpSet, start)
	v, exp, err := m.setArgs(key, value, ttl)
	if err == nil {
		ctx := m.roundTripAt(ctx, start)
		err = m.wrap("set", key, m.rdb.Set(ctx, m.prefix+key, v, exp).Err())
		m.nearWrote(key)
	}
	m.stats.record(OpSet, err)
	return err
}

// Delete removes keys and returns how many of them existed. On a cluster it
// sends one UNLINK per key in a pipeline (multi-key commands across slots
// fail there); elsewhere one UNLINK.
func (m *Manager) Delete(ctx context.Context, keys ...string) (int64, error) {
	defer m.stats.took(OpDelete, time.Now())
	n, err := m.delete(ctx, keys)
	m.nearWrote(keys...)
	m.stats.record(OpDelete, err)
	return n, err
}

func (m *Manager) delete(ctx context.Context, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, m.closedErr()
	}
	full, err := m.keys(keys)
	if err != nil {
		return 0, err
	}
	ctx = m.roundTrip(ctx)
	if m.cluster == nil || len(full) == 1 {
		n, err := m.rdb.Unlink(ctx, full...).Result()
		return n, m.wrap("delete", keys[0], err)
	}
	cmds := make([]*redis.IntCmd, len(full))
	_, err = m.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range full {
			cmds[i] = p.Unlink(ctx, k)
		}
		return nil
	})
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, m.wrap("delete", keys[0], err)
}

// Ping checks that Redis answers (on a cluster: every shard). It is the
// seed's test_connection.
func (m *Manager) Ping(ctx context.Context) error {
	if err := m.closedErr(); err != nil {
		m.stats.record(OpPing, err)
		return err
	}
	return m.runPing(ctx)
}

// runPing is Ping for a call already accepted.
func (m *Manager) runPing(ctx context.Context) error {
	defer m.stats.took(OpPing, time.Now())
	ctx = m.roundTrip(ctx)
	var err error
	if m.cluster != nil {
		err = m.cluster.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	} else {
		err = m.rdb.Ping(ctx).Err()
	}
	err = m.wrap("ping", "", err)
	m.stats.record(OpPing, err)
	return err
}

// Close stops accepting calls, waits for every accepted async call to
// finish, then closes the client if New created it. Calls after Close
// return ErrClosed; a second Close returns nil.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed.Load() {
		m.mu.Unlock()
		return nil
	}
	m.closed.Store(true)
	m.mu.Unlock()

	m.wg.Wait()
	close(m.reqs)
	m.flushers.Wait()
	if m.near != nil {
		m.near.trackers.close()
	}
	if m.ownClient {
		if err := m.rdb.Close(); err != nil {
			return fmt.Errorf("cachemgr: close: %w", err)
		}
	}
	return nil
}

func (m *Manager) closedErr() error {
	if m.closed.Load() {
		return ErrClosed
	}
	return nil
}

// check validates a key and reports ErrClosed after Close.
func (m *Manager) check(key string) error {
	if m.closed.Load() {
		return ErrClosed
	}
	return validKey(key)
}

// validKey refuses the empty key and the keys of GetOrCompute's locks.
func validKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidArgument)
	case strings.HasPrefix(key, lockSegment):
		return fmt.Errorf("%w: key %q: keys beginning %q are reserved for GetOrCompute's locks", ErrInvalidArgument, key, lockSegment)
	}
	return nil
}

func (m *Manager) keys(keys []string) ([]string, error) {
	full := make([]string, len(keys))
	for i, k := range keys {
		if err := m.check(k); err != nil {
			return nil, err
		}
		full[i] = m.prefix + k
	}
	return full, nil
}

// expiry maps the manager's TTL convention onto go-redis's (0: none).
func (m *Manager) expiry(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		ttl = m.opts.DefaultTTL
	}
	switch {
	case ttl == NoExpiry:
		return 0, nil
	case ttl < 0:
		return 0, fmt.Errorf("%w: negative TTL %v (use NoExpiry for none)", ErrInvalidArgument, ttl)
	case ttl < time.Millisecond:
		return 0, fmt.Errorf("%w: TTL %v is below Redis's 1ms resolution", ErrInvalidArgument, ttl)
	}
	return ttl, nil
}

func (m *Manager) setArgs(key string, value any, ttl time.Duration) (any, time.Duration, error) {
	if err := m.check(key); err != nil {
		return nil, 0, err
	}
	exp, err := m.expiry(ttl)
	if err != nil {
		return nil, 0, err
	}
	v, err := encodeValue(value)
	if err != nil {
		return nil, 0, fmt.Errorf("cachemgr: set %q: %w", key, err)
	}
	return v, exp, nil
}

// encodeValue checks value up front, so a bad value fails its own call and
// never the pipeline it would have shared with others.
func encodeValue(value any) (any, error) {
	switch v := value.(type) {
	case string, []byte, bool,
		int, int8, int16, int32, int64,
		uint, uint8, uint16, uint32, uint64,
		float32, float64, time.Time, time.Duration, net.IP:
		return v, nil
	case encoding.BinaryMarshaler:
		b, err := v.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("%w: marshal %T: %v", ErrInvalidArgument, value, err)
		}
		return b, nil
	case nil:
		return nil, fmt.Errorf("%w: nil value", ErrInvalidArgument)
	default:
		return nil, fmt.Errorf("%w: unsupported value type %T (use SetJSON)", ErrInvalidArgument, value)
	}
}

// wrap converts go-redis errors: redis.Nil becomes ErrMiss, a closed client
// ErrClosed, anything else is prefixed with the operation and key.
func (m *Manager) wrap(op, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return ErrMiss
	case errors.Is(err, redis.ErrClosed) || m.closed.Load() && strings.Contains(err.Error(), "closed"):
		return ErrClosed
	case key == "":
		return fmt.Errorf("cachemgr: %s: %w", op, err)
	default:
		return fmt.Errorf("cachemgr: %s %q: %w", op, key, err)
	}
}
