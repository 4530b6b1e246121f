// Package redisurl parses the Redis connection URLs forgeq accepts into
// go-redis options, one form per deployment shape:
//
//	redis://[user[:password]@]host[:port][/db][?option=value...]
//	rediss://...                                  (TLS)
//	unix://[user[:password]@]/path/to/socket[?db=N]
//	redis+sentinel://[user[:password]@]host:port[,host:port...]/master[/db][?sentinel_username=...&sentinel_password=...]
//	rediss+sentinel://...                         (TLS to sentinels and master)
//	redis+cluster://[user[:password]@]host:port[,host:port...][?option=value...]
//	rediss+cluster://...                          (TLS)
//
// Query options are go-redis's own (dial_timeout, read_timeout, pool_size, ...).
//
// Errors never contain the password: they name the URL through [Redact].
package redisurl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"
)

// Kind is the deployment shape a URL names.
type Kind int

// The kinds of URL.
const (
	Single Kind = iota
	Sentinel
	Cluster
)

func (k Kind) String() string {
	switch k {
	case Sentinel:
		return "sentinel"
	case Cluster:
		return "cluster"
	default:
		return "single"
	}
}

// Parsed is a parsed URL. Exactly one of Single, Failover and Cluster is set,
// matching Kind.
type Parsed struct {
	Kind     Kind
	Single   *redis.Options
	Failover *redis.FailoverOptions
	Cluster  *redis.ClusterOptions
}

// Schemes lists the accepted URL schemes.
var Schemes = []string{"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"}

// Parse parses raw. The error names the redacted URL and what is wrong.
// Scheme names are case-insensitive; pool options beyond [MaxPoolSize] are
// errors.
func Parse(raw string) (*Parsed, error) {
	p, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %s", Redact(raw), scrub(err, raw))
	}
	return p, nil
}

func parse(raw string) (*Parsed, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, errors.New("empty")
	}
	given, rest, ok := strings.Cut(raw, "://")
	if !ok {
		if scheme, after, ok := schemeWithoutSlashes(raw); ok {
			return nil, fmt.Errorf(`"//" missing after the scheme: want %s`, Redact(scheme+"://"+after))
		}
		if _, _, err := net.SplitHostPort(raw); err == nil && !strings.ContainsAny(raw, "/@") {
			return nil, fmt.Errorf("no scheme; want redis://%s", raw)
		}
		return nil, fmt.Errorf("no scheme; want one of %s", strings.Join(Schemes, ", "))
	}
	// Schemes are case-insensitive (RFC 3986); url.Parse lowers them too.
	scheme := strings.ToLower(given)
	switch scheme {
	case "redis", "rediss", "unix":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		if err := checkPool(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns); err != nil {
			return nil, err
		}
		if scheme != "unix" {
			h := hostOf(rest)
			if h == "" {
				return nil, errors.New("missing host")
			}
			if strings.Contains(h, ":") && !(strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]")) {
				if _, _, err := net.SplitHostPort(h); err != nil {
					return nil, fmt.Errorf("host %q: want host[:port]", h)
				}
			}
		}
		return &Parsed{Kind: Single, Single: o}, nil
	case "redis+cluster", "rediss+cluster":
		base := strings.TrimSuffix(scheme, "+cluster")
		u, addrs, err := split(base, rest)
		if err != nil {
			return nil, err
		}
		if u.Path != "" && u.Path != "/" {
			return nil, errors.New("a cluster URL has no database path (a cluster has only db 0)")
		}
		u.Path = ""
		q := u.Query()
		for _, a := range addrs[1:] {
			q.Add("addr", a)
		}
		u.RawQuery = q.Encode()
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, err
		}
		if err := checkPool(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns); err != nil {
			return nil, err
		}
		return &Parsed{Kind: Cluster, Cluster: o}, nil
	case "redis+sentinel", "rediss+sentinel":
		base := strings.TrimSuffix(scheme, "+sentinel")
		u, addrs, err := split(base, rest)
		if err != nil {
			return nil, err
		}
		segs := strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' })
		if len(segs) == 0 {
			return nil, errors.New("missing master name: want " + scheme + "://host:port[,host:port]/master[/db]")
		}
		if len(segs) > 2 {
			return nil, fmt.Errorf("path %q: want /master[/db]", u.Path)
		}
		q := u.Query()
		sentUser, sentPass := q.Get("sentinel_username"), q.Get("sentinel_password")
		q.Del("sentinel_username")
		q.Del("sentinel_password")
		q.Set("master_name", segs[0])
		if len(segs) == 2 {
			q.Set("db", segs[1])
		}
		if u.User != nil {
			q.Set("username", u.User.Username())
			if pw, ok := u.User.Password(); ok {
				q.Set("password", pw)
			}
			u.User = nil
		}
		for _, a := range addrs[1:] {
			q.Add("addr", a)
		}
		u.Path = ""
		u.RawQuery = q.Encode()
		o, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, err
		}
		if err := checkPool(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns); err != nil {
			return nil, err
		}
		o.SentinelUsername, o.SentinelPassword = sentUser, sentPass
		return &Parsed{Kind: Sentinel, Failover: o}, nil
	default:
		return nil, fmt.Errorf("unknown scheme %q; want one of %s", given, strings.Join(Schemes, ", "))
	}
}

