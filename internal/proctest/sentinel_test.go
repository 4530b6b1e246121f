package proctest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redisurl"
)

func TestSentinel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	s := proctest.Sentinel(t)
	addrs := s.SentinelAddrs()
	if want := fmt.Sprintf("redis+sentinel://%s/forgeq", strings.Join(addrs, ",")); s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	p, err := redisurl.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewFailoverClient(p.Failover)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}

	old := s.MasterAddr()
	if s.Master().Addr() != old || s.Replica().Addr() == old {
		t.Fatalf("Master() %s, Replica() %s, MasterAddr() %s", s.Master().Addr(), s.Replica().Addr(), old)
	}
	start := time.Now()
	next := s.Failover(t)
	t.Logf("failover %s -> %s took %v", old, next, time.Since(start))
	if next == old || s.MasterAddr() != next {
		t.Fatalf("Failover() = %s, MasterAddr() = %s, old master %s", next, s.MasterAddr(), old)
	}

	// The client finds the new master; the replicated key survived.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := rdb.Set(ctx, "k2", "after", 0).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SET after failover: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := rdb.Get(ctx, "k").Val(); got != "before" {
		t.Errorf("GET k after failover = %q, want %q", got, "before")
	}
}
