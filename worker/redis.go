package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/config"
)

// probeTimeout bounds the look at the local address for a Redis.
const probeTimeout = time.Second

// redisTarget is the Redis the worker uses.
type redisTarget struct {
	url string
	// embedded is the Redis started for this process, or nil.
	embedded *embeddedRedis
	// implicit is true when no URL was set and the worker uses the local
	// address without having checked it (REDIS_EMBEDDED=false).
	implicit bool
}

// selectRedis decides which Redis the worker uses:
//   - a URL is set: that one, never an embedded one;
//   - embedded "true": an embedded Redis started at EmbeddedAddr (a
//     redis-server child process when redis-server is on PATH, else the
//     in-memory miniredis; see startEmbedded);
//   - embedded "false": the Redis at EmbeddedAddr, unchecked (the caller
//     pings it);
//   - embedded "auto": the Redis answering PING at EmbeddedAddr, or, when
//     nothing listens there, an embedded one started there. Something else
//     listening there is an error naming the address.
//
// An embedded Redis is announced with a warning: it lives in memory and is
// lost on exit. The caller closes it.
func selectRedis(ctx context.Context, r config.Redis, log *zap.Logger) (redisTarget, error) {
	addr := r.EmbeddedAddr
	local := r.LocalURL()
	if r.URL != "" {
		if r.Embedded == "true" {
			return redisTarget{}, usageError{errors.New("REDIS_EMBEDDED (redis.embedded) is true but REDIS_CONNECTION_URL (redis.url) is set: the worker never embeds a Redis when a URL is given; unset one of them")}
		}
		return redisTarget{url: r.URL}, nil
	}
	switch r.Embedded {
	case "false":
		return redisTarget{url: local, implicit: true}, nil
	case "true":
		e, err := startEmbedded(ctx, addr, log, exec.LookPath)
		if err != nil {
			return redisTarget{}, fmt.Errorf("%w (REDIS_EMBEDDED=true; set REDIS_EMBEDDED_ADDR to a free address, or REDIS_EMBEDDED=auto to use a Redis already there)", err)
		}
		return redisTarget{url: "redis://" + e.Addr(), embedded: e}, nil
	}

	found, err := probeRedis(ctx, addr)
	if err != nil {
		return redisTarget{}, err
	}
	if found {
		log.Info("no Redis URL set; using the Redis answering locally", zap.String("addr", addr))
		return redisTarget{url: local}, nil
	}
	e, err := startEmbedded(ctx, addr, log, exec.LookPath)
	if err != nil {
		return redisTarget{}, err
	}
	return redisTarget{url: "redis://" + e.Addr(), embedded: e}, nil
}

// probeRedis looks at addr: false when nothing listens there, true when a
// Redis answers PING. Anything else is an error naming addr: a listener that
// is not Redis, a Redis that wants a password, no answer in time.
func probeRedis(ctx context.Context, addr string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for a Redis at %s: %w; set REDIS_CONNECTION_URL, or REDIS_EMBEDDED_ADDR to a free address for the embedded Redis", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl) // a closed conn fails the write below
	}
	notRedis := func(what string) error {
		return fmt.Errorf("%s is in use by something that is not Redis (%s): set REDIS_CONNECTION_URL to your Redis, or REDIS_EMBEDDED_ADDR to a free address for the embedded Redis", addr, what)
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return false, notRedis("it does not take a PING: " + err.Error())
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	switch {
	case line == "+PONG":
		return true, nil
	case strings.HasPrefix(line, "-NOAUTH"), strings.HasPrefix(line, "-WRONGPASS"):
		return false, fmt.Errorf("the Redis at %s wants a password (%q): set REDIS_CONNECTION_URL=redis://user:password@%s", addr, line, addr)
	case err != nil && line == "":
		return false, notRedis("no answer to PING: " + err.Error())
	default:
		if len(line) > 40 {
			line = line[:40] + "..."
		}
		return false, notRedis(fmt.Sprintf("it answered PING with %q", line))
	}
}
