// Package config loads forgeq's settings into a typed [Config].
//
// It is the only package that imports koanf. Libraries never read flags or
// the environment; main calls [Load] once and copies the values it needs
// into cachemgr.Options and asynq.Config.
//
// # Sources
//
// Every setting can come from four places. A higher one overrides a lower
// one, setting by setting:
//
//  1. the built-in default;
//  2. an optional config file, YAML (.yaml, .yml) or TOML (.toml), named by
//     the --config flag or, without it, the FORGEQ_CONFIG variable;
//  3. the environment, for example REDIS_POOL_SIZE;
//  4. a command-line flag that was set, for example --redis-pool-size.
//
// [Settings] lists every setting with its file key, variable, flag, default
// and meaning; the README's configuration table and --help are built from it.
//
// A config file nests keys by their dots:
//
//	redis:
//	  url: rediss://cache.internal:6380/0
//	  default_ttl: 30m
//	  tls:
//	    ca_file: /etc/forgeq/ca.pem
//	worker:
//	  queues: {critical: 6, default: 3, low: 1}
//
// A key the file does not know is an error, so a typo never goes unnoticed.
//
// # Values
//
// Durations take Go's form ("10s", "1m30s") or plain seconds ("10", "0.5"),
// as the Python settings did. Booleans take true/false, 1/0 and yes/no. The
// queue list is "name=weight,name=weight", or a map in a file. A rate limit
// is "requests/period" ("100/1s", "600/1m", "100/s"), or off; see
// [RateLimit]. The worker's schedule is a JSON list in the environment or a
// flag, or a list of maps in a file; see [ScheduleEntry].
//
// # Errors
//
// [Load] checks every value and returns all the problems at once, joined
// with [errors.Join]. Each names where the bad value came from (the variable,
// the flag, or the file and key) and the value itself, except that a password
// is never shown, whether in a URL or a [Setting] marked Secret
// (HTTP_AUTH_PASSWORD):
//
//	REDIS_POOL_SIZE: "abc" is not a whole number
//	--redis-default-ttl: "-5" is not positive; want a duration ("1h"), seconds ("3600") or "none"
//	/etc/forgeq.yaml: key redis.url: redis URL "redis://app:xxxxx@h:1/x": invalid database number: "x"
//
// # Usage
//
//	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
//	config.RegisterFlags(fs)
//	if err := fs.Parse(args); err != nil {
//		return err
//	}
//	cfg, err := config.Load(fs, getenv)
//	if err != nil {
//		return fmt.Errorf("load config: %w", err)
//	}
package config
