package cachemgr

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A tracker holds the near cache's tracking connection to one Redis node:
// a dedicated RESP2 connection that turns on
//
//	CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX <KeyPrefix>
//
// and subscribes to __redis__:invalidate, where the node then reports every
// write to a key under the prefix, whoever made it and whichever connection
// read the key. It pings every nearHeartbeat; a PONG renews the lease that
// lets the node's entries be served. Losing the connection flushes the
// tier; a server that refuses CLIENT TRACKING turns the tracker off for
// good (the tier then stays empty).
type tracker struct {
	nc        *nearCache
	log       *zap.Logger
	addr      string
	rdb       *redis.Client
	deadAfter time.Duration // without a PONG: reconnect

	subscribed atomic.Bool  // tracking on and subscribed, on the current connection
	lease      atomic.Int64 // entries may be served until then (nc.now() time)
	refused    atomic.Bool

	cancel context.CancelFunc
	done   chan struct{}
}

func newTracker(nc *nearCache, src *redis.Options, log *zap.Logger) *tracker {
	t := &tracker{nc: nc, log: log, addr: src.Addr, done: make(chan struct{})}
	t.deadAfter = max(src.ReadTimeout, time.Second)
	userOnConnect := src.OnConnect
	t.rdb = redis.NewClient(&redis.Options{
		Network:                      src.Network,
		Addr:                         src.Addr,
		Dialer:                       src.Dialer,
		Username:                     src.Username,
		Password:                     src.Password,
		CredentialsProvider:          src.CredentialsProvider,
		CredentialsProviderContext:   src.CredentialsProviderContext,
		StreamingCredentialsProvider: src.StreamingCredentialsProvider,
		TLSConfig:                    src.TLSConfig,
		DialTimeout:                  src.DialTimeout,
		ReadTimeout:                  src.ReadTimeout,
		WriteTimeout:                 src.WriteTimeout,
		Protocol:                     2, // invalidations as pub/sub messages, on any server >= 6
		PoolSize:                     1,
		MaxRetries:                   -1,
		OnConnect: func(ctx context.Context, cn *redis.Conn) error {
			if userOnConnect != nil {
				if err := userOnConnect(ctx, cn); err != nil {
					return err
				}
			}
			t.lost() // nothing learnt on an earlier connection holds now
			// The name shows the connection's purpose in CLIENT LIST; a
			// server that refuses it refuses tracking below too.
			_ = cn.ClientSetName(ctx, trackerName(nc.prefix)).Err()
			id, err := cn.ClientID(ctx).Result()
			if err == nil {
				err = cn.Do(ctx, "CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST", "PREFIX", nc.prefix).Err()
			}
			if err != nil && refusal(err) {
				t.refused.Store(true)
			}
			return err
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	go t.run(ctx)
	return t
}

// trackerName is the CLIENT SETNAME of the tracking connections of a
// manager with the given key prefix: "forgeq-near:" and the prefix, with
// anything but printable ASCII other than space replaced by '_'.
func trackerName(prefix string) string {
	b := []byte("forgeq-near:" + prefix)
	for i, c := range b {
		if c <= ' ' || c > '~' {
			b[i] = '_'
		}
	}
	return string(b)
}

// refusal reports whether err is the server refusing client tracking
// (unknown command or subcommand, no permission), as opposed to a
// transient failure.
func refusal(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	for _, transient := range []string{"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"} {
		if strings.HasPrefix(msg, transient) {
			return false
		}
	}
	return true
}

// live reports whether the node's entries may be served at now.
func (t *tracker) live(now int64) bool {
	return t.subscribed.Load() && now < t.lease.Load()
}

// lost ends the current connection's standing: entries filled under it
// may miss invalidations from now on, so the tier is flushed.
func (t *tracker) lost() {
	t.lease.Store(0)
	if t.subscribed.Swap(false) {
		t.nc.flush()
	}
}

func (t *tracker) close() {
	t.cancel()
	_ = t.rdb.Close()
	<-t.done
}

func (t *tracker) run(ctx context.Context) {
	defer close(t.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		wasLive := t.session(ctx)
		t.lost()
		if t.refused.Load() {
			return
		}
		if wasLive {
			backoff = 50 * time.Millisecond
		}
		sleep := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, 5*time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(sleep):
		}
	}
}

// session runs one pub/sub subscription until it fails, goes silent for
// deadAfter, or ctx ends. It reports whether it ever subscribed.
func (t *tracker) session(ctx context.Context) (wasLive bool) {
	ps := t.rdb.Subscribe(ctx, invalidateChannel)
	defer ps.Close()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	go t.ping(pctx, ps)

	lastPong := time.Now()
	for {
		msg, err := ps.ReceiveTimeout(ctx, 4*nearHeartbeat)
		if ctx.Err() != nil {
			return wasLive
		}
		if err != nil {
			var nerr net.Error
			switch {
			case t.refused.Load():
				t.log.Error("near cache disabled: the server refused client tracking; reads go to Redis",
					zap.String("addr", t.addr), zap.Error(err))
				return wasLive
			case errors.As(err, &nerr) && nerr.Timeout() && time.Since(lastPong) < t.deadAfter:
				continue
			case strings.Contains(err.Error(), "unsupported pubsub message payload: <nil>"):
				// An invalidation with no keys: FLUSHDB or FLUSHALL.
				t.nc.flush()
				continue
			default:
				if wasLive {
					t.log.Warn("near cache tracking lost; near cache flushed",
						zap.String("addr", t.addr), zap.Error(err))
				}
				return wasLive
			}
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == invalidateChannel {
				t.nc.fence() // reads begun before tracking was on must not fill
				t.subscribed.Store(true)
				wasLive = true
			}
		case *redis.Message:
			if m.Channel != invalidateChannel {
				continue
			}
			for _, k := range m.PayloadSlice {
				t.nc.invalidateFull(k)
			}
			if m.Payload != "" {
				t.nc.invalidateFull(m.Payload)
			}
		case *redis.Pong:
			lastPong = time.Now()
			sent, err := strconv.ParseInt(m.Payload, 10, 64)
			if err == nil && t.subscribed.Load() {
				if lease := sent + int64(nearLease); lease > t.lease.Load() {
					t.lease.Store(lease)
				}
			}
		}
	}
}

// ping sends a PING carrying its send time every nearHeartbeat.
func (t *tracker) ping(ctx context.Context, ps *redis.PubSub) {
	tick := time.NewTicker(nearHeartbeat)
	defer tick.Stop()
	for {
		_ = ps.Ping(ctx, strconv.FormatInt(t.nc.now(), 10)) // a failure shows in Receive
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// trackers are the near cache's trackers, one per node, started on the
// first read that needs one.
type trackers struct {
	mu     sync.Mutex
	byAddr map[string]*tracker
	closed bool
	log    *zap.Logger
}

// forKey returns the tracker of the node that holds full (the client's
// node; on a cluster the key's master), starting it if need be, or nil.
func (ts *trackers) forKey(ctx context.Context, m *Manager, nc *nearCache, full string) *tracker {
	var opts *redis.Options
	switch c := m.rdb.(type) {
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, full)
		if err != nil {
			return nil
		}
		opts = node.Options()
	case *redis.Client:
		opts = c.Options()
	default:
		return nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return nil
	}
	if t := ts.byAddr[opts.Addr]; t != nil {
		return t
	}
	if ts.byAddr == nil {
		ts.byAddr = make(map[string]*tracker)
	}
	t := newTracker(nc, opts, ts.log)
	ts.byAddr[opts.Addr] = t
	return t
}

func (ts *trackers) anyLive(now int64) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, t := range ts.byAddr {
		if t.live(now) {
			return true
		}
	}
	return false
}

// close stops every tracker and closes its connection.
func (ts *trackers) close() {
	ts.mu.Lock()
	ts.closed = true
	all := ts.byAddr
	ts.byAddr = nil
	ts.mu.Unlock()
	for _, t := range all {
		t.close()
	}
}
