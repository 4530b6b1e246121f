package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/forgeq/forgeq/internal/redisurl"
)

// Load reads every setting from, in rising precedence, the built-in
// defaults, the config file named by the --config flag or else by
// FORGEQ_CONFIG (if any), the environment as getenv reports it (an empty
// value counts as unset), and the flags of fs that were set on the command
// line. fs may be nil; it should have the flags of [RegisterFlags], and other
// flags in it are ignored. A nil getenv reads nothing. Load reads no other
// global state, so tests can pass a map-backed getenv.
//
// Load checks every value, reads the TLS files, and returns every problem
// it finds joined into one error; each names the variable, flag or file key
// the value came from, and the value, but never a password. A key in the
// config file that names no setting is an error too. On error the returned
// Config is the zero value. Load is safe for concurrent use.
func Load(fs *pflag.FlagSet, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	var (
		layers []*layer // lowest precedence first
		errs   []error
	)
	push := func(l *layer, err error) {
		if err != nil {
			errs = append(errs, err)
		}
		if l != nil {
			layers = append(layers, l)
		}
	}
	push(defaultLayer())
	push(fileLayer(fs, getenv))
	push(envLayer(getenv))
	push(flagLayer(fs))

	var c Config
	where := make(map[string]string) // setting key: the source of its value
	failed := make(map[string]bool)  // setting key: its value is bad
	for _, s := range specs {
		for i := len(layers) - 1; i >= 0; i-- {
			v, ok := layers[i].values[s.Key]
			if !ok {
				continue
			}
			where[s.Key] = layers[i].where(s.Setting)
			if err := s.apply(&c, v); err != nil {
				// A joined error (several bad schedule entries) names the
				// source on each line.
				each := []error{err}
				if j, ok := err.(interface{ Unwrap() []error }); ok {
					each = j.Unwrap()
				}
				for _, e := range each {
					errs = append(errs, fmt.Errorf("%s: %w", where[s.Key], e))
				}
				failed[s.Key] = true
			}
			break
		}
	}
	errs = append(errs, checkTLS(&c.Redis, where, failed)...)
	errs = append(errs, checkRetryDelay(c.Worker, where, failed)...)
	errs = append(errs, checkAuth(c.HTTP, where, failed)...)
	for i := range c.Worker.Schedule {
		e := &c.Worker.Schedule[i]
		e.Source = fmt.Sprintf("%s: entry %d (%q)", where[keySchedule], i+1, e.Name)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// checkTLS checks that TLS settings come with a TLS URL and builds the TLS
// configuration into r.
func checkTLS(r *Redis, where map[string]string, failed map[string]bool) []error {
	var errs []error
	if !failed["redis.url"] {
		tlsURL := false
		if r.URL != "" {
			p, err := redisurl.Parse(r.URL)
			tlsURL = err == nil && p.TLS()
		}
		url := "no Redis URL is set, so the connection is plain"
		if r.URL != "" {
			url = fmt.Sprintf("the URL from %s is %q", where["redis.url"], redisurl.Redact(r.URL))
		}
		t := r.TLS
		insecure := ""
		if t.InsecureSkipVerify {
			insecure = "true"
		}
		for _, set := range []struct {
			key, value string
		}{
			{keyCAFile, t.CAFile},
			{keyCertFile, t.CertFile},
			{keyKeyFile, t.KeyFile},
			{keyServerName, t.ServerName},
			{keyInsecure, insecure},
		} {
			if set.value != "" && !tlsURL {
				errs = append(errs, fmt.Errorf("%s: %q: TLS settings need a URL that uses TLS (rediss://, rediss+sentinel:// or rediss+cluster://); %s",
					where[set.key], set.value, url))
			}
		}
	}
	cfg, err := r.TLS.build(func(key string) string { return where[key] })
	if err != nil {
		return append(errs, err)
	}
	r.tlsConfig = cfg
	return errs
}

// layer is what one source says: the raw value of each setting it gives,
// by key.
type layer struct {
	values map[string]any
	// where names the source of a setting's value in an error.
	where func(Setting) string
}

func defaultLayer() (*layer, error) {
	m := make(map[string]any, len(specs))
	for _, s := range specs {
		m[s.Key] = s.Default
	}
	return mapLayer(m, func(s Setting) string { return "default of " + s.Key })
}

// envLayer reads the variable of every setting; an empty value is unset.
func envLayer(getenv func(string) string) (*layer, error) {
	m := make(map[string]any)
	for _, s := range specs {
		if v := getenv(s.Env); v != "" {
			m[s.Key] = v
		}
	}
	return mapLayer(m, func(s Setting) string { return s.Env })
}

func mapLayer(m map[string]any, where func(Setting) string) (*layer, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(m, "."), nil); err != nil {
		return nil, err
	}
	values, _ := flatten(k.Raw())
	return &layer{values: values, where: where}, nil
}

// flagLayer reads the setting flags of fs that were set on the command
// line, as the text typed.
func flagLayer(fs *pflag.FlagSet) (*layer, error) {
	l := &layer{values: map[string]any{}, where: func(s Setting) string { return s.Flag }}
	if fs == nil {
		return l, nil
	}
	keys := make(map[string]string, len(specs)) // flag name: setting key
	for _, s := range specs {
		keys[strings.TrimPrefix(s.Flag, "--")] = s.Key
	}
	k := koanf.New(".")
	// With no koanf to consult, posflag skips the flags that were not set.
	p := posflag.ProviderWithFlag(fs, ".", nil, func(f *pflag.Flag) (string, any) {
		return keys[f.Name], f.Value.String()
	})
	if err := k.Load(p, nil); err != nil {
		return nil, fmt.Errorf("read flags: %w", err)
	}
	l.values, _ = flatten(k.Raw())
	return l, nil
}

// fileLayer reads the config file, if one is named. Its errors name the
// file; a key that is no setting is an error, but the rest of the file
// still counts.
func fileLayer(fs *pflag.FlagSet, getenv func(string) string) (*layer, error) {
	path, from := getenv(configEnv), configEnv
	if fs != nil {
		if f := fs.Lookup(configFlag); f != nil && f.Changed {
			// An explicit --config= turns FORGEQ_CONFIG off.
			path, from = f.Value.String(), "--"+configFlag
		}
	}
	if path == "" {
		return nil, nil
	}
	var parser koanf.Parser
	switch ext := filepath.Ext(path); strings.ToLower(ext) {
	case ".yaml", ".yml":
		parser = yaml.Parser()
	case ".toml":
		parser = toml.Parser()
	default:
		return nil, fmt.Errorf("%s: config file %q: unknown extension %q; want .yaml, .yml or .toml", from, path, ext)
	}
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), parser); err != nil {
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: config file %q: %w", from, path, err)
	}
	values, problems := flatten(k.Raw())
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = fmt.Errorf("%s: %s", path, p)
	}
	return &layer{values: values, where: func(s Setting) string { return path + ": key " + s.Key }}, errors.Join(errs...)
}

