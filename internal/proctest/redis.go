package proctest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// redisStartTimeout bounds how long a starting server may take to
	// answer PING.
	redisStartTimeout = 15 * time.Second
	// redisStopTimeout bounds how long a stopping server may take to exit
	// before it is killed.
	redisStopTimeout = 5 * time.Second
	// redisLogTail is how much of a server's log a failed test prints.
	redisLogTail = 4 << 10
)

// Redis is a redis-server process started by RedisServer. It keeps its
// port across Stop and Start. The methods that can fail fail the test that
// started the server, so call them from that test's goroutine; Addr, URL,
// Port and Running are safe for concurrent use.
type Redis struct {
	tb   testing.TB
	bin  string
	dir  string
	argv func(port int) []string // the command line for a port

	mu      sync.Mutex
	port    int
	proc    *Proc
	stopped chan struct{} // closed by Pause's SIGCONT; nil unless paused
}

// RedisServer starts redis-server on 127.0.0.1 and a free port, without
// persistence (--save "" --appendonly no), its working directory in a temp
// dir, with args appended to its command line (for example
// "--requirepass", "pw" or "--maxmemory", "10mb"; a later setting wins, so
// "--appendonly", "yes" turns the append-only file on). It waits until the
// server answers PING. Cleanup stops it.
//
// It skips the test when redis-server is not in PATH, except under CI,
// where it fails it.
func RedisServer(tb testing.TB, args ...string) *Redis {
	tb.Helper()

	dir := tb.TempDir()
	r := newRedis(tb, func(port int) []string {
		a := []string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
		}
		return append(a, args...)
	})
	r.dir = dir
	r.startFresh()
	return r
}

// newRedis returns a server, not started, that runs redis-server with the
// arguments argv returns; it registers the cleanup that stops it.
func newRedis(tb testing.TB, argv func(port int) []string) *Redis {
	tb.Helper()
	r := &Redis{tb: tb, bin: redisServerPath(tb), argv: argv}
	tb.Cleanup(r.cleanup)
	return r
}

// redisServerPath finds redis-server, or skips (fails under CI).
func redisServerPath(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("redis-server")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("proctest: redis-server not found under CI: %v", err)
	}
	tb.Skipf("proctest: redis-server not found (%v); install it to run", err)
	return ""
}

// startFresh starts the server on a new free port, trying again with
// another port when the chosen one was taken meanwhile.
func (r *Redis) startFresh() {
	r.tb.Helper()
	var last error
	for range 5 {
		port := FreePort(r.tb)
		r.mu.Lock()
		r.port = port
		r.mu.Unlock()
		err := r.start()
		if err == nil {
			return
		}
		last = err
		if !errors.Is(err, errPortInUse) {
			break
		}
	}
	r.tb.Fatal(last)
}

// errPortInUse is start's error when the server could not bind its port.
var errPortInUse = errors.New("proctest: port in use")

// start runs the server on r.port and waits for it to answer.
func (r *Redis) start() error {
	r.tb.Helper()
	r.mu.Lock()
	port := r.port
	r.mu.Unlock()

	p := start(r.tb, redisLogTail, false, r.bin, nil, r.argv(port)...)
	p.name = fmt.Sprintf("redis-server[%d]:%d", p.Pid(), port)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(redisStartTimeout)
	for {
		reply, err := rawCommand(addr, time.Second, "PING")
		if err == nil && (strings.HasPrefix(reply, "+PONG") || strings.HasPrefix(reply, "-NOAUTH")) {
			break
		}
		if p.Exited() {
			logs := p.Logs()
			if strings.Contains(logs, "Address already in use") {
				return fmt.Errorf("%w: %d", errPortInUse, port)
			}
			return fmt.Errorf("proctest: %s exited at start:\n%s", p, logs)
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("proctest: %s did not answer PING within %v (last: %q, %v):\n%s",
				p, redisStartTimeout, reply, err, p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	return nil
}

// Port returns the server's TCP port.
func (r *Redis) Port() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.port
}

// Addr returns the server's address, "127.0.0.1:port".
func (r *Redis) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port()))
}

// URL returns "redis://127.0.0.1:port".
func (r *Redis) URL() string { return "redis://" + r.Addr() }

// Dir returns the server's working directory.
func (r *Redis) Dir() string { return r.dir }

// Proc returns the server's current process, or nil when it is stopped.
func (r *Redis) Proc() *Proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc
}

// Running reports whether the server process runs (it may be paused).
func (r *Redis) Running() bool {
	p := r.Proc()
	return p != nil && !p.Exited()
}

