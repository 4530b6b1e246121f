package bootstrap

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
	"github.com/forgeq/forgeq/internal/proctest"
)

func TestManagerOptions(t *testing.T) {
	c, err := config.Load(nil, func(k string) string {
		return map[string]string{"REDIS_POOL_SIZE": "7", "REDIS_DEFAULT_TTL": "none", "REDIS_KEY_PREFIX": "app:",
			"CACHE_NEAR_SIZE": "500", "CACHE_NEAR_MAX_BYTES": "4096", "CACHE_NEAR_TTL": "5s"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	o := ManagerOptions(c, "redis://h:1", nil)
	if o.URL != "redis://h:1" || o.PoolSize != 7 || o.DefaultTTL != cachemgr.NoExpiry || o.KeyPrefix != "app:" || o.SocketTimeout != 10*time.Second {
		t.Errorf("options = %+v", o)
	}
	if want := (cachemgr.NearCacheOptions{MaxEntries: 500, MaxBytes: 4096, TTL: 5 * time.Second}); o.NearCache != want {
		t.Errorf("NearCache = %+v, want %+v", o.NearCache, want)
	}
}

func TestNewLoggerJSONWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(config.Log{Level: "info", Format: "auto"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("shown")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if line["msg"] != "shown" {
		t.Errorf("line = %v", line)
	}
	if _, err := NewLogger(config.Log{Level: "loud"}, &buf); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Errorf("bad level: %v", err)
	}
}

// readLine reads from r until a line end, or fails after timeout.
func readLine(tb testing.TB, r io.Reader, timeout time.Duration) string {
	tb.Helper()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		return line
	case <-time.After(timeout):
		tb.Fatalf("nothing read within %v", timeout)
		return ""
	}
}

// TestNewLoggerConsoleOnATerminal: under "auto" a logger writing to a
// terminal uses zap's console format with coloured levels; "json" forces
// JSON there too.
func TestNewLoggerConsoleOnATerminal(t *testing.T) {
	ptmx, tty := proctest.Terminal(t)
	if !IsTerminal(tty) {
		t.Fatal("IsTerminal is false for a pseudo-terminal")
	}

	log, err := NewLogger(config.Log{Level: "info", Format: "auto"}, tty)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("worker started", zap.String("queue", "default"))
	line := readLine(t, ptmx, 5*time.Second)
	console := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}\t\x1b\[34mINFO\x1b\[0m\tworker started\t\{"queue": "default"\}\r?\n$`)
	if !console.MatchString(line) {
		t.Errorf("line = %q, want the console format with a blue INFO", line)
	}

	log, err = NewLogger(config.Log{Level: "info", Format: "json"}, tty)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("shown")
	var m map[string]any
	if line := readLine(t, ptmx, 5*time.Second); json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "shown" {
		t.Errorf("LOG_FORMAT=json on a terminal: line = %q, want JSON", line)
	}
}
