package redisurl_test

import (
	"crypto/tls"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/forgeq/forgeq/internal/redisurl"
)

// parseSeeds are real URLs of every form and malformed ones, for FuzzParse.
var parseSeeds = []string{
	"",
	" ",
	"localhost:6379",
	"app:s3cret@localhost:6379/1",
	"//app:s3cret@localhost:6379",
	"redis://localhost:6379",
	"redis://localhost",
	"redis://app:s3cret@10.0.0.1:6380/4",
	"redis://:onlypass@h:1/2",
	"redis://u:hunter%20two@h:1?x=1",
	"redis://u:p%zzw@h:1",
	"redis://u:pw@h:1/0?dial_timeout=3s&read_timeout=6s&pool_size=5&max_retries=2",
	"redis://u:pw@h:1/notadb",
	"redis://u:pw@h:1?bogus=1",
	"redis://u:pw@h:1?db=x",
	"redis://u:pw@",
	"redis://u:pw@h:1:2:3",
	"redis://u:pw@[::1]:6379/1",
	"redis://u:pw@[::1",
	"redis://u:pw@h:99999",
	"redis://u:pw@h:1#frag",
	"redis://u:pw@h:1?password=qpw",
	"redis://h:1?pool_size=-5",
	"redis://h:1?pool_size=3000000000",
	"redis://h:1?min_idle_conns=2&max_idle_conns=1",
	"redis+cluster://h:1?max_active_conns=3000000000",
	"redis+sentinel://h:1/m?max_idle_conns=3000000000",
	"redis://u:a:b:c@h:1",
	"redis://u@h@i:1",
	"REDIS://U:PW@H:1/3",
	"rediss://h:6390",
	"rediss://u:pw@h:6390/2?skip_verify=true",
	"unix:///run/redis.sock?db=3",
	"unix://u:p@/run/redis.sock",
	"unix://",
	"UNIX:///run/redis.sock",
	"redis+cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002?read_timeout=2s",
	"rediss+cluster://u:pw@h1:1,h2:2",
	"redis+cluster://u:pw@h1:1,,h2:2",
	"redis+cluster://u:pw@h1:1,h2",
	"redis+cluster://u:pw@h1:1/3",
	"redis+cluster://h1:1?min_idle_conns=x",
	"REDIS+CLUSTER://h1:1",
	"redis+sentinel://app:datapw@s1:26379,s2:26380/mymaster/2?sentinel_password=sentpw&sentinel_username=su",
	"rediss+sentinel://s1:26379/m",
	"redis+sentinel://u:pw@h1:1",
	"redis+sentinel://u:pw@h1:1/m/1/x",
	"redis+sentinel://u:pw@h1:1/m/notadb",
	"redis+sentinel://h1:1/m?sentinel_password=sp&db=x",
	"redis+sentinel://h1:1/m?sentinel_pass%77ord=encodedkey",
	"redis+sentinel://h1:1/m?Sentinel_Password=casedkey&route_randomly=maybe",
	"REDIS+SENTINEL://h1:1/m",
	"http://u:pw@h:1",
	"redis:/u:pw@h",
	"redis://u:pw@h:1/\x00",
	"redis://u:pw@h\x7f:1",
	"redis://%",
	"://",
}

// FuzzParse checks, for any string, that Parse does not panic, that
// Redact hides every password net/url or Parse finds in it, that Parse's
// error shows the URL only redacted, and that a URL Parse accepts yields
// options of the kind its scheme names and a client.
func FuzzParse(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := redisurl.Parse(raw)
		redacted := redisurl.Redact(raw)
		for _, pw := range urlPasswords(raw) {
			if showsLiterally(redacted, pw) {
				t.Errorf("Redact(%q) = %q shows the password %q", raw, redacted, pw)
			}
		}
		if err != nil {
			if p != nil {
				t.Errorf("Parse(%q) returned both a result and the error %v", raw, err)
			}
			if prefix := "redis URL " + strconv.Quote(redacted) + ": "; !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("Parse(%q) error %q does not start with %q", raw, err, prefix)
			}
			return
		}
		checkParsed(t, raw, p)
		for _, pw := range parsedPasswords(p) {
			if showsLiterally(redacted, pw) {
				t.Errorf("Redact(%q) = %q shows the password %q that Parse found", raw, redacted, pw)
			}
		}

		// Schemes are case-insensitive (RFC 3986, section 3.1).
		scheme, rest, _ := strings.Cut(raw, "://")
		upper := strings.ToUpper(scheme) + "://" + rest
		if q, err := redisurl.Parse(upper); err != nil {
			t.Errorf("Parse(%q) accepts the URL but Parse(%q) fails: %v", raw, upper, err)
		} else if q.Kind != p.Kind {
			t.Errorf("Parse(%q) is %v but Parse(%q) is %v", raw, p.Kind, upper, q.Kind)
		}
	})
}

