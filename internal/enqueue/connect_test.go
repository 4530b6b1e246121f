package enqueue

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// TestRedisUnreachable: nothing listens at the URL. The command says so
// quickly, without the password, and exits 1.
func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	url := strings.Replace(closedURL(t), "redis://", "redis://app:hunter2@", 1)
	for _, args := range [][]string{
		{"data:process", `{"key": "k", "work": 1}`},
		{"--file", writeFile(t, "t.jsonl", `{"type": "data:process", "payload": {"key": "k", "work": 1}}`)},
	} {
		r := runCmd(t, map[string]string{"REDIS_CONNECTION_URL": url}, "", args...)
		if r.code != exitFailure {
			t.Errorf("%s: exit %d, want 1; stderr %q", args[0], r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "cannot reach Redis at redis://app:xxxxx@127.0.0.1:") || !strings.Contains(r.stderr, "REDIS_CONNECTION_URL") {
			t.Errorf("%s: stderr = %q", args[0], r.stderr)
		}
		if strings.Contains(r.stderr+r.stdout, "hunter2") {
			t.Errorf("%s: the password is printed: %q", args[0], r.stderr)
		}
		if r.took > 5*time.Second {
			t.Errorf("%s: took %v", args[0], r.took)
		}
	}
}

// TestRedisSilent: something accepts connections but never answers. The
// command gives up after the socket timeout instead of hanging.
func TestRedisSilent(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // hold it open, say nothing
		}
	}()
	env := map[string]string{
		"REDIS_CONNECTION_URL": "redis://" + l.Addr().String() + "/0",
		"REDIS_SOCKET_TIMEOUT": "300ms",
	}
	r := runCmd(t, env, "", "data:process", `{"key": "k", "work": 1}`)
	if r.code != exitFailure || !strings.Contains(r.stderr, "cannot reach Redis") {
		t.Errorf("exit %d, stderr %q; want 1 and a clear message", r.code, r.stderr)
	}
	if r.took > 2*time.Second {
		t.Errorf("took %v with a 300ms socket timeout", r.took)
	}
}

// TestDefaultURL: with no URL configured the command goes to
// 127.0.0.1:6379 and says where that address comes from.
func TestDefaultURL(t *testing.T) {
	t.Parallel()
	c := &cli{stderr: io.Discard, getenv: func(k string) string {
		return map[string]string{"REDIS_SOCKET_TIMEOUT": "200ms"}[k]
	}}
	cfg, err := c.loadConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.connect(t.Context(), cfg)
	if err == nil {
		k.close()
		t.Skip("a Redis answers on 127.0.0.1:6379")
	}
	if !strings.Contains(err.Error(), "redis://127.0.0.1:6379 (REDIS_EMBEDDED_ADDR, as no REDIS_CONNECTION_URL") {
		t.Errorf("error = %q", err)
	}
}

// TestEmbeddedAddr: with no URL configured the command connects where the
// worker uses or embeds its Redis, REDIS_EMBEDDED_ADDR (or the flag
// --redis-embedded-addr), and when nothing answers there it names that
// address and asks whether the worker runs.
func TestEmbeddedAddr(t *testing.T) {
	t.Parallel()

	t.Run("reaches the Redis there", func(t *testing.T) {
		t.Parallel()
		for _, viaFlag := range []bool{false, true} {
			mr := miniredis.RunT(t)
			env := map[string]string{"REDIS_EMBEDDED_ADDR": mr.Addr()}
			args := []string{"data:process", `{"key": "k", "work": 1}`, "--id", "embedded-1"}
			if viaFlag {
				env = nil
				args = append(args, "--redis-embedded-addr", mr.Addr())
			}
			r := runCmd(t, env, "", args...)
			if r.code != exitOK {
				t.Fatalf("flag %v: exit %d, stderr %q", viaFlag, r.code, r.stderr)
			}
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { rdb.Close() })
			if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("default", "embedded-1"); err != nil {
				t.Errorf("flag %v: the task is not in the Redis at %s: %v", viaFlag, mr.Addr(), err)
			}
		}
	})

	t.Run("nothing there", func(t *testing.T) {
		t.Parallel()
		addr := strings.TrimSuffix(strings.TrimPrefix(closedURL(t), "redis://"), "/0")
		r := runCmd(t, map[string]string{"REDIS_EMBEDDED_ADDR": addr, "REDIS_SOCKET_TIMEOUT": "1s"}, "", "data:process", `{"key": "k", "work": 1}`)
		if r.code != exitFailure {
			t.Fatalf("exit %d, want 1; stderr %q", r.code, r.stderr)
		}
		for _, want := range []string{
			"cannot reach Redis at redis://" + addr + " (REDIS_EMBEDDED_ADDR, as no REDIS_CONNECTION_URL or --redis-url is set)",
			"Is the worker running?",
			"uses or embeds a Redis at " + addr,
		} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
		}
	})

	t.Run("not an address", func(t *testing.T) {
		t.Parallel()
		r := runCmd(t, map[string]string{"REDIS_EMBEDDED_ADDR": "localhost"}, "", "data:process", `{"key": "k", "work": 1}`)
		if r.code != exitUsage || !strings.Contains(r.stderr, `REDIS_EMBEDDED_ADDR: "localhost" is not host:port`) {
			t.Errorf("exit %d, stderr %q; want 2, naming the variable and the value", r.code, r.stderr)
		}
	})

	t.Run("a URL wins", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t)
		url := closedURL(t)
		r := runCmd(t, map[string]string{"REDIS_CONNECTION_URL": url, "REDIS_EMBEDDED_ADDR": mr.Addr()}, "", "data:process", `{"key": "k", "work": 1}`)
		if r.code != exitFailure || !strings.Contains(r.stderr, "cannot reach Redis at "+url+" (REDIS_CONNECTION_URL or --redis-url)") {
			t.Errorf("exit %d, stderr %q; want 1, naming the URL", r.code, r.stderr)
		}
		if strings.Contains(r.stderr, "Is the worker running?") {
			t.Errorf("stderr %q blames the worker for a URL set by hand", r.stderr)
		}
	})
}

// TestRedisRefusedShortTimeout: with a socket timeout shorter than
// go-redis's own dial attempts, the ping only sees its deadline; the
// error still says the connection was refused.
func TestRedisRefusedShortTimeout(t *testing.T) {
	t.Parallel()
	r := runCmd(t, map[string]string{"REDIS_CONNECTION_URL": closedURL(t), "REDIS_SOCKET_TIMEOUT": "0.2"}, "", "data:process", `{"key": "k", "work": 1}`)
	if r.code != exitFailure || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("exit %d, stderr %q; want 1 and connection refused", r.code, r.stderr)
	}
}
