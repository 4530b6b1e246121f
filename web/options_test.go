package web_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/web"
)

// testManager returns a manager on a fresh miniredis.
func testManager(tb testing.TB) *cachemgr.Manager {
	tb.Helper()
	mr := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	m, err := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

func TestNewRefusesExposedAddrWithoutCredentials(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	tests := []struct {
		giveAddr string
		giveAuth bool
		wantErr  error // nil: accepted
	}{
		{giveAddr: "", wantErr: nil}, // the default, 127.0.0.1:8080
		{giveAddr: "127.0.0.1:8080"},
		{giveAddr: "127.0.0.2:0"},
		{giveAddr: "localhost:8080"},
		{giveAddr: "LOCALHOST:8080"},
		{giveAddr: "[::1]:8080"},
		{giveAddr: "[::ffff:127.0.0.1]:8080"},
		{giveAddr: ":8080", wantErr: web.ErrNoCredentials},
		{giveAddr: "0.0.0.0:8080", wantErr: web.ErrNoCredentials},
		{giveAddr: "[::]:8080", wantErr: web.ErrNoCredentials},
		{giveAddr: "192.168.1.10:8080", wantErr: web.ErrNoCredentials},
		{giveAddr: "web.example.com:8080", wantErr: web.ErrNoCredentials},
		{giveAddr: "0.0.0.0:8080", giveAuth: true},
		{giveAddr: ":8080", giveAuth: true},
	}
	for _, tt := range tests {
		name := tt.giveAddr
		if tt.giveAuth {
			name += " with credentials"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o := web.Options{Addr: tt.giveAddr, Manager: m}
			if tt.giveAuth {
				withAuth(&o)
			}
			_, err := web.New(o)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("New(Addr: %q) = %v, want %v", tt.giveAddr, err, tt.wantErr)
			}
			if err != nil {
				for _, want := range []string{"HTTP_ADDR", "HTTP_AUTH_USERNAME", "HTTP_AUTH_PASSWORD", tt.giveAddr} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %s", err, want)
					}
				}
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	tests := []struct {
		name string
		give web.Options
	}{
		{"no manager", web.Options{}},
		{"addr without port", web.Options{Manager: m, Addr: "127.0.0.1"}},
		{"addr with a bad port", web.Options{Manager: m, Addr: "127.0.0.1:http"}},
		{"username alone", web.Options{Manager: m, AuthUsername: "admin"}},
		{"password alone", web.Options{Manager: m, AuthPassword: "secret"}},
		{"colon in username", web.Options{Manager: m, AuthUsername: "a:b", AuthPassword: "secret"}},
		{"rate limit without period", web.Options{Manager: m, RateLimit: cachemgr.Limit{Rate: 5}}},
		{"negative login limit", web.Options{Manager: m, LoginLimit: cachemgr.Limit{Rate: -1, Period: time.Second}}},
		{"session ttl below a second", web.Options{Manager: m, SessionTTL: time.Millisecond}},
		{"negative body limit", web.Options{Manager: m, MaxBodyBytes: -1}},
		{"compute work too large", web.Options{Manager: m, ComputeWork: web.MaxComputeWork + 1}},
		{"negative drain delay", web.Options{Manager: m, DrainDelay: -time.Second}},
		{"negative cache ttl", web.Options{Manager: m, CacheTTL: -2}},
		{"metrics auth without credentials", web.Options{Manager: m, MetricsAuth: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := web.New(tt.give); !errors.Is(err, web.ErrInvalidOptions) {
				t.Fatalf("New = %v, want an error wrapping ErrInvalidOptions", err)
			}
		})
	}
}
