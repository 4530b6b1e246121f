package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/events"
	"github.com/forgeq/forgeq/internal/bootstrap"
	"github.com/forgeq/forgeq/internal/redisurl"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/workflow"
)

// fallbackPingTimeout bounds the first ping when no socket timeout is set.
const fallbackPingTimeout = 5 * time.Second

// conn is the process's one Redis client and the asynq views of it.
type conn struct {
	m      *cachemgr.Manager
	client *asynq.Client
	enq    *tasks.Client     // client with the enqueue span, trace context and enqueued event
	events *events.Publisher // nil: events off
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
	client := asynq.NewClientFromRedisClient(m.Client())
	// The enqueued events (package events), when the workers publish
	// events: the same WORKER_EVENTS setting.
	var pub *events.Publisher
	if cfg.Worker.Events {
		pub = events.NewPublisher(m.Client(), events.PublisherOptions{MaxLen: int64(cfg.Worker.EventsMaxLen), Logger: log.Named("events")})
	}
	return &conn{
		m:      m,
		client: client,
		events: pub,
		enq:    tasks.NewClient(client, tasks.ClientOptions{Events: pub}),
		insp:   asynq.NewInspectorFromRedisClient(m.Client()),
		log:    log,
		cfg:    cfg,
	}, nil
}

// bulkConn is what a --file run writes and reads through. Its calls are
// bounded by the socket timeout, as cachemgr bounds its sync calls: they
// run on clients of their own, copies of the process's client with go-redis's
// retries off. An AutoPipeliner runs queued commands on its own context, so
// a ctx deadline does not stop them; and go-redis retries a batch whose read
// timed out on another connection, as dead as the first when Redis is frozen,
// which kept a run waiting for the whole freeze. Without retries a batch
// fails after one socket timeout, and the batch queued behind it after one
// more.
//
// The writes use a client whose connections carry a name of their own
// (CLIENT SETNAME), so that settle can tell from CLIENT LIST when Redis has
// read everything they sent: a write that timed out was still in the
// socket, and Redis runs it when it answers again.
type bulkConn struct {
	client  *asynq.Client // the writes, autopipelined (workflow submissions use writeRDB)
	insp    taskLookup    // look-ups, on the look-up client
	timeout time.Duration
	name    string                // the write connections' name; "" when settle cannot tell
	writes  redis.UniversalClient // nil when the writes use the process's client
	ap      *redis.AutoPipeliner
	lookups redis.UniversalClient // nil when look-ups use the process's client
	lookAP  *redis.AutoPipeliner
	k       *conn

	writeRDB, lookupRDB redis.UniversalClient // what the writes and the look-ups use
	flowSubmit          *workflow.Client      // set by workflows
	flowLookup          *workflow.Client      // reads workflows with the look-ups
}

// bulk returns the bulkConn of a --file run. The caller closes it.
func (k *conn) bulk() *bulkConn {
	b := &bulkConn{k: k, timeout: k.m.OpTimeout()}
	if b.timeout <= 0 {
		b.timeout = fallbackPingTimeout
	}
	var lookups redis.UniversalClient = k.m.Client()
	if single, ok := k.m.Client().(*redis.Client); ok {
		b.name = "forgeq-enqueue:" + uuid.NewString()
		b.writes = noRetries(single, b.name)
		b.lookups = noRetries(single, "forgeq-enqueue:lookups")
		lookups = b.lookups
	}
	writes := b.writes
	if writes == nil {
		writes = k.m.Client()
	}
	b.writeRDB, b.lookupRDB = writes, lookups
	b.flowLookup = workflow.NewClient(lookups, workflow.Options{})
	b.client, b.insp = asynq.NewClientFromRedisClient(writes), asynq.NewInspectorFromRedisClient(lookups)
	// asynq has no batch API, and one round trip per task is what bounds a
	// plain loop: the AutoPipeliner (experimental in go-redis v9.23) joins the
	// commands of the concurrent callers into pipelines.
	if ap := autoPipeline(writes); ap != nil {
		b.ap = ap
		b.client = asynq.NewClientFromRedisClient(ap)
	}
	if ap := autoPipeline(lookups); ap != nil && b.lookups != nil {
		b.lookAP = ap
		b.insp = asynq.NewInspectorFromRedisClient(ap)
	}
	return b
}

