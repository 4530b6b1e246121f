package enqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/redisurl"
)

// fallbackPingTimeout bounds the first ping when no socket timeout is set.
const fallbackPingTimeout = 5 * time.Second

// conn is the process's one Redis client and the asynq views of it.
type conn struct {
	m      *cachemgr.Manager
	client *asynq.Client
	insp   *asynq.Inspector
	log    *zap.Logger
	cfg    config.Config
}

// loadConfig reads the connection settings from the flags and the
// environment. A bad setting is bad input.
func (c *cli) loadConfig(fs *pflag.FlagSet) (config.Config, error) {
	cfg, err := config.Load(fs, c.getenv)
	if err != nil {
		return config.Config{}, &inputError{err: fmt.Errorf("configuration: %w", err)}
	}
	return cfg, nil
}

// connect builds the manager on cfg and pings Redis, giving up after the
// socket timeout. With no Redis URL configured it connects where the worker
// then is: to the Redis at REDIS_EMBEDDED_ADDR, which the worker uses or
// serves embedded. The caller closes the conn.
func (c *cli) connect(ctx context.Context, cfg config.Config) (*conn, error) {
	url, shown := cfg.Redis.URL, cfg.Redis.Redacted()
	where := "REDIS_CONNECTION_URL or --redis-url"
	hint := "  Is Redis running there, and is the URL right?"
	if url == "" {
		url = cfg.Redis.LocalURL()
		shown = url
		where = "REDIS_EMBEDDED_ADDR, as no REDIS_CONNECTION_URL or --redis-url is set"
		hint = fmt.Sprintf("  Is the worker running? With no Redis URL set, `go run ./cmd/worker` uses or embeds a Redis at %s "+
			"(REDIS_EMBEDDED_ADDR): give both the same REDIS_EMBEDDED_ADDR, or set REDIS_CONNECTION_URL", cfg.Redis.EmbeddedAddr)
	}
	log, err := bootstrap.NewLogger(cfg.Log, c.stderr)
	if err != nil {
		return nil, &inputError{err: fmt.Errorf("configuration: %w", err)}
	}
	m, err := cachemgr.New(bootstrap.ManagerOptions(cfg, url, log))
	if err != nil {
		_ = log.Sync()
		return nil, &inputError{err: fmt.Errorf("configuration: %w", err)}
	}
	timeout := cfg.Redis.SocketTimeout
	if timeout <= 0 {
		timeout = fallbackPingTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if err := m.Ping(pctx); err != nil {
		took := time.Since(start).Round(time.Millisecond)
		_ = m.Close()
		_ = log.Sync()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// The timeout cut go-redis's attempts short: learn why they
			// failed, such as a refused connection.
			if p, perr := redisurl.Parse(url); perr == nil {
				// A second at most: a refused dial answers at once.
				dctx, dcancel := context.WithTimeout(ctx, min(timeout, time.Second))
				if derr := p.DialError(dctx); derr != nil {
					err = fmt.Errorf("%w (%w)", derr, err)
				}
				dcancel()
			}
		}
		return nil, fmt.Errorf("cannot reach Redis at %s (%s) after %v: %w\n%s",
			shown, where, took, err, hint)
	}
	return &conn{
		m:      m,
		client: asynq.NewClientFromRedisClient(m.Client()),
		insp:   asynq.NewInspectorFromRedisClient(m.Client()),
		log:    log,
		cfg:    cfg,
	}, nil
}

// autoPipeliner is what go-redis's single-node and cluster clients offer:
// an AutoPipeliner coalesces the commands of concurrent callers into
// pipelines.
type autoPipeliner interface {
	AutoPipeline() (*redis.AutoPipeliner, error)
}

// pipelined returns an asynq client and inspector on the process's Redis
// client whose commands from concurrent goroutines share round trips:
// asynq has no batch API, and one round trip per task is what bounds a
// plain loop. They use go-redis's AutoPipeliner, which is experimental in
// go-redis v9.23; without one they are the plain client and inspector.
// stop ends the autopipeliner; the Redis client stays open.
func (k *conn) pipelined() (client *asynq.Client, insp *asynq.Inspector, stop func()) {
	if c, ok := k.m.Client().(autoPipeliner); ok {
		if ap, err := c.AutoPipeline(); err == nil {
			return asynq.NewClientFromRedisClient(ap), asynq.NewInspectorFromRedisClient(ap), func() { _ = ap.Close() }
		}
	}
	return k.client, k.insp, func() {}
}

// close closes the Redis client. asynq's client and inspector share it and
// cannot be closed themselves.
func (k *conn) close() {
	_ = k.m.Close()
	_ = k.log.Sync()
}

// warnUnserved writes a warning when no running worker serves queue.
// Without workers at all it warns only if alone is true (under --wait,
// which would otherwise wait for nothing).
func (c *cli) warnUnserved(k *conn, queues []string, alone bool) {
	servers, err := k.insp.Servers()
	if err != nil {
		return
	}
	if len(servers) == 0 {
		if alone {
			fmt.Fprintf(c.stderr, "%s: warning: no worker is running; the task waits until one starts\n", c.prog)
		}
		return
	}
	for _, q := range queues {
		served := false
		for _, s := range servers {
			if _, ok := s.Queues[q]; ok {
				served = true
				break
			}
		}
		if !served {
			fmt.Fprintf(c.stderr, "%s: warning: none of the %d running workers serves queue %q (WORKER_QUEUES)\n", c.prog, len(servers), q)
		}
	}
}
