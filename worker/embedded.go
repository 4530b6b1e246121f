package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
)

// redisServerBin is the program the embedded Redis runs when it is on PATH.
const redisServerBin = "redis-server"

const (
	// childStartTimeout bounds the wait for the child redis-server to
	// answer PING.
	childStartTimeout = 10 * time.Second
	// childStopTimeout bounds the wait for the child to exit after
	// SIGTERM; it is killed after that.
	childStopTimeout = 5 * time.Second
	// childPortTries is how many free ports are tried for port 0, since
	// another process may take the one picked before the child binds it.
	childPortTries = 3
	// miniredisTick is how often, at most, the in-memory fallback's TTLs
	// advance with the wall clock; with many keys it is less often, so
	// that advancing them holds miniredis's lock at most a tenth of the
	// time.
	miniredisTick = 50 * time.Millisecond
)

// embeddedRedis is the Redis a worker starts for itself when none is
// configured: a redis-server child process when one is installed, else
// the in-memory miniredis. Either way it keeps nothing on disk. Close is
// safe to call more than once and from several goroutines.
type embeddedRedis struct {
	addr string
	log  *zap.Logger

	// The child redis-server, when it runs one.
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
	dir    string        // its working directory, removed once it runs (or at Close)

	// The in-memory fallback, when it runs that.
	mr        *miniredis.Miniredis
	stopTicks chan struct{}
	ticked    sync.WaitGroup

	closeOnce sync.Once
}

// Addr returns the host:port the embedded Redis listens on.
func (e *embeddedRedis) Addr() string { return e.addr }

// describe says which Redis this is, for the start-up warning.
func (e *embeddedRedis) describe() string {
	if e.cmd != nil {
		return fmt.Sprintf("embedded redis-server (child process, pid %d)", e.cmd.Process.Pid)
	}
	return "in-memory miniredis (no redis-server on PATH; slow with many pending tasks)"
}

// impl names the implementation for the log's redis_impl field.
func (e *embeddedRedis) impl() string {
	if e.cmd != nil {
		return "redis-server"
	}
	return "miniredis"
}

// startEmbedded starts the embedded Redis at addr: redis-server, found
// with lookPath (exec.LookPath outside tests), as a child process, or,
// when lookPath finds none, the in-memory miniredis. Port 0 picks a free
// port. It says loudly which one runs and that its data is lost on exit.
func startEmbedded(ctx context.Context, addr string, log *zap.Logger, lookPath func(string) (string, error)) (*embeddedRedis, error) {
	var (
		e   *embeddedRedis
		err error
	)
	if bin, lerr := lookPath(redisServerBin); lerr == nil {
		e, err = startChild(ctx, bin, addr, log)
	} else {
		e, err = startMiniredis(addr, log)
	}
	if err != nil {
		return nil, fmt.Errorf("start embedded Redis at %s: %w", addr, err)
	}
	fields := []zap.Field{zap.String("addr", e.addr), zap.String("redis_impl", e.impl())}
	if e.cmd != nil {
		fields = append(fields, zap.Int("pid", e.cmd.Process.Pid))
	}
	log.Warn("no Redis configured: started an EMBEDDED IN-MEMORY Redis: "+e.describe()+
		"; queued tasks and cached data are LOST when the worker exits. "+
		"For a real Redis, set REDIS_CONNECTION_URL=redis://host:6379", fields...)
	return e, nil
}

// startMiniredis starts the in-memory fallback at addr. Its TTLs advance
// with the wall clock every miniredisTick rather than with miniredis's
// ClockTTL, which re-sorts every key on every command and so makes each
// command cost O(n log n) in the number of keys.
func startMiniredis(addr string, log *zap.Logger) (*embeddedRedis, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr(addr); err != nil {
		return nil, err
	}
	e := &embeddedRedis{addr: mr.Addr(), log: log, mr: mr, stopTicks: make(chan struct{})}
	e.ticked.Add(1)
	go func() {
		defer e.ticked.Done()
		last, wait := time.Now(), miniredisTick
		for {
			select {
			case <-e.stopTicks:
				return
			case <-time.After(wait):
			}
			now := time.Now()
			mr.FastForward(now.Sub(last)) // sorts every key: O(n log n)
			last = time.Now()
			wait = max(miniredisTick, 10*last.Sub(now))
		}
	}()
	return e, nil
}

// startChild runs bin as a redis-server child process at addr, with no
// persistence, in a temporary directory, and waits until it answers PING.
func startChild(ctx context.Context, bin, addr string, log *zap.Logger) (*embeddedRedis, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if port != "0" {
		if _, err := checkFree(addr); err != nil {
			return nil, err
		}
		return runChild(ctx, bin, host, port, log)
	}
	// Port 0: pick a free port, and another if someone takes it first.
	for try := 1; ; try++ {
		free, err := checkFree(net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		e, err := runChild(ctx, bin, host, free, log)
		if err == nil || try == childPortTries {
			return e, err
		}
		log.Debug("embedded redis-server did not start on a free port; trying another", zap.String("port", free), zap.Error(err))
	}
}

// checkFree listens at addr and closes the listener again: an address in
// use fails here with the listener's own error, and for port 0 it returns
// the port the system picked.
func checkFree(addr string) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port, l.Close()
}