// autoPipeline returns c's AutoPipeliner, or nil when it has none.
func autoPipeline(c redis.UniversalClient) *redis.AutoPipeliner {
	if c, ok := c.(autoPipeliner); ok {
		if ap, err := c.AutoPipeline(); err == nil {
			return ap
		}
	}
	return nil
}

// workflows makes b submit workflows, checked against types, on the
// write connections (not autopipelined: a submission is a script and a
// pipeline of its own).
func (b *bulkConn) workflows(types workflow.Types) {
	b.flowSubmit = workflow.NewClient(b.writeRDB, workflow.Options{Types: types})
}

// io returns what enqueueAll uses of b.
func (b *bulkConn) io() bulkIO {
	writes := b.writeRDB
	io := bulkIO{insp: b.insp, probe: b.probe, settle: b.settle, findWorkflow: b.flowLookup.Get,
		batch: func(ctx context.Context, items []tasks.BatchItem) ([]tasks.BatchResult, error) {
			return b.k.enq.EnqueueBatch(ctx, writes, items)
		}}
	if b.flowSubmit != nil {
		io.submit = b.flowSubmit.Submit
	}
	return io
}

// noRetries returns a new client with c's options, go-redis's retries off
// and connections named name.
func noRetries(c *redis.Client, name string) *redis.Client {
	o := *c.Options()
	o.MaxRetries = -1
	o.ClientName = name
	return redis.NewClient(&o)
}

// autoPipeliner is what go-redis's single-node and cluster clients offer:
// an AutoPipeliner coalesces the commands of concurrent callers into
// pipelines.
type autoPipeliner interface {
	AutoPipeline() (*redis.AutoPipeliner, error)
}

// probe reports whether Redis answers a PING within the socket timeout.
func (b *bulkConn) probe(ctx context.Context) error {
	c := b.lookups
	if c == nil {
		return b.k.m.Ping(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return c.Ping(ctx).Err()
}

// settle closes the write connections and waits, at most a socket timeout,
// until Redis has dropped them, having read and run everything they sent.
// Its error means that cannot be known: a write that timed out may still be
// run.
func (b *bulkConn) settle(ctx context.Context) error {
	b.closeWrites()
	if b.name == "" {
		return errors.New("cannot tell when Redis has read the writes: not a single-node client")
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	for {
		list, err := b.lookups.ClientList(ctx).Result()
		if err != nil {
			return fmt.Errorf("client list: %w", err)
		}
		if !strings.Contains(list, " name="+b.name+" ") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis still holds connections of the writes: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// closeWrites closes the write connections; it may be called again.
func (b *bulkConn) closeWrites() {
	if b.ap != nil {
		_ = b.ap.Close()
		b.ap = nil
	}
	if b.writes != nil {
		_ = b.writes.Close()
		b.writes = nil
	}
}

// close closes the clients of b; the process's client stays open. It does
// not wait: closing an AutoPipeliner waits for its batches in flight, which
// take up to a socket timeout more when Redis does not answer, and their
// outcomes are reported as unknown already.
func (b *bulkConn) close() {
	ap, writes, lookAP, lookups := b.ap, b.writes, b.lookAP, b.lookups
	b.ap, b.writes, b.lookAP, b.lookups = nil, nil, nil, nil
	go func() {
		if ap != nil {
			_ = ap.Close()
		}
		if writes != nil {
			_ = writes.Close()
		}
		if lookAP != nil {
			_ = lookAP.Close()
		}
		if lookups != nil {
			_ = lookups.Close()
		}
	}()
}

// close closes the Redis client. asynq's client and inspector share it and
// cannot be closed themselves.
func (k *conn) close() {
	if k.events != nil {
		// Writes what was published (enqueued events) before the client
		// closes, within a socket timeout: with Redis frozen the run must
		// not wait for a write's timeout per batch of events.
		limit := k.m.OpTimeout()
		if limit <= 0 {
			limit = fallbackPingTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		if err := k.events.CloseContext(ctx); err != nil {
			k.log.Debug("enqueued events not written", zap.Error(err))
		}
		cancel()
	}
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
