package telemetry

import (
	"fmt"
	"slices"
	"strings"

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
// The commands go-redis sends to set a new connection up (hello, auth,
// client setname/setinfo/tracking, select, readonly), alone or in a
// pipeline, make no span: they are not the caller's work, and some fail
// by design (an older server refusing "client setinfo"), which would
// show as spans with status Error. auth is never traced, as by
// redisotel's default. Known limitation: a Lua script run through
// redis.Script, as the cache manager's and asynq's are, first tries
// EVALSHA, which fails with NOSCRIPT when the server does not have the
// script cached yet, then EVAL; the evalsha span then has status Error
// although nothing failed (redisotel has no hook to tell that error
// apart).
//
// Call it once per client, before the client's first command, and before
// the client is used concurrently. On a *redis.ClusterClient or
// *redis.Ring this is a must: the hook is added only to the node clients
// created after the call, so a node the client already talked to (a
// command or ping before the call created its client) is never hooked,
// and its commands make no span. It is a no-op when tracing
// is off. It returns an error for a client type redisotel does not
// support (those are *redis.Client, *redis.ClusterClient and
// *redis.Ring).
func (p *Provider) InstrumentRedis(rdb redis.UniversalClient) error {
	if !p.Enabled() {
		return nil
	}
	err := redisotel.InstrumentTracing(rdb,
		redisotel.WithTracerProvider(p.redisTP),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
		redisotel.WithCommandFilter(connSetupCommand),
		redisotel.WithCommandsFilter(func(cmds []redis.Cmder) bool {
			return slices.ContainsFunc(cmds, connSetupCommand)
		}),
	)
	if err != nil {
		return fmt.Errorf("telemetry: instrument redis: %w", err)
	}
	return nil
}

// connSetupCommand reports whether cmd is one go-redis sends to set a
// connection up, which InstrumentRedis does not trace (a true result
// filters the command, or the pipeline holding it, out). It covers
// redisotel's default filter: auth, and hello with credentials.
func connSetupCommand(cmd redis.Cmder) bool {
	switch strings.ToLower(cmd.Name()) {
	case "auth", "hello", "client", "select", "readonly":
		return true
	}
	return false
}
