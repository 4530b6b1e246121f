package redisurl

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

func TestParseSingle(t *testing.T) {
	tests := []struct {
		give                   string
		wantAddr, wantNet      string
		wantUser, wantPassword string
		wantDB                 int
		wantTLS                bool
	}{
		{give: "redis://localhost:6379", wantAddr: "localhost:6379", wantNet: "tcp"},
		{give: "redis://localhost", wantAddr: "localhost:6379", wantNet: "tcp"},
		{give: "redis://app:s3cret@10.0.0.1:6380/4", wantAddr: "10.0.0.1:6380", wantNet: "tcp", wantUser: "app", wantPassword: "s3cret", wantDB: 4},
		{give: "redis://:onlypass@h:1/2", wantAddr: "h:1", wantNet: "tcp", wantPassword: "onlypass", wantDB: 2},
		{give: "rediss://h:6390", wantAddr: "h:6390", wantNet: "tcp", wantTLS: true},
		{give: "unix:///run/redis.sock?db=3", wantAddr: "/run/redis.sock", wantNet: "unix", wantDB: 3},
		{give: "unix://u:p@/run/redis.sock", wantAddr: "/run/redis.sock", wantNet: "unix", wantUser: "u", wantPassword: "p"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			p, err := Parse(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if p.Kind != Single {
				t.Fatalf("kind = %v, want single", p.Kind)
			}
			o := p.Single
			got := []any{o.Addr, o.Network, o.Username, o.Password, o.DB, o.TLSConfig != nil}
			want := []any{tt.wantAddr, tt.wantNet, tt.wantUser, tt.wantPassword, tt.wantDB, tt.wantTLS}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
			if p.TLS() != tt.wantTLS {
				t.Errorf("TLS() = %v", p.TLS())
			}
		})
	}
}

func TestParseCluster(t *testing.T) {
	p, err := Parse("rediss+cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002?read_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != Cluster {
		t.Fatalf("kind = %v", p.Kind)
	}
	o := p.Cluster
	if d := cmp.Diff([]string{"127.0.0.1:7000", "127.0.0.1:7001", "[::1]:7002"}, o.Addrs); d != "" {
		t.Errorf("addrs (-want +got)\n%s", d)
	}
	if o.Username != "u" || o.Password != "pw" || o.TLSConfig == nil || o.ReadTimeout != 2*time.Second {
		t.Errorf("got user %q pass %q tls %v read %v", o.Username, o.Password, o.TLSConfig != nil, o.ReadTimeout)
	}
}

func TestParseSentinel(t *testing.T) {
	p, err := Parse("redis+sentinel://app:datapw@s1:26379,s2:26380/mymaster/2?sentinel_password=sentpw&sentinel_username=su")
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != Sentinel {
		t.Fatalf("kind = %v", p.Kind)
	}
	o := p.Failover
	got := []any{o.SentinelAddrs, o.MasterName, o.DB, o.Username, o.Password, o.SentinelUsername, o.SentinelPassword}
	want := []any{[]string{"s1:26379", "s2:26380"}, "mymaster", 2, "app", "datapw", "su", "sentpw"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		give     string
		wantPart string
	}{
		{give: "", wantPart: "empty"},
		{give: "localhost:6379", wantPart: "no scheme; want redis://localhost:6379"},
		{give: "redis:/host", wantPart: `"//" missing after the scheme: want redis://host`},
		{give: "redis:host:6379", wantPart: `want redis://host:6379`},
		{give: "rediss:/u:hunter2@host:6380/1", wantPart: `want rediss://u:xxxxx@host:6380/1`},
		{give: "REDIS+CLUSTER:/h1:1,h2:2", wantPart: `want REDIS+CLUSTER://h1:1,h2:2`},
		{give: "http://u:hunter2@h:1", wantPart: `unknown scheme "http"`},
		{give: "redis://u:hunter2@h:1/notadb", wantPart: "database"},
		{give: "redis://u:hunter2@h:1?bogus=1", wantPart: "bogus"},
		{give: "redis://u:hunter2@", wantPart: "missing host"},
		{give: "redis+cluster://u:hunter2@h1:1,,h2:2", wantPart: "empty host"},
		{give: "redis+cluster://u:hunter2@h1:1,h2", wantPart: `"h2": want host:port`},
		{give: "redis+cluster://u:hunter2@h1:1/3", wantPart: "no database"},
		{give: "redis+sentinel://u:hunter2@h1:1", wantPart: "missing master name"},
		{give: "redis+sentinel://u:hunter2@h1:1/m/1/x", wantPart: "want /master[/db]"},
		{give: "redis://u:hunter2@h:1:2:3", wantPart: ""},
		{give: "redis://u:hunter%20two@h:1?x=1", wantPart: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			_, err := Parse(tt.give)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantPart) {
				t.Errorf("error %q does not contain %q", msg, tt.wantPart)
			}
			for _, secret := range []string{"hunter2", "hunter two", "hunter%20two"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error leaks the password: %q", msg)
				}
			}
		})
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ give, want string }{
		{"redis://u:pw@h:1/0", "redis://u:xxxxx@h:1/0"},
		{"redis://h:1", "redis://h:1"},
		{"redis+sentinel://h:1/m?sentinel_password=sp", "redis+sentinel://h:1/m?sentinel_password=xxxxx"},
		{"not a url at all :pw@", "not a url at all :pw@"},
		{"redis:/u:pw@h:1", "redis:/u:xxxxx@h:1"},
		{"rediss:u:pw@h:1", "rediss:u:xxxxx@h:1"},
	}
	for _, tt := range tests {
		if got := Redact(tt.give); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

func TestNewClientAppliesSettings(t *testing.T) {
	p, err := Parse("rediss://h:1")
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{InsecureSkipVerify: true}
	c := p.NewClient(Settings{PoolSize: 7, SocketTimeout: 3 * time.Second, TLSConfig: conf})
	defer c.Close()
	o := c.(*redis.Client).Options()
	if o.PoolSize != 7 || o.ReadTimeout != 3*time.Second || o.WriteTimeout != 3*time.Second || o.DialTimeout != 3*time.Second {
		t.Errorf("pool %d timeouts %v %v %v", o.PoolSize, o.ReadTimeout, o.WriteTimeout, o.DialTimeout)
	}
	if o.TLSConfig == nil || !o.TLSConfig.InsecureSkipVerify || o.TLSConfig.ServerName != "h" {
		t.Errorf("tls config not merged: %+v", o.TLSConfig)
	}
}

func TestDialError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	tests := []struct {
		give    string
		wantErr string // "" for none
	}{
		{give: "redis://" + l.Addr().String() + "/0"},
		{give: "redis://" + closedAddr, wantErr: "connection refused"},
		{give: "redis+cluster://" + l.Addr().String() + "," + closedAddr, wantErr: "dial tcp " + closedAddr},
		{give: "redis+sentinel://" + closedAddr + "/m", wantErr: "connection refused"},
		{give: "unix:///nonexistent/redis.sock", wantErr: "dial unix /nonexistent/redis.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			p, err := Parse(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = p.DialError(ctx)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("DialError = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("DialError = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