// Start starts the stopped server again on the same port and in the same
// directory, and waits until it answers PING. Its dataset is empty unless
// the server's args turned persistence on ("--appendonly", "yes"), in which
// case it loads what Stop left. It fails the test if the server runs or
// does not come up.
func (r *Redis) Start() {
	r.tb.Helper()
	if r.Running() {
		r.tb.Fatalf("proctest: Start: %s is running", r.Proc())
	}
	if err := r.start(); err != nil {
		r.tb.Fatal(err)
	}
}

// Stop shuts the server down (SHUTDOWN NOSAVE NOW, or SIGTERM when that
// needs a password; SIGKILL if it has not exited after a few seconds) and
// waits for it to exit. Either way Redis flushes its append-only file when
// one is on, but writes no RDB snapshot. Stopping a stopped server does
// nothing.
func (r *Redis) Stop() {
	r.tb.Helper()
	p := r.resume()
	if p == nil || p.Exited() {
		return
	}
	shutdown(p, r.Addr())
	r.mu.Lock()
	r.proc = nil
	r.mu.Unlock()
}

// shutdown stops the server p listening on addr: SHUTDOWN NOSAVE NOW, or
// SIGTERM when the command is refused (a password is required), then
// SIGKILL if it is still running after redisStopTimeout.
func shutdown(p *Proc, addr string) {
	reply, err := rawCommand(addr, time.Second, "SHUTDOWN", "NOSAVE", "NOW")
	if err == nil && strings.HasPrefix(reply, "-") {
		_ = p.Signal(syscall.SIGTERM)
	}
	if _, err := p.Wait(redisStopTimeout); err != nil {
		p.Kill()
	}
}

// Kill kills the server with SIGKILL, as a crash would, and waits for it
// to exit. Killing a stopped server does nothing.
func (r *Redis) Kill() {
	p := r.resume()
	if p == nil {
		return
	}
	p.Kill()
	r.mu.Lock()
	r.proc = nil
	r.mu.Unlock()
}

// Pause freezes the server with SIGSTOP for d and returns at once; it
// resumes it with SIGCONT after d, and closes the returned channel then.
// While frozen, the kernel still accepts connections, but nothing answers:
// clients see timeouts, not refused connections. Stop, Kill and cleanup
// resume a paused server first. Pausing a paused or stopped server fails
// the test.
func (r *Redis) Pause(d time.Duration) <-chan struct{} {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil || r.proc.Exited() {
		r.tb.Fatal("proctest: Pause: the server is not running")
	}
	if r.stopped != nil {
		r.tb.Fatalf("proctest: Pause: %s is paused already", r.proc)
	}
	if err := r.proc.Signal(syscall.SIGSTOP); err != nil {
		r.tb.Fatal(err)
	}
	done := make(chan struct{})
	r.stopped = done
	p := r.proc
	time.AfterFunc(d, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopped == done {
			_ = p.Signal(syscall.SIGCONT)
			r.stopped = nil
			close(done)
		}
	})
	return done
}

// WarmPool leaves n idle connections in rdb's pool, as a busy process
// has: it takes n at once, pings on each and gives them back. A test that
// freezes the server (Pause) then finds as many dead connections in the
// pool as a real process would.
func WarmPool(tb testing.TB, rdb *redis.Client, n int) {
	tb.Helper()
	conns := make([]*redis.Conn, n)
	for i := range conns {
		conns[i] = rdb.Conn()
		if err := conns[i].Ping(context.Background()).Err(); err != nil {
			tb.Fatalf("proctest: WarmPool: %v", err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	if idle := rdb.PoolStats().IdleConns; idle < uint32(n) {
		tb.Fatalf("proctest: WarmPool: %d idle connections in the pool, want %d", idle, n)
	}
}

// ClientPause runs CLIENT PAUSE for d (mode ALL): the server stays up and
// answers nothing from its clients until d has passed, so their commands
// wait rather than time out, if their timeouts allow. It returns at once.
func (r *Redis) ClientPause(d time.Duration) {
	r.tb.Helper()
	ms := strconv.FormatInt(d.Milliseconds(), 10)
	reply, err := rawCommand(r.Addr(), time.Second, "CLIENT", "PAUSE", ms, "ALL")
	if err != nil || !strings.HasPrefix(reply, "+OK") {
		r.tb.Fatalf("proctest: CLIENT PAUSE on %s: %q, %v", r.Addr(), reply, err)
	}
}

// resume ends a pause early and returns the current process.
func (r *Redis) resume() *Proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped != nil {
		_ = r.proc.Signal(syscall.SIGCONT)
		close(r.stopped)
		r.stopped = nil
	}
	return r.proc
}

func (r *Redis) cleanup() {
	p := r.resume()
	if p == nil || p.Exited() {
		return
	}
	shutdown(p, r.Addr())
}

// rawCommand sends one command to addr in RESP and returns the first line
// of the reply ("+PONG", "-ERR ..."). It needs no client library and works
// before authentication.
func rawCommand(addr string, timeout time.Duration, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