// passwordChars are the characters FuzzParseHidesPassword uses in
// passwords and user names: those a URL carries unescaped in both the
// userinfo and a query value.
const passwordChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$'()*,"

// secretSchemes are the schemes FuzzParseHidesPassword builds URLs with:
// every accepted one, some in upper case, one Parse rejects and none.
var secretSchemes = append([]string{"http", "REDIS+SENTINEL", "Rediss", ""}, redisurl.Schemes...)

// FuzzParseHidesPassword builds URLs with a password in the userinfo or in
// a password query option around fuzzed hosts and paths. It checks that
// Parse's error and Redact show the password, in any form, no more often
// than they do for the same URL with another password (the fuzzed parts
// may hold the password's text too), that the password does not decide
// whether the URL parses, and that a URL Parse accepts keeps the userinfo
// password.
func FuzzParseHidesPassword(f *testing.F) {
	for i := range secretSchemes {
		for where := range 3 {
			form := uint8(where*16 + i)
			f.Add(form, "app", "hunter2-pw", "h:6379", "/0")
			f.Add(form, "", "Zm9v.YmFy", "h1:1,h2:2", "/mymaster/3?dial_timeout=1s")
			f.Add(form, "u", "(s3cret)", "[::1]:7000", "?read_timeout=bogus")
			f.Add(form, "u", "$dollar$", "h:1,", "/m/notadb")
			f.Add(form, "u", "not-a-db", "h:1", "/not-a-db")
			f.Add(form, "u", "in-host-too", "in-host-too:1", "?in-host-too=1")
			f.Add(form, "u", "portpw", "h:portpw", "")
			f.Add(form, "u", "scheme", "h:1", "?db=1")
		}
	}
	f.Fuzz(func(t *testing.T, form uint8, user, password, hosts, tail string) {
		if len(password) < 6 || strings.Trim(password, passwordChars) != "" || strings.Trim(user, passwordChars) != "" {
			t.Skip("password shorter than 6 or with characters a URL must escape")
		}
		if strings.Contains(password, "x") {
			t.Skip(`Redact's mask "xxxxx" can form a password with an x in it`)
		}
		if strings.Contains(hosts, "@") {
			t.Skip("an @ in the host list makes the userinfo ambiguous")
		}
		if tail != "" && tail[0] != '/' && tail[0] != '?' {
			tail = "/" + tail
		}
		scheme := secretSchemes[int(form)%len(secretSchemes)]
		where := int(form) / 16 % 3
		build := func(pw string) string {
			if where == 0 {
				return scheme + "://" + user + ":" + pw + "@" + hosts + tail
			}
			key := "sentinel_password"
			if where == 2 {
				key = "password"
			}
			// The query starts at the first "?", wherever it is.
			sep := "?"
			if strings.Contains(hosts+tail, "?") {
				sep = "&"
			}
			return scheme + "://" + hosts + tail + sep + key + "=" + pw
		}
		// other is a password of the same length and characters that the
		// fuzzed parts are unlikely to hold.
		other := strings.Repeat("Z", len(password))
		if password == other {
			other = strings.Repeat("Y", len(password))
		}
		raw, rawOther := build(password), build(other)

		if got, gotOther := redisurl.Redact(raw), redisurl.Redact(rawOther); shownMore(got, gotOther, password) {
			t.Errorf("Redact(%q) = %q shows the password %q (with another password: %q)", raw, got, password, gotOther)
		}
		p, err := redisurl.Parse(raw)
		_, errOther := redisurl.Parse(rawOther)
		if (err == nil) != (errOther == nil) {
			t.Fatalf("the password decides whether the URL parses: Parse(%q): %v; Parse(%q): %v", raw, err, rawOther, errOther)
		}
		if err != nil {
			if shownMore(err.Error(), errOther.Error(), password) {
				t.Errorf("Parse(%q) error %q shows the password %q (with another password: %q)", raw, err, password, errOther)
			}
			return
		}
		checkParsed(t, raw, p)
		if where != 0 || strings.Contains(strings.ToLower(tail), "password") || strings.Contains(tail, "%") {
			return
		}
		var got string
		switch p.Kind {
		case redisurl.Single:
			got = p.Single.Password
		case redisurl.Sentinel:
			got = p.Failover.Password
		case redisurl.Cluster:
			got = p.Cluster.Password
		}
		if got != password {
			t.Errorf("Parse(%q): password %q, want %q", raw, got, password)
		}
	})
}

