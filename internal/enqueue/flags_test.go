package enqueue

import (
	"net"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
)

// closedURL returns the URL of a local port nothing listens on.
func closedURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "redis://" + addr + "/0"
}

// downURL returns the URL of a Redis that is down: a local port that
// closes every connection at once. Unlike closedURL's port, it stays bound
// until the test ends, so that no other test's server can take it
// meanwhile.
func downURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return "redis://" + l.Addr().String() + "/0"
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, give := range []string{"--help", "-h"} {
		r := runCmd(t, nil, "", give)
		if r.code != exitOK {
			t.Fatalf("%s: exit %d, stderr %q", give, r.code, r.stderr)
		}
		for _, want := range []string{"Usage:", "Examples:", "enqueue --file tasks.jsonl", "--wait", "--redis-url", "--redis-embedded-addr", "REDIS_EMBEDDED_ADDR (default 127.0.0.1:6379)", "Exit codes:"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s: help lacks %q", give, want)
			}
		}
		if strings.Contains(r.stdout, "--worker-concurrency") {
			t.Errorf("%s: help lists the worker's flags", give)
		}
	}
}

// TestUsageErrors checks the command-line mistakes that are caught before
// Redis is reached: Redis here is a closed port, and each still exits 2.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}
	tests := []struct {
		name       string
		giveArgs   []string
		wantStderr string
	}{
		{"no type", nil, "missing TYPE"},
		{"too many arguments", []string{"data:process", "{}", "extra"}, `too many arguments ["extra"]`},
		{"unknown flag", []string{"--colour", "data:process"}, "unknown flag: --colour"},
		{"list with a type", []string{"--list", "data:process"}, "--list takes no arguments"},
		{"list with a task flag", []string{"--list", "--queue", "low"}, "--list cannot be combined with --queue"},
		{"file with a type", []string{"--file", "x.jsonl", "data:process"}, "--file takes no TYPE"},
		{"file with an id", []string{"--file", "x.jsonl", "--id", "a"}, "--file cannot be combined with --id"},
		{"file with wait timeout, no wait", []string{"--file", "x.jsonl", "--wait-timeout", "1s"}, `--wait-timeout "1s" needs --wait`},
		{"payload twice", []string{"data:process", "{}", "--payload-file", "p.json"}, "the payload is given twice"},
		{"wait timeout without wait", []string{"data:process", "{}", "--wait-timeout", "1s"}, `--wait-timeout "1s" needs --wait`},
		{"group", []string{"data:process", `{"key":"k","work":1}`, "--group", "g"}, `--group "g": task groups are not supported`},
		{"bad wait timeout", []string{"data:process", `{"key":"k","work":1}`, "--wait", "--wait-timeout", "-1s"}, `--wait-timeout "-1s": must not be negative`},
		{"concurrency without file", []string{"data:process", "{}", "--concurrency", "4"}, "--concurrency only applies to --file"},
		{"concurrency out of range", []string{"--file", "x.jsonl", "--concurrency", "0"}, "--concurrency 0: want 1 to 1024"},
		{"bad progress mode", []string{"--list", "--progress", "sometimes"}, `--progress "sometimes"`},
		{"missing payload file", []string{"data:process", "--payload-file", "/nonexistent/p.json"}, "--payload-file: open /nonexistent/p.json"},
		{"missing task file", []string{"--file", "/nonexistent/t.jsonl"}, "--file: open /nonexistent/t.jsonl"},
		{"bad config value", []string{"data:process", `{"key":"k","work":1}`, "--redis-socket-timeout", "abc"}, "--redis-socket-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, env, "", tt.giveArgs...)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.wantStderr)
			}
			if strings.Contains(r.stderr, "cannot reach Redis") {
				t.Errorf("bad input reached for Redis: %q", r.stderr)
			}
		})
	}
}

// TestJSONErrors checks that under --json an error is also one JSON object
// on stdout.
func TestJSONErrors(t *testing.T) {
	t.Parallel()
	// An empty task catalogue: the type is unknown there too.
	env := map[string]string{"REDIS_CONNECTION_URL": "redis://" + miniredis.RunT(t).Addr()}
	r := runCmd(t, env, "", "nope:type", "{}", "--json")
	if r.code != exitUsage {
		t.Fatalf("exit %d", r.code)
	}
	got := decodeJSON[struct {
		Error string `json:"error"`
	}](t, r.stdout)
	if !strings.Contains(got.Error, `unknown task type "nope:type"`) {
		t.Errorf("error = %q", got.Error)
	}
}

// TestVersion: --version prints the program's name and version and exits
// 0, whatever else is on the command line, without reaching for Redis.
func TestVersion(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_CONNECTION_URL": closedURL(t)}
	for _, args := range [][]string{{"--version"}, {"data:process", "--version"}, {"--file", "x.jsonl", "--version"}} {
		r := runCmd(t, env, "", args...)
		if r.code != exitOK || r.stderr != "" {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
		if !strings.HasPrefix(r.stdout, "enqueue ") || !strings.Contains(r.stdout, "  go:       go") {
			t.Errorf("%q: stdout = %q", args, r.stdout)
		}
	}
}
