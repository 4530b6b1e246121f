// Package bootstrap turns a config.Config into the process-wide pieces the
// binaries share: the zap logger and the cache manager options. It holds no
// state; cmd/worker and cmd/enqueue call it from main.
package bootstrap

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/config"
)

// ManagerOptions maps the configuration onto cachemgr.Options. url is the
// Redis URL to use (the worker may have picked one when none is
// configured).
func ManagerOptions(c config.Config, url string, log *zap.Logger) cachemgr.Options {
	return cachemgr.Options{
		URL:              url,
		PoolSize:         c.Redis.PoolSize,
		SocketTimeout:    c.Redis.SocketTimeout,
		TLSConfig:        c.Redis.TLSConfig(),
		DefaultTTL:       c.Redis.DefaultTTL, // config.NoExpiry == cachemgr.NoExpiry
		KeyPrefix:        c.Redis.KeyPrefix,
		AsyncMaxInFlight: c.Cache.AsyncMaxInFlight,
		LockTTL:          c.Cache.LockTTL,
		NearCache: cachemgr.NearCacheOptions{
			MaxEntries: c.Cache.NearSize,
			MaxBytes:   int64(c.Cache.NearMaxBytes),
			TTL:        c.Cache.NearTTL,
		},
		Logger: log,
	}
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// NewLogger builds the process logger writing to w: console format on a
// terminal and JSON otherwise, unless c.Format forces one.
func NewLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", c.Level, err)
	}
	format := c.Format
	if format == "" || format == "auto" {
		format = "json"
		if IsTerminal(w) {
			format = "console"
		}
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		ec.TimeKey = "time"
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		if IsTerminal(w) {
			ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("log format %q: want auto, console or json", c.Format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}
