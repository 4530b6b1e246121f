// Package redistest gives integration tests the real Redis servers named by
// environment variables.
//
// Every helper skips the test when its variable is unset, except under CI
// (CI non-empty), where a missing server is a failure: .ci/run starts the
// servers and sets the variables. Locally, start the same servers with
//
//	eval "$(bash .ci/run --servers-only)"
//
// and stop them with `bash .ci/run --stop`.
//
// The variables are:
//
//	REDIS_TEST_URL          redis://127.0.0.1:16379
//	REDIS_TEST_TLS_URL      rediss://127.0.0.1:16380
//	REDIS_TEST_TLS_CA       path of the PEM CA file that signed the TLS server's certificate
//	REDIS_TEST_ACL_URL      redis://forgeq:<password>@127.0.0.1:16379
//	REDIS_TEST_CLUSTER_URL  redis+cluster://127.0.0.1:17000,127.0.0.1:17001,127.0.0.1:17002
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Names of the environment variables the helpers read.
const (
	EnvURL        = "REDIS_TEST_URL"
	EnvTLSURL     = "REDIS_TEST_TLS_URL"
	EnvTLSCA      = "REDIS_TEST_TLS_CA"
	EnvACLURL     = "REDIS_TEST_ACL_URL"
	EnvClusterURL = "REDIS_TEST_CLUSTER_URL"
)

// pingTimeout bounds the reachability check URL makes.
const pingTimeout = 2 * time.Second

// URL returns REDIS_TEST_URL with its database number set to db, replacing
// any database already in the URL's path. It pings the server first and fails
// the test if the server does not answer.
//
// The database is shared with every test that asks for the same number: flush
// it in setup, or use Prefix for keys.
func URL(tb testing.TB, db int) string {
	tb.Helper()

	raw := lookup(tb, EnvURL)
	if db < 0 {
		tb.Fatalf("redistest: database number %d is negative", db)
	}
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("redistest: parse %s: %v", EnvURL, err)
	}
	u.Path = "/" + strconv.Itoa(db)
	u.RawPath = ""
	s := u.String()

	opts, err := redis.ParseURL(s)
	if err != nil {
		tb.Fatalf("redistest: parse %s (%s): %v", EnvURL, u.Redacted(), err)
	}
	opts.DialTimeout = pingTimeout
	opts.ReadTimeout = pingTimeout
	opts.WriteTimeout = pingTimeout
	opts.MaxRetries = -1
	client := redis.NewClient(opts)
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		tb.Fatalf("redistest: Redis at %s=%s is unreachable: %v (is it running? `bash .ci/run --servers-only` starts one)",
			EnvURL, u.Redacted(), err)
	}
	return s
}

// TLS returns REDIS_TEST_TLS_URL, the rediss:// URL of a Redis that only
// speaks TLS, and REDIS_TEST_TLS_CA, the path of the PEM file holding the CA
// that signed its certificate. The server does not ask for client
// certificates.
func TLS(tb testing.TB) (url, caFile string) {
	tb.Helper()

	url = lookup(tb, EnvTLSURL)
	caFile = lookup(tb, EnvTLSCA)
	if _, err := os.Stat(caFile); err != nil {
		tb.Fatalf("redistest: %s: %v", EnvTLSCA, err)
	}
	return url, caFile
}

// ACLURL returns REDIS_TEST_ACL_URL, the URL of a Redis user that may run
// ordinary commands, but only on keys under cache:, asynq: and rate:.
// Commands in the @dangerous category (KEYS, FLUSHDB, CONFIG, ...) are denied,
// except INFO; SCAN is allowed. The user may use every Pub/Sub channel.
func ACLURL(tb testing.TB) string {
	tb.Helper()

	return lookup(tb, EnvACLURL)
}

// ClusterURL returns REDIS_TEST_CLUSTER_URL, the redis+cluster:// URL of a
// three-master Redis Cluster, in the form the project's configuration
// accepts: redis+cluster://host:port,host:port,host:port.
func ClusterURL(tb testing.TB) string {
	tb.Helper()

	return lookup(tb, EnvClusterURL)
}

// Prefix returns a key prefix unique to this call, such as "t3fa9c1d2:", so
// that tests sharing a server and database do not see each other's keys.
func Prefix(tb testing.TB) string {
	tb.Helper()

	var b [4]byte
	_, _ = rand.Read(b[:]) // never returns an error
	return "t" + hex.EncodeToString(b[:]) + ":"
}

// lookup returns the environment variable name. When it is unset, it fails
// the test under CI and skips it otherwise.
func lookup(tb testing.TB, name string) string {
	tb.Helper()

	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s unset under CI: .ci/run must start the server", name)
	}
	tb.Skipf("set %s to run (see README)", name)
	return ""
}
