package bootstrap

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
)

func TestManagerOptions(t *testing.T) {
	c, err := config.Load(nil, func(k string) string {
		return map[string]string{"REDIS_POOL_SIZE": "7", "REDIS_DEFAULT_TTL": "none", "REDIS_KEY_PREFIX": "app:"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	o := ManagerOptions(c, "redis://h:1", nil)
	if o.URL != "redis://h:1" || o.PoolSize != 7 || o.DefaultTTL != cachemgr.NoExpiry || o.KeyPrefix != "app:" || o.SocketTimeout != 10*time.Second {
		t.Errorf("options = %+v", o)
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