// MaxPoolSize is the largest connection count a URL may give in
// pool_size, min_idle_conns, max_idle_conns and max_active_conns. go-redis
// sizes a pool's structures up front: a pool of a hundred million
// connections takes tens of gigabytes before it dials, and a negative
// pool_size or a count beyond int32 makes its constructors panic.
const MaxPoolSize = 1 << 16

// checkPool checks the pool options of a parsed URL against MaxPoolSize.
func checkPool(poolSize, minIdle, maxIdle, maxActive int) error {
	for _, c := range []struct {
		name string
		n    int
	}{{"pool_size", poolSize}, {"min_idle_conns", minIdle}, {"max_idle_conns", maxIdle}, {"max_active_conns", maxActive}} {
		if c.n < 0 || c.n > MaxPoolSize {
			return fmt.Errorf("%s %d: want 0 to %d", c.name, c.n, MaxPoolSize)
		}
	}
	return nil
}

// schemeWithoutSlashes recognises a URL written with one of Schemes but
// without the "//" after it ("redis:/host", "redis:host:6379"), returning
// the scheme as written and the rest without its leading slashes.
func schemeWithoutSlashes(raw string) (scheme, rest string, ok bool) {
	given, after, found := strings.Cut(raw, ":")
	if !found || !slices.Contains(Schemes, strings.ToLower(given)) {
		return "", "", false
	}
	rest = strings.TrimLeft(after, "/")
	if rest == "" {
		return "", "", false
	}
	return given, rest, true
}

// split parses "userinfo@h1:p1,h2:p2/path?query" into a URL on the first host
// with scheme base, and the list of all host:port addresses.
func split(base, rest string) (*url.URL, []string, error) {
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			return nil, nil, errors.New("empty host in host list")
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return nil, nil, fmt.Errorf("host %q: want host:port", h)
		}
		addrs = append(addrs, h)
	}
	u, err := url.Parse(base + "://" + userinfo + addrs[0] + tail)
	if err != nil {
		return nil, nil, err
	}
	return u, addrs, nil
}

func hostOf(rest string) string {
	authority := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority = rest[:i]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		authority = authority[i+1:]
	}
	return authority
}

// scrub renders err without the URL that url.Parse embeds in its errors and
// without any password found in raw.
func scrub(err error, raw string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	for _, s := range secrets(raw) {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}

// secrets returns the passwords written in raw: the userinfo password and
// any password-like query value.
func secrets(raw string) []string {
	var out []string
	if _, rest, ok := strings.Cut(raw, "://"); ok {
		out = userPassword(out, rest, true)
	} else {
		if _, after, ok := schemeWithoutSlashes(raw); ok {
			// "redis:/user:pw@host" carries its password as a URL does.
			out = userPassword(out, after, true)
		}
		// A URL without its scheme ("user:pw@host", "//user:pw@host")
		// still carries the password, and "redis:pw@host" may be one:
		// user "redis".
		out = userPassword(out, strings.TrimPrefix(raw, "//"), false)
	}
	if i := strings.Index(raw, "?"); i >= 0 {
		for _, kv := range strings.Split(raw[i+1:], "&") {
			k, v, _ := strings.Cut(kv, "=")
			// net/url decodes the name: "sentinel_pass%77ord" is
			// sentinel_password.
			if dk, err := url.QueryUnescape(k); err == nil {
				k = dk
			}
			if strings.Contains(strings.ToLower(k), "password") && v != "" {
				out = append(out, v)
				if dec, err := url.QueryUnescape(v); err == nil && dec != v {
					out = append(out, dec)
				}
			}
		}
	}
	return out
}

// userPassword appends to out the password of the userinfo of rest, the
// part of a URL after its scheme, and its decoded form.
func userPassword(out []string, rest string, hasScheme bool) []string {
	authority := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority = rest[:i]
	}
	// Without a scheme, text with a space before its @ is no URL.
	if i := strings.LastIndex(authority, "@"); i >= 0 && (hasScheme || !strings.ContainsFunc(authority[:i], unicode.IsSpace)) {
		if _, pw, ok := strings.Cut(authority[:i], ":"); ok && pw != "" {
			out = append(out, pw)
			if dec, err := url.PathUnescape(pw); err == nil && dec != pw {
				out = append(out, dec)
			}
		}
	}
	return out
}

