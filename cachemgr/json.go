package cachemgr

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"
)

// GetJSON reads key and decodes its JSON value into a T. It returns ErrMiss
// when the key does not exist, an error wrapping ErrDecode when the value
// does not decode into a T, and otherwise the errors of Manager.Get
// (ErrClosed, ErrInvalidArgument for an empty key, Redis errors). It is
// safe for concurrent use.
func GetJSON[T any](ctx context.Context, m *Manager, key string) (T, error) {
	s, err := m.Get(ctx, key)
	if err != nil {
		var zero T
		return zero, err
	}
	return decodeJSON[T](key, s)
}

// SetJSON stores the JSON encoding of v under key for ttl, with the TTL
// convention of Manager.Set (0: Options.DefaultTTL, NoExpiry: none). A v
// that encoding/json cannot marshal (a channel, a func, a cyclic value, a
// failing MarshalJSON) wraps ErrInvalidArgument, as do a bad key or TTL;
// the other errors are Manager.Set's. It is safe for concurrent use.
func SetJSON(ctx context.Context, m *Manager, key string, v any, ttl time.Duration) error {
	b, err := marshalJSON(m, key, v)
	if err != nil {
		m.stats.record(OpSet, err)
		return err
	}
	return m.Set(ctx, key, b, ttl)
}

// SetJSONAsync is SetJSON on the async side: v is marshalled before it
// returns (so a later change to v does not leak into the cache), and the
// write is write-behind like Manager.SetAsync. Errors arrive in the Future.
func SetJSONAsync(ctx context.Context, m *Manager, key string, v any, ttl time.Duration) *Future[struct{}] {
	b, err := marshalJSON(m, key, v)
	if err != nil {
		m.stats.record(OpSet, err)
		return failedFuture[struct{}](err)
	}
	return m.SetAsync(ctx, key, b, ttl)
}

// GetJSONAsync is GetJSON on the async side. The read shares the async
// pipelines with Manager.GetAsync (no goroutine of its own); the value is
// decoded when the reply arrives, and errors, ErrDecode included, arrive in
// the Future.
func GetJSONAsync[T any](ctx context.Context, m *Manager, key string) *Future[T] {
	if err := m.check(key); err != nil {
		m.stats.read(OpGet, err)
		return failedFuture[T](err)
	}
	if err := m.accept(ctx); err != nil {
		m.stats.read(OpGet, err)
		return failedFuture[T](err)
	}
	r := &getJSONReq[T]{start: time.Now(), Future: Future[T]{done: make(chan struct{})}, ctx: ctx, key: key, full: m.prefix + key}
	m.enqueue(r)
	return &r.Future
}

// getJSONReq is getReq with the decode done in finish, so GetJSONAsync
// needs no goroutine to turn a Future[string] into a Future[T].
type getJSONReq[T any] struct {
	start time.Time
	Future[T]
	ctx       context.Context
	key, full string
	cmd       *redis.StringCmd
}

func (r *getJSONReq[T]) queue(m *Manager, p redis.Pipeliner) bool {
	if err := m.unsent(r.ctx, OpGet, "get", r.key, r.start); err != nil {
		m.settle()
		var zero T
		r.resolve(zero, err)
		return false
	}
	r.cmd = p.Get(r.ctx, r.full)
	return true
}

func (r *getJSONReq[T]) finish(m *Manager) {
	s, err := r.cmd.Result()
	err = m.wrap("get", r.key, err)
	m.stats.read(OpGet, err)
	m.stats.took(OpGet, r.start)
	if err != nil {
		var zero T
		r.resolve(zero, err)
		return
	}
	r.resolve(decodeJSON[T](r.key, s))
}

// GetOrComputeJSON is Manager.GetOrCompute for a T stored as JSON: on a
// miss it runs compute, stores the JSON encoding of its result for ttl and
// returns it; hit reports whether the value came from the cache. Both paths
// return the value decoded from the JSON that is (or would be) cached, so
// hits and misses look the same to the caller (fields that do not survive
// JSON are zero either way).
//
// Concurrent calls for one key share a single computation, in the process
// and across processes (see Manager.GetOrCompute), so they must agree on T.
// Errors: those of Manager.GetOrCompute (compute's error wrapped, ErrClosed,
// ErrInvalidArgument, Redis errors); ErrInvalidArgument when compute's
// result cannot be marshalled (nothing is stored); ErrDecode when the
// cached value does not decode into a T. It is safe for concurrent use.
func GetOrComputeJSON[T any](ctx context.Context, m *Manager, key string, ttl time.Duration,
	compute func(context.Context) (T, error)) (T, bool, error) {
	s, hit, err := m.GetOrCompute(ctx, key, ttl, func(ctx context.Context) (string, error) {
		v, err := compute(ctx)
		if err != nil {
			return "", err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("%w: marshal %s: %w", ErrInvalidArgument, typeName[T](), err)
		}
		return string(b), nil
	})
	if err != nil {
		var zero T
		return zero, hit, err
	}
	v, err := decodeJSON[T](key, s)
	return v, hit, err
}

// marshalJSON checks the manager and key first, so that a closed manager
// reports ErrClosed whatever v is.
func marshalJSON(m *Manager, key string, v any) ([]byte, error) {
	if err := m.check(key); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cachemgr: set %q: %w: marshal %T: %w", key, ErrInvalidArgument, v, err)
	}
	return b, nil
}

func decodeJSON[T any](key, s string) (T, error) {
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		var zero T
		return zero, fmt.Errorf("%w %q into %s: %w", ErrDecode, key, typeName[T](), err)
	}
	return v, nil
}

// typeName names T even when it is an interface type, where %T of a zero
// value would print <nil>.
func typeName[T any]() string { return reflect.TypeFor[T]().String() }
