package cachemgr

import (
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// NoExpiry, passed as a TTL, stores a key without expiry. As
// Options.DefaultTTL it makes ttl == 0 mean "no expiry" too.
const NoExpiry time.Duration = -1

// The defaults applied by New and NewFromClient to zero Options fields.
const (
	DefaultKeyPrefix        = "cache:"
	DefaultTTL              = time.Hour
	DefaultAsyncMaxInFlight = 10000
	DefaultAsyncPipelines   = 1
	DefaultLockTTL          = 10 * time.Second
	defaultMaxBatch         = 512
)

// asynqPrefix is asynq's key namespace, which the cache must never reach.
const asynqPrefix = "asynq:"

// Options configure a Manager. The zero value of every field means "use the
// default".
type Options struct {
	// URL is the Redis URL (REDIS_CONNECTION_URL); see the package doc for
	// the forms. Default redis://127.0.0.1:6379. Ignored by NewFromClient.
	URL string
	// PoolSize is the connection pool size (REDIS_POOL_SIZE). Default:
	// go-redis's, 10 per CPU. Ignored by NewFromClient.
	PoolSize int
	// SocketTimeout bounds dial, read and write (REDIS_SOCKET_TIMEOUT).
	// Default: go-redis's (5s dial, 3s read/write). Ignored by NewFromClient.
	SocketTimeout time.Duration
	// TLSConfig supplies CA, client certificate and verification settings
	// for a rediss:// URL. Ignored by NewFromClient.
	TLSConfig *tls.Config

	// DefaultTTL is used when a call passes ttl == 0 (REDIS_DEFAULT_TTL).
	// Default 1h; NoExpiry for none.
	DefaultTTL time.Duration
	// KeyPrefix is prepended to every key (REDIS_KEY_PREFIX). Default
	// "cache:". It may not overlap asynq's "asynq:" namespace.
	KeyPrefix string

	// AsyncMaxInFlight bounds the async calls accepted but not finished;
	// further calls block until one finishes or their ctx ends. Default 10000.
	AsyncMaxInFlight int
	// AsyncPipelines is how many pipelines the async side keeps on the wire
	// at once. Default 1: calls made while a pipeline is on the wire leave
	// together in the next, and with more pipelines they spread over
	// smaller ones (at 50 concurrent callers on loopback, 18 calls per
	// pipeline with 1, 6 with 2, and a third less throughput; see
	// BENCHMARKS.md). More can help when one pipeline's round trip is long
	// next to the time to send it, as over a slow network.
	AsyncPipelines int
	// LockTTL is the lifetime of GetOrCompute's cross-process lock; the
	// holder renews it while computing, so it only matters when the holder
	// dies. Default 10s.
	LockTTL time.Duration

	// NearCache turns on and bounds the near cache, an in-process tier for
	// hot keys that Redis keeps fresh through client tracking. Off by
	// default (NearCache.MaxEntries == 0); see NearCacheOptions and the
	// package doc.
	NearCache NearCacheOptions

	// Logger receives failures nobody may be waiting for (write-behind
	// sets, lock renewals). Default: no logging.
	Logger *zap.Logger
}

func (o *Options) init() error {
	if o.URL == "" {
		o.URL = "redis://127.0.0.1:6379"
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if strings.HasPrefix(asynqPrefix, o.KeyPrefix) || strings.HasPrefix(o.KeyPrefix, asynqPrefix) {
		return fmt.Errorf("%w: KeyPrefix %q overlaps asynq's key namespace %q", ErrInvalidArgument, o.KeyPrefix, asynqPrefix)
	}
	switch {
	case o.DefaultTTL == 0:
		o.DefaultTTL = DefaultTTL
	case o.DefaultTTL < 0 && o.DefaultTTL != NoExpiry:
		return fmt.Errorf("%w: DefaultTTL %v is negative (use NoExpiry for none)", ErrInvalidArgument, o.DefaultTTL)
	}
	if o.PoolSize < 0 {
		return fmt.Errorf("%w: PoolSize %d is negative", ErrInvalidArgument, o.PoolSize)
	}
	if o.SocketTimeout < 0 {
		return fmt.Errorf("%w: SocketTimeout %v is negative", ErrInvalidArgument, o.SocketTimeout)
	}
	if o.AsyncMaxInFlight < 0 {
		return fmt.Errorf("%w: AsyncMaxInFlight %d is negative", ErrInvalidArgument, o.AsyncMaxInFlight)
	}
	if o.AsyncMaxInFlight == 0 {
		o.AsyncMaxInFlight = DefaultAsyncMaxInFlight
	}
	if o.AsyncPipelines < 0 {
		return fmt.Errorf("%w: AsyncPipelines %d is negative", ErrInvalidArgument, o.AsyncPipelines)
	}
	if o.AsyncPipelines == 0 {
		o.AsyncPipelines = DefaultAsyncPipelines
	}
	switch {
	case o.LockTTL == 0:
		o.LockTTL = DefaultLockTTL
	case o.LockTTL < 10*time.Millisecond:
		return fmt.Errorf("%w: LockTTL %v is below 10ms", ErrInvalidArgument, o.LockTTL)
	}
	if err := o.NearCache.init(); err != nil {
		return err
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}