// Redact returns raw with every password replaced by "xxxxx", for logs and
// error messages. It works on URLs that do not parse, too.
func Redact(raw string) string {
	out := raw
	for _, s := range secrets(raw) {
		out = strings.ReplaceAll(out, s, "xxxxx")
	}
	return out
}

// Settings are the values forgeq applies on top of a parsed URL. A zero field
// leaves the URL's (or go-redis's) value alone.
type Settings struct {
	PoolSize      int
	SocketTimeout time.Duration // dial, read and write
	TLSConfig     *tls.Config   // replaces the URL's default TLS config when set
	// MaxRetries, when not 0, replaces go-redis's retries of a failed
	// command (-1: none, for commands that are not safe to send twice).
	MaxRetries int
}

// NewClient builds the client for p with s applied. It does not dial.
func (p *Parsed) NewClient(s Settings) redis.UniversalClient {
	switch p.Kind {
	case Cluster:
		o := *p.Cluster
		if s.MaxRetries != 0 {
			o.MaxRetries = s.MaxRetries
		}
		if s.PoolSize > 0 {
			o.PoolSize = s.PoolSize
		}
		if s.SocketTimeout > 0 {
			o.DialTimeout, o.ReadTimeout, o.WriteTimeout = s.SocketTimeout, s.SocketTimeout, s.SocketTimeout
		}
		o.TLSConfig = tlsFor(o.TLSConfig, s.TLSConfig)
		return redis.NewClusterClient(&o)
	case Sentinel:
		o := *p.Failover
		if s.MaxRetries != 0 {
			o.MaxRetries = s.MaxRetries
		}
		if s.PoolSize > 0 {
			o.PoolSize = s.PoolSize
		}
		if s.SocketTimeout > 0 {
			o.DialTimeout, o.ReadTimeout, o.WriteTimeout = s.SocketTimeout, s.SocketTimeout, s.SocketTimeout
		}
		o.TLSConfig = tlsFor(o.TLSConfig, s.TLSConfig)
		return redis.NewFailoverClient(&o)
	default:
		o := *p.Single
		if s.MaxRetries != 0 {
			o.MaxRetries = s.MaxRetries
		}
		if s.PoolSize > 0 {
			o.PoolSize = s.PoolSize
		}
		if s.SocketTimeout > 0 {
			o.DialTimeout, o.ReadTimeout, o.WriteTimeout = s.SocketTimeout, s.SocketTimeout, s.SocketTimeout
		}
		o.TLSConfig = tlsFor(o.TLSConfig, s.TLSConfig)
		return redis.NewClient(&o)
	}
}

// tlsFor merges the configured TLS settings into the URL's. The URL decides
// whether TLS is on (rediss); the configured config supplies CA, client
// certificate and verification, keeping the URL's server name when the
// configured one has none.
func tlsFor(fromURL, configured *tls.Config) *tls.Config {
	if fromURL == nil || configured == nil {
		return fromURL
	}
	c := configured.Clone()
	if c.ServerName == "" {
		c.ServerName = fromURL.ServerName
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// TLS reports whether the URL asks for TLS.
func (p *Parsed) TLS() bool {
	switch p.Kind {
	case Cluster:
		return p.Cluster.TLSConfig != nil
	case Sentinel:
		return p.Failover.TLSConfig != nil
	default:
		return p.Single.TLSConfig != nil
	}
}

// Addrs returns the network ("tcp" or "unix") and the addresses a client
// for the URL dials first: the server, the sentinels or the cluster's seed
// nodes.
func (p *Parsed) Addrs() (network string, addrs []string) {
	switch p.Kind {
	case Cluster:
		return "tcp", p.Cluster.Addrs
	case Sentinel:
		return "tcp", p.Failover.SentinelAddrs
	default:
		network = p.Single.Network
		if network == "" {
			network = "tcp"
		}
		return network, []string{p.Single.Addr}
	}
}

// DialError dials each of the URL's Addrs once, without TLS or any Redis
// command, and returns the first failure, such as "dial tcp 10.0.0.5:6379:
// connect: connection refused"; nil when every address takes a connection.
// It tells why a client could not connect when all the client reports is
// its deadline. ctx bounds the dials.
func (p *Parsed) DialError(ctx context.Context) error {
	network, addrs := p.Addrs()
	var d net.Dialer
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, a)
		if err != nil {
			return err
		}
		conn.Close()
	}
	return nil
}
