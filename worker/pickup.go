package worker

import (
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/pickup"
	"github.com/forgeq/forgeq/internal/redisurl"
)

// newPickup returns the event-driven pickup of the asynq server on rdb
// (docs/pickup.md), its hook added to rdb, or nil with WORKER_PICKUP=poll.
// Its waits use a client of their own on url: one connection per queue,
// one for the dequeue script and one for the pipelines of the scripts
// that finish tasks.
func newPickup(cfg config.Config, url string, rdb redis.UniversalClient, log *zap.Logger) (*pickup.Pickup, error) {
	if cfg.Worker.Pickup == config.PickupPoll {
		return nil, nil
	}
	parsed, err := redisurl.Parse(url)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	conn := parsed.NewClient(redisurl.Settings{
		PoolSize:      len(cfg.Worker.Queues) + 2,
		SocketTimeout: cfg.Redis.SocketTimeout,
		TLSConfig:     cfg.Redis.TLSConfig(),
		// The dequeue script moves tasks: sent again after a timeout it
		// would take more, which nobody would hand to asynq.
		MaxRetries: -1,
	})
	p := pickup.New(pickup.Options{
		Queues:         cfg.Worker.Queues,
		StrictPriority: cfg.Worker.StrictPriority,
		Concurrency:    cfg.Worker.Concurrency,
		Conn:           conn,
		PollInterval:   cfg.Worker.TaskCheckInterval,
		Logger:         log.Named("pickup"),
	})
	rdb.AddHook(p.Hook())
	return p, nil
}
