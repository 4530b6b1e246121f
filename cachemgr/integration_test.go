package cachemgr_test

// Tests against real redis-server: single node, TLS, ACL user and a 3-master
// cluster, named by the REDIS_TEST_* variables (see internal/redistest).
// They skip when a variable is unset, except under CI, where they fail.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/internal/proctest"
	"github.com/forgeq/forgeq/internal/redistest"
)

// Databases of the single test server used by this package's tests.
const (
	dbCache = 1 // shared, every test under its own prefix
	dbAsynq = 3 // TestWipeLeavesAsynqIntact only: it flushes
)

func newReal(t *testing.T, url string, o cachemgr.Options) *cachemgr.Manager {
	t.Helper()
	o.URL = url
	if o.KeyPrefix == "" {
		o.KeyPrefix = redistest.Prefix(t)
	}
	m, err := cachemgr.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.DeletePattern(context.Background(), "*")
		m.Close()
	})
	return m
}

func TestRealTTLExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := newReal(t, redistest.URL(t, dbCache), cachemgr.Options{DefaultTTL: 300 * time.Millisecond})
	if err := m.Set(ctx, "short", "v", 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(ctx, "forever", "v", cachemgr.NoExpiry); err != nil {
		t.Fatal(err)
	}
	ttl := m.Client().PTTL(ctx, m.Key("short")).Val()
	if ttl <= 0 || ttl > 300*time.Millisecond {
		t.Errorf("PTTL = %v, want (0, 300ms]", ttl)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := m.Get(ctx, "short"); !errors.Is(err, cachemgr.ErrMiss) {
		t.Errorf("after expiry: %v", err)
	}
	if ttl := m.Client().TTL(ctx, m.Key("forever")).Val(); ttl != -1 {
		t.Errorf("NoExpiry TTL = %v, want -1 (none)", ttl)
	}
}

func TestRealSyncAndAsync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := newReal(t, redistest.URL(t, dbCache), cachemgr.Options{})
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for i := range 40 {
				k := fmt.Sprintf("%d:%d", g, i)
				if _, err := m.SetAsync(ctx, k, k, time.Minute).Wait(); err != nil {
					t.Error(err)
					return
				}
				if v, err := m.Get(ctx, k); err != nil || v != k {
					t.Errorf("Get(%s) = %q, %v", k, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	n, err := m.DeletePattern(ctx, "*")
	if err != nil || n != 2000 {
		t.Errorf("DeletePattern = %d, %v; want 2000", n, err)
	}
	if s := m.Stats(); s.Batches >= s.BatchedCalls {
		t.Errorf("%d calls in %d pipelines: no coalescing under 50 concurrent callers", s.BatchedCalls, s.Batches)
	}
}

// Wiping the whole cache through the manager leaves every asynq queue, task
// and unique lock in the same Redis untouched.
func TestWipeLeavesAsynqIntact(t *testing.T) {
	url := redistest.URL(t, dbAsynq)
	ctx := context.Background()
	m := newReal(t, url, cachemgr.Options{KeyPrefix: "cache:"})
	if err := m.Client().FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	wipeLeavesAsynqIntact(t, m)
}

func TestWipeLeavesAsynqIntactMiniredis(t *testing.T) {
	t.Parallel()
	b := setup(t, cachemgr.Options{})
	wipeLeavesAsynqIntact(t, b.m)
}

func wipeLeavesAsynqIntact(t *testing.T, m *cachemgr.Manager) {
	t.Helper()
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(m.Client())
	insp := asynq.NewInspectorFromRedisClient(m.Client())
	for i := range 5 {
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("email:deliver", fmt.Appendf(nil, `{"n":%d}`, i)), asynq.Queue("mail")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.EnqueueContext(ctx, asynq.NewTask("report:build", nil), asynq.Queue("mail"), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.EnqueueContext(ctx, asynq.NewTask("sync:once", nil), asynq.Queue("mail"), asynq.Unique(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := m.Set(ctx, fmt.Sprint("item:", i), "v", 0); err != nil {
			t.Fatal(err)
		}
	}
	keysBefore := asynqKeys(t, m.Client())

	n, err := m.DeletePattern(ctx, "*")
	if err != nil || n != 300 {
		t.Fatalf("DeletePattern(*) = %d, %v; want the 300 cache keys", n, err)
	}
	if got := asynqKeys(t, m.Client()); strings.Join(got, " ") != strings.Join(keysBefore, " ") {
		t.Errorf("asynq keys changed:\nbefore %v\nafter  %v", keysBefore, got)
	}
	info, err := insp.GetQueueInfo("mail")
	if err != nil {
		t.Fatal(err)
	}
	if info.Pending != 6 || info.Scheduled != 1 {
		t.Errorf("queue mail: %d pending, %d scheduled; want 6 and 1", info.Pending, info.Scheduled)
	}
	// The unique lock still holds: the duplicate is refused.
	_, err = client.EnqueueContext(ctx, asynq.NewTask("sync:once", nil), asynq.Queue("mail"), asynq.Unique(time.Hour))
	if !errors.Is(err, asynq.ErrDuplicateTask) {
		t.Errorf("duplicate after wipe: %v, want ErrDuplicateTask", err)
	}
}

func asynqKeys(t *testing.T, rdb redis.UniversalClient) []string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), "asynq:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no asynq keys: the test enqueued nothing")
	}
	return sortStrings(keys)
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestRealGetOrComputeOnceAcrossProcesses(t *testing.T) {
	t.Parallel()
	url := redistest.URL(t, dbCache)
	o := cachemgr.Options{KeyPrefix: redistest.Prefix(t)}
	a, b := newReal(t, url, o), newReal(t, url, o)
	computed, hits := stampede(t, []*cachemgr.Manager{a, b}, 50, "cold")
	if computed != 1 {
		t.Fatalf("computations = %d, want exactly 1", computed)
	}
	if hits == 0 {
		t.Error("no caller was served the other process's value")
	}
}

// A cache wipe while another process computes a key leaves that process's
// lock in place: a second process waits for the value instead of computing
// it again.
func TestRealWipeKeepsLiveLocks(t *testing.T) {
	t.Parallel()
	url := redistest.URL(t, dbCache)
	o := cachemgr.Options{KeyPrefix: redistest.Prefix(t)}
	wipeKeepsLiveLocks(t, newReal(t, url, o), newReal(t, url, o))
}

func TestWipeKeepsLiveLocksMiniredis(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	a, b := twoProcesses(t, mr.Addr(), cachemgr.Options{})
	wipeKeepsLiveLocks(t, a, b)
}

func wipeKeepsLiveLocks(t *testing.T, a, b *cachemgr.Manager) {
	ctx := context.Background()
	var computed atomic.Int64
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer releaseOnce() // a failed check must not leave the computation, and Close, hanging
	first := a.GetOrComputeAsync(ctx, "slow", time.Minute, func(context.Context) (string, error) {
		computed.Add(1)
		<-release
		return "by a", nil
	})
	lock := a.Key("__lock__:slow")
	for a.Client().Exists(ctx, lock).Val() == 0 {
		select {
		case <-first.Done():
			t.Fatal(first.Wait())
		case <-time.After(time.Millisecond):
		}
	}
	if err := a.Set(ctx, "other", "x", 0); err != nil {
		t.Fatal(err)
	}
	if n, err := b.DeletePattern(ctx, "*"); err != nil || n != 1 {
		t.Fatalf("DeletePattern = %d, %v; want 1 (the cached value, not the lock)", n, err)
	}
	if a.Client().Exists(ctx, lock).Val() != 1 {
		t.Fatal("the wipe deleted a live lock")
	}
	second := b.GetOrComputeAsync(ctx, "slow", time.Minute, func(context.Context) (string, error) {
		computed.Add(1)
		return "by b", nil
	})
	select {
	case <-second.Done():
		c, err := second.Wait()
		t.Fatalf("the second process did not wait for the first: %+v, %v", c, err)
	case <-time.After(100 * time.Millisecond):
	}
	releaseOnce()
	if c, err := second.Wait(); err != nil || c.Value != "by a" || !c.Hit {
		t.Errorf("second process = %+v, %v; want a's value as a hit", c, err)
	}
	if n := computed.Load(); n != 1 {
		t.Errorf("computations = %d, want 1", n)
	}
}

// A holder that dies leaves its lock to expire; a waiter then computes.
func TestRealGetOrComputeLockExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := newReal(t, redistest.URL(t, dbCache), cachemgr.Options{})
	if err := m.Client().Set(ctx, m.Key("__lock__:k"), "dead-process", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v, hit, err := m.GetOrCompute(ctx, "k", 0, func(context.Context) (string, error) { return "taken over", nil })
	if err != nil || hit || v != "taken over" {
		t.Fatalf("= %q, %v, %v", v, hit, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("computed after %v, before the dead holder's lock expired", d)
	}
}

func TestRealCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := newReal(t, redistest.ClusterURL(t), cachemgr.Options{})
	cc, ok := m.Client().(*redis.ClusterClient)
	if !ok {
		t.Fatalf("client is %T, want a cluster client", m.Client())
	}
	if err := m.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 600)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
		if _, err := m.SetAsync(ctx, keys[i], i, 0).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	// The keys spread over every master.
	var mu sync.Mutex
	perMaster := map[string]int{}
	countOnMasters := func() int {
		clear(perMaster)
		total := 0
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			var n int
			iter := c.Scan(ctx, 0, m.KeyPrefix()+"*", 1000).Iterator()
			for iter.Next(ctx) {
				n++
			}
			mu.Lock()
			perMaster[c.Options().Addr] = n
			total += n
			mu.Unlock()
			return iter.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		return total
	}
	if total := countOnMasters(); total != 600 || len(perMaster) != 3 {
		t.Fatalf("%d keys over %d masters: %v", total, len(perMaster), perMaster)
	}
	for addr, n := range perMaster {
		if n == 0 {
			t.Fatalf("master %s holds no key; the test would not show a cluster-wide delete", addr)
		}
	}

	// Multi-key delete across slots: no CROSSSLOT.
	n, err := m.Delete(ctx, keys[:10]...)
	if err != nil || n != 10 {
		t.Errorf("Delete(10 keys) = %d, %v", n, err)
	}
	n, err = m.DeleteAsync(ctx, keys[10:20]...).Wait()
	if err != nil || n != 10 {
		t.Errorf("DeleteAsync(10 keys) = %d, %v", n, err)
	}
	if v, err := m.GetAsync(ctx, "k599").Wait(); err != nil || v != "599" {
		t.Errorf("GetAsync = %q, %v", v, err)
	}

	n, err = m.DeletePattern(ctx, "*")
	if err != nil || n != 580 {
		t.Errorf("DeletePattern(*) = %d, %v; want 580", n, err)
	}
	if total := countOnMasters(); total != 0 {
		t.Errorf("%d keys left after the wipe: %v", total, perMaster)
	}
}

func TestRealClusterGetOrCompute(t *testing.T) {
	t.Parallel()
	url := redistest.ClusterURL(t)
	o := cachemgr.Options{KeyPrefix: redistest.Prefix(t)}
	a, b := newReal(t, url, o), newReal(t, url, o)
	if computed, _ := stampede(t, []*cachemgr.Manager{a, b}, 25, "cold"); computed != 1 {
		t.Fatalf("computations = %d, want exactly 1", computed)
	}
}

func TestRealTLS(t *testing.T) {
	t.Parallel()
	url, caFile := redistest.TLS(t)
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA in " + caFile)
	}
	ctx := context.Background()
	m := newReal(t, url, cachemgr.Options{TLSConfig: &tls.Config{RootCAs: pool}})
	if err := m.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetAsync(ctx, "k", "over tls", 0).Wait(); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get(ctx, "k"); err != nil || v != "over tls" {
		t.Errorf("Get = %q, %v", v, err)
	}

	// Without our CA the server's certificate does not verify.
	untrusted, err := cachemgr.New(cachemgr.Options{URL: url, SocketTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer untrusted.Close()
	if err := untrusted.Ping(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Ping without the CA = %v, want a certificate error", err)
	}
	// And a TLS config on a plain URL is refused.
	if _, err := cachemgr.New(cachemgr.Options{URL: "redis://127.0.0.1:1", TLSConfig: &tls.Config{}}); !errors.Is(err, cachemgr.ErrInvalidArgument) {
		t.Errorf("TLS config on redis:// = %v", err)
	}
}

// A unix:// URL reaches a real redis-server on its socket, with the
// database it names.
func TestRealUnixSocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "redis.sock")
	r := proctest.RedisServer(t, "--unixsocket", sock, "--unixsocketperm", "700")
	ctx := context.Background()
	m := newReal(t, "unix://"+sock+"?db=2", cachemgr.Options{})
	if err := m.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetAsync(ctx, "k", "over a socket", 0).Wait(); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get(ctx, "k"); err != nil || v != "over a socket" {
		t.Errorf("Get = %q, %v", v, err)
	}
	// The value is in database 2 of that server, seen over TCP.
	tcp := redis.NewClient(&redis.Options{Addr: r.Addr(), DB: 2})
	defer tcp.Close()
	if v, err := tcp.Get(ctx, m.Key("k")).Result(); err != nil || v != "over a socket" {
		t.Errorf("over TCP, db 2: %q, %v", v, err)
	}
}

func TestRealACL(t *testing.T) {
	t.Parallel()
	url := redistest.ACLURL(t)
	ctx := context.Background()
	core, logs := observer.New(zap.DebugLevel)

	// The ACL user may touch cache:* keys only (and asynq's).
	m := newReal(t, url, cachemgr.Options{KeyPrefix: "cache:" + redistest.Prefix(t), Logger: zap.New(core)})
	if err := m.Set(ctx, "k", "v", 0); err != nil {
		t.Fatal(err)
	}
	if n, err := m.DeletePattern(ctx, "*"); err != nil || n != 1 {
		t.Errorf("DeletePattern as ACL user = %d, %v", n, err)
	}

	password := aclPassword(t, url)
	// A write outside the user's keys fails; the failure is logged.
	outside := newReal(t, url, cachemgr.Options{KeyPrefix: "outside:", Logger: zap.New(core)})
	_, err := outside.SetAsync(ctx, "k", "v", 0).Wait()
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("write outside the ACL = %v, want NOPERM", err)
	}
	// A wrong password fails with an error that names neither password.
	wrong := strings.Replace(url, password, "not-the-"+password, 1)
	bad, err := cachemgr.New(cachemgr.Options{URL: wrong})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	err = bad.Ping(ctx)
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	var all []string
	all = append(all, err.Error())
	for _, e := range logs.All() {
		all = append(all, e.Message)
		for k, v := range e.ContextMap() {
			all = append(all, fmt.Sprint(k, "=", v))
		}
	}
	if logs.FilterMessage("async cache write failed").Len() != 1 {
		t.Errorf("the failed write-behind was not logged once: %v", logs.All())
	}
	for _, line := range all {
		if strings.Contains(line, password) {
			t.Errorf("password leaked: %q", line)
		}
	}
}

func aclPassword(t *testing.T, url string) string {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil || o.Password == "" {
		t.Fatalf("REDIS_TEST_ACL_URL has no password")
	}
	return o.Password
}
