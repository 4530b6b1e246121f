package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forgeq/forgeq/tasks"
)

// Timing of the worker's entries in the task catalogue.
const (
	// catalogRefresh is how often a running worker refreshes when it was
	// last seen serving its types.
	catalogRefresh = 30 * time.Second
	// catalogTimeout bounds one publish, refresh or withdrawal: the
	// catalogue is advisory, and never holds up the worker.
	catalogTimeout = 5 * time.Second
	// catalogWithdrawTimeout bounds the withdrawal at shutdown.
	catalogWithdrawTimeout = 2 * time.Second
)

// publisher keeps the worker's entries in the task catalogue: it publishes
// the worker's types once the asynq server runs, refreshes them while it
// runs and withdraws the worker from them when it stops. Its failures are
// warnings: producers that know the types themselves need no catalogue,
// and a Redis ACL without ~forgeq:* must not stop the worker.
type publisher struct {
	cat     *tasks.Catalog
	reg     *tasks.Registry
	w       tasks.WorkerInfo
	log     *zap.Logger
	refresh time.Duration

	published bool // Publish succeeded; touched by one goroutine at a time
	failing   bool // the last publish or refresh failed
}

// newPublisher returns the publisher of reg's types for a worker serving
// queues, on rdb.
func newPublisher(rdb redis.UniversalClient, reg *tasks.Registry, queues map[string]int, log *zap.Logger) *publisher {
	qs := make([]string, 0, len(queues))
	for q := range queues {
		qs = append(qs, q)
	}
	slices.Sort(qs)
	return &publisher{
		cat:     tasks.NewCatalog(rdb),
		reg:     reg,
		w:       tasks.WorkerInfo{ID: workerID(), Queues: qs},
		log:     log.Named("catalog"),
		refresh: catalogRefresh,
	}
}

// workerID returns an id for this worker process, unique among all
// workers ever run: host name, process id and 6 random hex digits, such
// as "web-1/4127/9f8e7d".
func workerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	var b [3]byte
	_, _ = rand.Read(b[:]) // never returns an error
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// publish publishes the worker's types and logs what it did: "task types
// published", a warning for each type that another worker had published
// differently, a note for each whose default queue this worker does not
// serve, or a warning when the catalogue cannot be written.
func (p *publisher) publish(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	report, err := p.cat.Publish(pctx, p.reg, p.w)
	if err != nil && ctx.Err() != nil {
		return // shutting down
	}
	if err != nil {
		// Once, not at every refresh that retries it.
		if !p.failing {
			p.failing = true
			p.log.Warn("task catalogue not written; producers without these types cannot validate them until it is "+
				"(a Redis ACL user needs ~forgeq:*); retrying every refresh",
				zap.String("worker_id", p.w.ID), zap.Error(err))
		}
		return
	}
	p.published = true
	p.failing = false
	for _, t := range report.Changed {
		p.log.Warn("task type was published with another definition (another version of it?); replaced by this worker's",
			zap.String("task_type", t), zap.String("worker_id", p.w.ID))
	}
	for _, t := range report.Unserved {
		// Info, not a warning: a worker may serve a type only on queues
		// its tasks are enqueued on explicitly.
		queue := ""
		if d, ok := p.reg.Lookup(t); ok {
			queue = d.Queue()
		}
		p.log.Info("task type's default queue is not among this worker's queues (WORKER_QUEUES): tasks enqueued there wait for another worker",
			zap.String("task_type", t), zap.String("queue", queue), zap.Strings("worker_queues", p.w.Queues))
	}
	p.log.Info("task types published", zap.Strings("task_types", report.Types), zap.String("worker_id", p.w.ID))
}

// run refreshes the worker's entries every p.refresh from when started
// is closed (the first publish is done) until ctx ends, then withdraws
// the worker from its types. When the first publish failed, each refresh
// publishes again instead. It always returns nil: the catalogue never
// stops the worker.
func (p *publisher) run(ctx context.Context, started <-chan struct{}) error {
	select {
	case <-started:
	case <-ctx.Done():
		return nil // the server never started: nothing was published
	}
	t := time.NewTicker(p.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.withdraw(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			if !p.published {
				p.publish(ctx)
				continue
			}
			p.heartbeat(ctx)
		}
	}
}

// heartbeat refreshes the worker's entries, logging when that starts
// failing and when it works again, not on every failure.
func (p *publisher) heartbeat(ctx context.Context) {
	hctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	err := p.cat.Heartbeat(hctx, p.reg, p.w)
	switch {
	case err != nil && ctx.Err() != nil:
		// Shutting down: the withdrawal follows.
	case err != nil && !p.failing:
		p.failing = true
		p.log.Warn("task catalogue refresh failing", zap.String("worker_id", p.w.ID), zap.Error(err))
	case err == nil && p.failing:
		p.failing = false
		p.log.Info("task catalogue refresh working again", zap.String("worker_id", p.w.ID))
	}
}

// withdraw removes the worker from its types, within
// catalogWithdrawTimeout.
func (p *publisher) withdraw(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, catalogWithdrawTimeout)
	defer cancel()
	if err := p.cat.Withdraw(ctx, p.reg, p.w); err != nil {
		p.log.Warn("task catalogue: withdrawal failed; this worker stays listed until it expires",
			zap.String("worker_id", p.w.ID), zap.Duration("expires_after", tasks.CatalogWorkerExpiry), zap.Error(err))
		return
	}
	p.log.Info("task types withdrawn", zap.String("worker_id", p.w.ID))
}