// checkParsed checks a URL that Parse accepted: the kind, TLS and options
// its scheme names, and a client built from it.
func checkParsed(t testing.TB, raw string, p *redisurl.Parsed) {
	t.Helper()
	scheme, _, _ := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	var want redisurl.Kind
	switch scheme {
	case "redis", "rediss", "unix":
		want = redisurl.Single
	case "redis+sentinel", "rediss+sentinel":
		want = redisurl.Sentinel
	case "redis+cluster", "rediss+cluster":
		want = redisurl.Cluster
	default:
		t.Fatalf("Parse(%q) accepted the scheme %q", raw, scheme)
	}
	set := []bool{p.Single != nil, p.Failover != nil, p.Cluster != nil}
	if p.Kind != want {
		t.Fatalf("Parse(%q).Kind = %v, want %v", raw, p.Kind, want)
	}
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	if n != 1 || !set[want] {
		t.Fatalf("Parse(%q) sets single %v, failover %v, cluster %v; want only %v", raw, set[0], set[1], set[2], want)
	}
	if wantTLS := strings.HasPrefix(scheme, "rediss"); p.TLS() != wantTLS {
		t.Errorf("Parse(%q).TLS() = %v, want %v", raw, p.TLS(), wantTLS)
	}
	minIdle := 0
	switch p.Kind {
	case redisurl.Single:
		if wantNet := map[bool]string{true: "unix", false: "tcp"}[scheme == "unix"]; p.Single.Network != wantNet {
			t.Errorf("Parse(%q): network %q, want %q", raw, p.Single.Network, wantNet)
		}
		if p.Single.Addr == "" {
			t.Errorf("Parse(%q): no address", raw)
		}
		minIdle = p.Single.MinIdleConns
	case redisurl.Sentinel:
		if p.Failover.MasterName == "" || len(p.Failover.SentinelAddrs) == 0 {
			t.Errorf("Parse(%q): master %q, sentinels %q", raw, p.Failover.MasterName, p.Failover.SentinelAddrs)
		}
		minIdle = p.Failover.MinIdleConns
	case redisurl.Cluster:
		if len(p.Cluster.Addrs) == 0 {
			t.Errorf("Parse(%q): no cluster addresses", raw)
		}
		minIdle = p.Cluster.MinIdleConns
	}
	if minIdle > 0 {
		return // the pool would dial the fuzzed address at once
	}
	for _, s := range []redisurl.Settings{{}, {PoolSize: 3, SocketTimeout: time.Second, TLSConfig: &tls.Config{}}} {
		c := p.NewClient(s)
		if c == nil {
			t.Fatalf("Parse(%q).NewClient(%+v) = nil", raw, s)
		}
		if err := c.Close(); err != nil {
			t.Errorf("Parse(%q): close the client: %v", raw, err)
		}
	}
}

// urlPasswords returns the passwords net/url finds in raw: the userinfo
// password and the value of every query option whose name contains
// "password", in raw and, when raw has no scheme, in raw with a scheme.
func urlPasswords(raw string) []string {
	forms := []string{raw}
	if !strings.Contains(raw, "://") {
		forms = append(forms, "redis://"+strings.TrimPrefix(raw, "//"))
	}
	var out []string
	for _, form := range forms {
		u, err := url.Parse(form)
		if err != nil {
			continue
		}
		if pw, ok := u.User.Password(); ok {
			out = append(out, pw)
		}
		for k, vs := range u.Query() {
			if strings.Contains(strings.ToLower(k), "password") {
				out = append(out, vs...)
			}
		}
	}
	return out
}

// parsedPasswords returns the passwords in p's options.
func parsedPasswords(p *redisurl.Parsed) []string {
	switch p.Kind {
	case redisurl.Sentinel:
		return []string{p.Failover.Password, p.Failover.SentinelPassword}
	case redisurl.Cluster:
		return []string{p.Cluster.Password}
	default:
		return []string{p.Single.Password}
	}
}

// showsLiterally reports whether s contains pw. An empty password, or one
// with an x, which the "xxxxx" mask can form next to other text, shows
// nowhere.
func showsLiterally(s, pw string) bool {
	return pw != "" && !strings.Contains(pw, "x") && strings.Contains(s, pw)
}

// shownMore reports whether s contains pw, literally, URL-escaped or as %q
// quotes it, more often than other does: s is the text of a URL with the
// password pw, other that of the same URL with another password.
func shownMore(s, other, pw string) bool {
	quoted := strconv.Quote(pw)
	for _, form := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw), quoted[1 : len(quoted)-1]} {
		if strings.Count(s, form) > strings.Count(other, form) {
			return true
		}
	}
	return false
}
