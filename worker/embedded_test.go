//go:build unix

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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// noRedisServer is exec.LookPath under an empty PATH: nothing is found.
func noRedisServer(file string) (string, error) {
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

// needRedisServer returns the path of redis-server, and skips the test
// when it is not installed (CI installs it: there it is a failure).
func needRedisServer(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath(redisServerBin)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("redis-server is not on PATH under CI: %v", err)
		}
		tb.Skip("install redis-server to test the embedded child process")
	}
	return bin
}

// startEmbeddedFor runs startEmbedded with lookPath and returns the
// embedded Redis, closed at cleanup, and its log.
func startEmbeddedFor(tb testing.TB, addr string, lookPath func(string) (string, error)) (*embeddedRedis, *observer.ObservedLogs) {
	tb.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	e, err := startEmbedded(context.Background(), addr, zap.New(core), lookPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	return e, logs
}

// pdeathsigSupported is whether the child dies with a killed worker.
const pdeathsigSupported = runtime.GOOS == "linux"

// processAlive reports whether pid is a live process: one that takes
// signal 0 and, where /proc tells, is not a zombie waiting to be reaped.
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) || runtime.GOOS != "linux"
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

func TestEmbeddedChild(t *testing.T) {
	t.Parallel()
	needRedisServer(t)

	tests := []struct {
		name     string
		giveAddr func(testing.TB) string
	}{
		{name: "fixed port", giveAddr: freeAddr},
		{name: "port 0", giveAddr: func(testing.TB) string { return "127.0.0.1:0" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			giveAddr := tt.giveAddr(t)
			e, logs := startEmbeddedFor(t, giveAddr, exec.LookPath)

			if e.cmd == nil {
				t.Fatalf("started %s, want a redis-server child", e.describe())
			}
			if strings.HasSuffix(e.Addr(), ":0") || (!strings.HasSuffix(giveAddr, ":0") && e.Addr() != giveAddr) {
				t.Errorf("Addr() = %s, want %s with a real port", e.Addr(), giveAddr)
			}
			pid := e.cmd.Process.Pid
			warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
			if len(warns) != 1 || !strings.Contains(warns[0].Message, fmt.Sprintf("embedded redis-server (child process, pid %d)", pid)) ||
				!strings.Contains(warns[0].Message, "LOST when the worker exits") {
				t.Errorf("warnings %v, want one naming the child process and its pid %d", logs.All(), pid)
			}
			if got := warns[0].ContextMap(); got["redis_impl"] != "redis-server" || got["addr"] != e.Addr() {
				t.Errorf("warning fields %v", got)
			}

			rdb := redis.NewClient(&redis.Options{Addr: e.Addr()})
			defer rdb.Close()
			ctx := context.Background()
			info, err := rdb.Info(ctx, "server", "persistence").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"redis_version:", fmt.Sprintf("process_id:%d", pid), "aof_enabled:0", "rdb_changes_since_last_save:0"} {
				if !strings.Contains(info, want) {
					t.Errorf("INFO lacks %q:\n%s", want, info)
				}
			}
			if save, err := rdb.ConfigGet(ctx, "save").Result(); err != nil || save["save"] != "" {
				t.Errorf("CONFIG GET save = %v, %v; want no snapshots", save, err)
			}
			dir := e.dir
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the child's directory %s is left once it runs: %v", dir, err)
			}

			e.Close()
			e.Close() // a second Close is a no-op
			if processAlive(pid) {
				t.Errorf("redis-server pid %d still runs after Close", pid)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the child's directory %s is left after Close: %v", dir, err)
			}
			refuses(t, e.Addr())
		})
	}
}

func TestEmbeddedFallsBackToMiniredis(t *testing.T) {
	t.Parallel()

	e, logs := startEmbeddedFor(t, "127.0.0.1:0", noRedisServer)
	if e.mr == nil || e.cmd != nil {
		t.Fatalf("started %s, want miniredis", e.describe())
	}
	warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
	if len(warns) != 1 || !strings.Contains(warns[0].Message, "in-memory miniredis") || warns[0].ContextMap()["redis_impl"] != "miniredis" {
		t.Errorf("warnings %v, want one naming miniredis", logs.All())
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 100*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if n, err := rdb.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("a 100ms key exists after 400ms (%d, %v): TTLs do not run", n, err)
	}
	e.Close()
	refuses(t, e.Addr())
}

func TestEmbeddedChildFails(t *testing.T) {
	t.Parallel()
	needRedisServer(t)

	t.Run("exits at once", func(t *testing.T) {
		t.Parallel()
		bin, err := exec.LookPath("false")
		if err != nil {
			t.Skip(err)
		}
		_, err = startEmbedded(context.Background(), freeAddr(t), zap.NewNop(), func(string) (string, error) { return bin, nil })
		if err == nil || !strings.Contains(err.Error(), "exited before answering") {
			t.Errorf("error = %v, want the child's early exit", err)
		}
	})
	t.Run("port taken", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = startEmbedded(context.Background(), l.Addr().String(), zap.NewNop(), exec.LookPath)
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("error = %v, want the address in use", err)
		}
	})
}

// TestEmbeddedChildDiesWithWorker kills a process that started the child
// with SIGKILL and checks that the child goes too.
func TestEmbeddedChildDiesWithWorker(t *testing.T) {
	if os.Getenv("FORGEQ_EMBEDDED_HELPER") == "1" {
		e, err := startEmbedded(context.Background(), "127.0.0.1:0", zap.NewNop(), exec.LookPath)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("pid %d\n", e.cmd.Process.Pid)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	t.Parallel()
	needRedisServer(t)
	if !pdeathsigSupported {
		t.Skip("only Linux kills the child when the worker is killed")
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestEmbeddedChildDiesWithWorker$")
	cmd.Env = append(os.Environ(), "FORGEQ_EMBEDDED_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var pid int
	if _, err := fmt.Fscanf(out, "pid %d\n", &pid); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if !processAlive(pid) {
		t.Fatalf("redis-server pid %d does not run", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("redis-server pid %d still runs 5s after its parent was killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
