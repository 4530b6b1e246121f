package proctest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of a SentinelSet monitor the master
// under.
const MasterName = "forgeq"

const (
	// sentinelQuorum is how many sentinels must agree that the master is
	// down.
	sentinelQuorum = 2
	// sentinelSettleTimeout bounds how long the sentinels may take to find
	// each other and the replica, and to agree on a new master.
	sentinelSettleTimeout = 30 * time.Second
)

// SentinelSet is a master, a replica of it, and three sentinels monitoring
// the master as MasterName (quorum 2, down-after-milliseconds 1000,
// failover-timeout 5000), all local redis-server processes started by
// Sentinel. Its methods fail the test that started it, so call them from
// that test's goroutine.
type SentinelSet struct {
	tb        testing.TB
	data      [2]*Redis // master and replica; which is which changes on failover
	sentinels [3]*Redis
}

// Sentinel starts a SentinelSet and waits until every sentinel knows the
// master, the replica and the two other sentinels, so that a failover can
// happen. Cleanup stops every process. It takes a few seconds (the
// sentinels find each other through hello messages sent every 2s).
//
// It skips the test when redis-server is not in PATH, except under CI,
// where it fails it.
func Sentinel(tb testing.TB) *SentinelSet {
	tb.Helper()

	s := &SentinelSet{tb: tb}
	s.data[0] = RedisServer(tb)
	s.data[1] = RedisServer(tb, "--replicaof", "127.0.0.1", strconv.Itoa(s.data[0].Port()))
	s.waitReplica(s.data[1], s.data[0], sentinelSettleTimeout)

	for i := range s.sentinels {
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		s.sentinels[i] = newRedis(tb, func(port int) []string {
			// Sentinel rewrites its config file, so it gets a fresh one
			// for each start; a restart forgets what it learnt.
			text := strings.Join([]string{
				"port " + strconv.Itoa(port),
				"bind 127.0.0.1",
				"dir " + dir,
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", MasterName, s.data[0].Port(), sentinelQuorum),
				"sentinel down-after-milliseconds " + MasterName + " 1000",
				"sentinel failover-timeout " + MasterName + " 5000",
				"sentinel parallel-syncs " + MasterName + " 1",
				"",
			}, "\n")
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				tb.Fatal(err)
			}
			return []string{conf, "--sentinel"}
		})
		s.sentinels[i].dir = dir
		s.sentinels[i].startFresh()
	}
	s.waitSettled(s.data[0], sentinelSettleTimeout)
	return s
}

// URL returns "redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/forgeq".
func (s *SentinelSet) URL() string {
	return "redis+sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + MasterName
}

// SentinelAddrs returns the sentinels' addresses.
func (s *SentinelSet) SentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, r := range s.sentinels {
		out[i] = r.Addr()
	}
	return out
}

// Sentinels returns the sentinel processes, to stop or pause one. A
// restarted sentinel starts from its initial configuration.
func (s *SentinelSet) Sentinels() []*Redis { return s.sentinels[:] }

// MasterAddr returns the master's address as the first answering sentinel
// reports it.
func (s *SentinelSet) MasterAddr() string {
	s.tb.Helper()
	var last error
	for _, r := range s.sentinels {
		addr, err := sentinelMaster(r.Addr())
		if err == nil {
			return addr
		}
		last = err
	}
	s.tb.Fatalf("proctest: no sentinel names the master: %v", last)
	return ""
}

// Master returns the data node the sentinels name as the master.
func (s *SentinelSet) Master() *Redis {
	s.tb.Helper()
	addr := s.MasterAddr()
	for _, r := range s.data {
		if r.Addr() == addr {
			return r
		}
	}
	s.tb.Fatalf("proctest: the sentinels name %s, not one of the data nodes", addr)
	return nil
}

// Replica returns the data node that is not the master.
//
// Master and Replica may be stopped, killed or paused like any Redis. A
// restarted data node comes back in the role it was started with (the
// first master, or a replica of it), whatever failovers happened since.
func (s *SentinelSet) Replica() *Redis {
	s.tb.Helper()
	m := s.Master()
	if s.data[0] == m {
		return s.data[1]
	}
	return s.data[0]
}

