package config_test

import (
	"testing"

	"github.com/forgeq/forgeq/config"
)

// TestRedisLocalURL: with no URL set, the worker and the enqueue CLI both go
// to LocalURL, which follows REDIS_EMBEDDED_ADDR and defaults to
// 127.0.0.1:6379.
func TestRedisLocalURL(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		giveEnv map[string]string
		want    string
	}{
		{name: "default", want: "redis://127.0.0.1:6379"},
		{name: "env", giveEnv: map[string]string{"REDIS_EMBEDDED_ADDR": "127.0.0.1:7001"}, want: "redis://127.0.0.1:7001"},
		{name: "ipv6", giveEnv: map[string]string{"REDIS_EMBEDDED_ADDR": "[::1]:7002"}, want: "redis://[::1]:7002"},
		{
			name:    "a URL set does not change it",
			giveEnv: map[string]string{"REDIS_CONNECTION_URL": "redis://db:6379/1", "REDIS_EMBEDDED_ADDR": "127.0.0.1:7003"},
			want:    "redis://127.0.0.1:7003",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Load(nil, func(k string) string { return tt.giveEnv[k] })
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Redis.LocalURL(); got != tt.want {
				t.Errorf("LocalURL() = %q, want %q", got, tt.want)
			}
		})
	}
}