// byKey and sections index the setting keys and the keys of the maps that
// hold them ("redis", "redis.tls").
var byKey, sections = func() (map[string]bool, map[string]bool) {
	keys, secs := make(map[string]bool), make(map[string]bool)
	for _, s := range specs {
		keys[s.Key] = true
		for i := range len(s.Key) {
			if s.Key[i] == '.' {
				secs[s.Key[:i]] = true
			}
		}
	}
	return keys, secs
}()

// flatten walks a nested koanf map and returns the raw value of each
// setting key in it, and a description of each key that is no setting.
// The value of a setting key may itself be a map (worker.queues).
func flatten(m map[string]any) (values map[string]any, problems []string) {
	values = make(map[string]any)
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			key, v := prefix+name, m[name]
			sub, isMap := v.(map[string]any)
			switch {
			case byKey[key]:
				values[key] = v
			case sections[key] && isMap:
				walk(key+".", sub)
			case sections[key]:
				problems = append(problems, fmt.Sprintf("key %s: want a map of settings, got %v", key, v))
			default:
				problems = append(problems, "unknown key "+key+suggest(key))
			}
		}
	}
	walk("", m)
	return values, problems
}

// suggest returns " (did you mean K?)" for the key or section K closest to
// key, if one is close.
func suggest(key string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	best, bestDist := "", 3
	for _, group := range []map[string]bool{byKey, sections} {
		for k := range group {
			if d := distance(norm(key), norm(k)); d < bestDist || (d == bestDist && k < best) {
				best, bestDist = k, d
			}
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