// runChild starts bin listening at host:port and waits until it answers.
func runChild(ctx context.Context, bin, host, port string, log *zap.Logger) (*embeddedRedis, error) {
	dir, err := os.MkdirTemp("", "forgeq-redis-")
	if err != nil {
		return nil, err
	}
	bind := host
	if bind == "" {
		bind = "0.0.0.0" // as net.Listen does for ":port"
	}
	// A config file rather than flags: every redis-server version reads
	// it the same way, `save ""` included.
	conf := strings.Join([]string{
		"bind " + bind,
		"port " + port,
		`save ""`,
		"appendonly no",
		"daemonize no",
		`logfile ""`,
		"loglevel warning",
		"dir " + strconv.Quote(dir),
	}, "\n") + "\n"
	confPath := dir + string(os.PathSeparator) + "redis.conf"
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}

	out := &childOutput{log: log.Named("redis-server")}
	cmd := exec.Command(bin, confPath)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = childSysProcAttr()
	e := &embeddedRedis{addr: net.JoinHostPort(host, port), log: log, cmd: cmd, exited: make(chan struct{}), dir: dir}
	if host == "" {
		e.addr = net.JoinHostPort("127.0.0.1", port)
	}
	startErr := make(chan error, 1)
	go func() {
		// Linux's parent-death signal (childSysProcAttr) fires when the
		// thread that started the child ends, not the process: a user's
		// goroutine that exits locked to its thread ends that thread. So
		// the child is started, and waited for, on a thread of its own
		// that lives as long as it does.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		_ = cmd.Wait() // its exit is reported by waitReady or Close
		close(e.exited)
	}()
	if err := <-startErr; err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := e.waitReady(ctx); err != nil {
		e.Close()
		if last := out.last(); last != "" {
			err = fmt.Errorf("%w; redis-server said: %s", err, last)
		}
		return nil, err
	}
	// It has read its config and, with no persistence, writes nothing to
	// its directory: remove it now, so that nothing is left behind even
	// when the worker is killed and cannot Close.
	if err := os.RemoveAll(dir); err != nil {
		log.Debug("remove the embedded redis-server's directory", zap.String("dir", dir), zap.Error(err))
	}
	return e, nil
}

// waitReady waits until the child answers PING, it exits, ctx ends or
// childStartTimeout passes.
func (e *embeddedRedis) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, childStartTimeout)
	defer cancel()
	var last error
	for {
		ok, err := probeRedis(ctx, e.addr)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-e.exited:
			return fmt.Errorf("redis-server (pid %d) exited before answering: %s", e.cmd.Process.Pid, e.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("redis-server (pid %d) did not answer PING within %v: %w", e.cmd.Process.Pid, childStartTimeout, errors.Join(ctx.Err(), last))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close stops the embedded Redis, which loses its data. A child process
// gets SIGTERM and, if it has not exited within childStopTimeout, SIGKILL;
// its directory is removed if it is still there.
func (e *embeddedRedis) Close() {
	e.closeOnce.Do(func() {
		if e.mr != nil {
			close(e.stopTicks)
			e.ticked.Wait()
			e.mr.Close()
			return
		}
		_ = e.cmd.Process.Signal(syscall.SIGTERM) // fails only once it has exited
		select {
		case <-e.exited:
		case <-time.After(childStopTimeout):
			e.log.Warn("embedded redis-server did not stop on SIGTERM; killing it",
				zap.Int("pid", e.cmd.Process.Pid), zap.Duration("waited", childStopTimeout))
			_ = e.cmd.Process.Kill()
			<-e.exited
		}
		if err := os.RemoveAll(e.dir); err != nil {
			e.log.Warn("remove the embedded redis-server's directory", zap.String("dir", e.dir), zap.Error(err))
		}
	})
}

// childOutput logs what the child writes, line by line, at debug level,
// and keeps its last line for error messages. It is safe for concurrent
// use.
type childOutput struct {
	log *zap.Logger

	mu       sync.Mutex
	partial  []byte
	lastLine string
}

func (o *childOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(o.partial[:i]))
		o.partial = o.partial[i+1:]
		if line != "" {
			o.lastLine = line
			o.log.Debug("redis-server output", zap.String("line", line))
		}
	}
	return len(p), nil
}

// last returns the last line the child wrote.
func (o *childOutput) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := strings.TrimSpace(string(o.partial)); p != "" {
		return p
	}
	return o.lastLine
}
