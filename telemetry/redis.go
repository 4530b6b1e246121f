package telemetry

import (
	"fmt"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
)

// InstrumentRedis adds go-redis's OpenTelemetry hook (redisotel) to rdb when
// tracing is on: each command and pipeline made under a sampled span (such
// as the span of a task attempt, so the handler's cache calls) becomes a
// client span, a child of it, named after the command ("get", "evalsha",
// "redis.pipeline ..."). Commands made outside a trace, such as asynq's own
// polling and the cache manager's background work, make no span at all.
// The commands' arguments (keys and values) are not recorded.
//
// Call it once per client, before the client is used concurrently. It is a
// no-op when tracing is off. It returns an error for a client type redisotel
// does not support (those are *redis.Client, *redis.ClusterClient and
// *redis.Ring).
func (p *Provider) InstrumentRedis(rdb redis.UniversalClient) error {
	if !p.Enabled() {
		return nil
	}
	err := redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(p.redisTP),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
	)
	if err != nil {
		return fmt.Errorf("telemetry: instrument redis: %w", err)
	}
	return nil
}
