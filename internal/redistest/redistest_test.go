package redistest_test

import (
	"context"
	"crypto/x509"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/redistest"
)

func TestURL(t *testing.T) {
	t.Parallel()

	url := redistest.URL(t, 15)

	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", url, err)
	}
	if opts.DB != 15 {
		t.Fatalf("URL(t, 15) = %q selects DB %d, want 15", url, opts.DB)
	}

	ping(t, redis.NewClient(opts))
}

func TestPrefix(t *testing.T) {
	t.Parallel()

	re := regexp.MustCompile(`^t[0-9a-f]{8}:$`)
	a, b := redistest.Prefix(t), redistest.Prefix(t)
	for _, p := range []string{a, b} {
		if !re.MatchString(p) {
			t.Errorf("Prefix() = %q, want it to match %s", p, re)
		}
	}
	if a == b {
		t.Errorf("Prefix() returned %q twice", a)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()

	url, caFile := redistest.TLS(t)

	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", url, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificates in %s", caFile)
	}
	opts.TLSConfig.RootCAs = pool

	ping(t, redis.NewClient(opts))
}

func TestACLURL(t *testing.T) {
	t.Parallel()

	url := redistest.ACLURL(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL: %v", err) // url holds a password
	}
	client := redis.NewClient(opts)
	ping(t, client)

	ctx := context.Background()
	allowed := "cache:" + redistest.Prefix(t) + "x"
	t.Cleanup(func() { client.Del(context.Background(), allowed) })
	if err := client.Set(ctx, allowed, "1", time.Minute).Err(); err != nil {
		t.Errorf("SET %s: %v", allowed, err)
	}
	denied := "other:" + redistest.Prefix(t) + "x"
	if err := client.Set(ctx, denied, "1", time.Minute).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("SET %s: err = %v, want NOPERM", denied, err)
	}
	if err := client.Keys(ctx, "*").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("KEYS *: err = %v, want NOPERM", err)
	}
	if err := client.Scan(ctx, 0, "cache:*", 10).Err(); err != nil {
		t.Errorf("SCAN: %v", err)
	}
}

func TestClusterURL(t *testing.T) {
	t.Parallel()

	url := redistest.ClusterURL(t)
	addrs, ok := strings.CutPrefix(url, "redis+cluster://")
	if !ok {
		t.Fatalf("ClusterURL() = %q, want the redis+cluster:// scheme", url)
	}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	t.Cleanup(func() { client.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.ClusterInfo(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER INFO: %v", err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		t.Errorf("CLUSTER INFO = %q, want cluster_state:ok", info)
	}
	// Keys in different slots land on different masters.
	p := redistest.Prefix(t)
	for _, k := range []string{p + "a", p + "b", p + "c", p + "d"} {
		if err := client.Set(ctx, k, "1", time.Minute).Err(); err != nil {
			t.Errorf("SET %s: %v", k, err)
		}
	}
}

// ping pings client and registers its Close with t.Cleanup.
func ping(tb testing.TB, client *redis.Client) {
	tb.Helper()

	tb.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		tb.Fatalf("PING: %v", err)
	}
}