// Failover makes the replica the master with SENTINEL FAILOVER (which does
// not wait for the sentinels to agree that the master is down; the old
// master keeps running and becomes a replica) and waits until every
// sentinel names the new master and the new master says it is one. It
// first waits until the replica is in sync and known to every sentinel,
// so it can be called again after a failover. It returns the new master's
// address.
//
// Writes the old master acknowledged but had not yet replicated when the
// replica was promoted are lost: Redis replication is asynchronous.
func (s *SentinelSet) Failover(tb testing.TB) string {
	tb.Helper()
	old := s.Master()
	next := s.Replica()
	s.waitReplica(next, old, sentinelSettleTimeout)
	s.waitSettled(old, sentinelSettleTimeout)

	c := redis.NewClient(&redis.Options{Addr: s.sentinels[0].Addr(), MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, "SENTINEL", "FAILOVER", MasterName).Err(); err != nil {
		tb.Fatalf("proctest: SENTINEL FAILOVER %s: %v", MasterName, err)
	}

	deadline := time.Now().Add(sentinelSettleTimeout)
	for {
		agreed := 0
		for _, r := range s.sentinels {
			if addr, err := sentinelMaster(r.Addr()); err == nil && addr == next.Addr() {
				agreed++
			}
		}
		if agreed == len(s.sentinels) && role(next.Addr()) == "master" {
			return next.Addr()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("proctest: failover to %s: %d of %d sentinels name it, its role is %q, after %v",
				next.Addr(), agreed, len(s.sentinels), role(next.Addr()), sentinelSettleTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitSynced waits until the replica follows the master with its link up
// and every sentinel knows the master, the replica and the other
// sentinels. After a failover this takes up to about ten seconds, until a
// sentinel turns the old master into a replica.
func (s *SentinelSet) WaitSynced(tb testing.TB) {
	tb.Helper()
	m := s.Master()
	s.waitReplica(s.Replica(), m, sentinelSettleTimeout)
	s.waitSettled(m, sentinelSettleTimeout)
}

// waitReplica waits until replica reports master as its master with the
// link up.
func (s *SentinelSet) waitReplica(replica, master *Redis, timeout time.Duration) {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		info := infoFields(replica.Addr(), "replication")
		if info["role"] == "slave" && info["master_port"] == strconv.Itoa(master.Port()) &&
			info["master_link_status"] == "up" {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("proctest: %s is not an in-sync replica of %s after %v: %v",
				replica.Addr(), master.Addr(), timeout, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSettled waits until every sentinel names master, is not in a
// failover, and knows one replica and the two other sentinels.
func (s *SentinelSet) waitSettled(master *Redis, timeout time.Duration) {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var bad []string
		for _, r := range s.sentinels {
			st, err := sentinelState(r.Addr())
			switch {
			case err != nil:
				bad = append(bad, fmt.Sprintf("%s: %v", r.Addr(), err))
			case net.JoinHostPort(st["ip"], st["port"]) != master.Addr() || st["flags"] != "master" ||
				st["num-slaves"] != "1" || st["num-other-sentinels"] != "2":
				bad = append(bad, fmt.Sprintf("%s: master %s:%s flags %s replicas %s other sentinels %s",
					r.Addr(), st["ip"], st["port"], st["flags"], st["num-slaves"], st["num-other-sentinels"]))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("proctest: sentinels not settled on master %s after %v:\n%s",
				master.Addr(), timeout, strings.Join(bad, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sentinelMaster asks the sentinel at addr for the master's address.
func sentinelMaster(addr string) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hp, err := c.GetMasterAddrByName(ctx, MasterName).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("get-master-addr-by-name: %v", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// sentinelState returns SENTINEL MASTER's fields from the sentinel at
// addr.
func sentinelState(addr string) (map[string]string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Master(ctx, MasterName).Result()
}

// role returns the "role" INFO field of the server at addr, or "" when it
// does not answer.
func role(addr string) string { return infoFields(addr, "replication")["role"] }

// infoFields returns the fields of INFO section from the server at addr;
// empty when it does not answer.
func infoFields(addr, section string) map[string]string {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	text, err := c.Info(ctx, section).Result()
	out := make(map[string]string)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok {
			out[k] = v
		}
	}
	return out
}
