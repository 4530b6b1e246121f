package config_test

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/config"
)

func ExampleLoad() {
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--redis-pool-size=20", "--worker-strict-priority"}); err != nil {
		panic(err)
	}
	environ := map[string]string{
		"REDIS_CONNECTION_URL": "redis://app:s3cret@redis:6379/1",
		"REDIS_DEFAULT_TTL":    "300", // seconds, as in the Python settings
		"REDIS_POOL_SIZE":      "5",   // the flag wins
	}

	cfg, err := config.Load(fs, func(k string) string { return environ[k] })
	if err != nil {
		panic(err)
	}
	fmt.Println(cfg.Redis.Redacted())
	fmt.Println(cfg.Redis.PoolSize, cfg.Redis.DefaultTTL, cfg.Worker.StrictPriority)
	fmt.Println(cfg.Worker.Queues)
	// Output:
	// redis://app:xxxxx@redis:6379/1
	// 20 5m0s true
	// map[critical:6 default:3 low:1]
}

func ExampleLoad_errors() {
	environ := map[string]string{
		"REDIS_CONNECTION_URL": "redis://app:s3cret@redis:6379/x",
		"REDIS_POOL_SIZE":      "abc",
		"WORKER_QUEUES":        "default=0",
	}
	_, err := config.Load(nil, func(k string) string { return environ[k] })
	fmt.Println(err)
	// Output:
	// REDIS_CONNECTION_URL: redis URL "redis://app:xxxxx@redis:6379/x": invalid database number: "x"
	// REDIS_POOL_SIZE: "abc" is not a whole number
	// WORKER_QUEUES: "default=0": weight 0 of queue "default" is too small; want 1 or more
}
