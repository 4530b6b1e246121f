package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/forgeq/forgeq/internal/redisurl"
)

// Keys of the web process's credentials, and of the setting that needs
// them.
const (
	keyAuthUsername = "http.auth_username"
	keyAuthPassword = "http.auth_password"
	keyMetricsAuth  = "http.metrics_auth"
)

// checkUsername accepts a username that HTTP basic auth can carry: no colon
// and no control character.
func checkUsername(s string) (string, error) {
	switch {
	case strings.Contains(s, ":"):
		return "", fmt.Errorf("%q contains a colon, which HTTP basic auth cannot carry in a username", s)
	case strings.ContainsFunc(s, unicode.IsControl):
		return "", fmt.Errorf("%q contains a control character", s)
	}
	return s, nil
}

// checkAuth checks that the username and the password come together. Its
// errors name the username but never the password.
func checkAuth(h HTTP, where map[string]string, failed map[string]bool) []error {
	if failed[keyAuthUsername] || failed[keyAuthPassword] {
		return nil
	}
	switch {
	case h.AuthUsername != "" && h.AuthPassword == "":
		return []error{fmt.Errorf("%s: %q is set without a password (%s); give both or neither",
			where[keyAuthUsername], h.AuthUsername, names(keyAuthPassword))}
	case h.AuthPassword != "" && h.AuthUsername == "":
		return []error{fmt.Errorf("%s: a password is set without a username (%s); give both or neither",
			where[keyAuthPassword], names(keyAuthUsername))}
	case h.MetricsAuth && h.AuthUsername == "" && !failed[keyMetricsAuth]:
		return []error{fmt.Errorf("%s: true needs credentials to check; set %s and %s",
			where[keyMetricsAuth], names(keyAuthUsername), names(keyAuthPassword))}
	}
	return nil
}

// rateValue applies a rate limit given as "requests/period"; with
// allowOff, "off" and "0" mean none. The limit of password attempts does
// not allow off: without it, anyone who reaches the web process could
// guess passwords as fast as it answers.
func rateValue(field func(*Config) *RateLimit, allowOff bool) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := text(v)
		if err != nil {
			return err
		}
		l, err := parseLimit(s, allowOff)
		if err != nil {
			return err
		}
		*field(c) = l
		return nil
	}
}

// prefixesValue applies a comma-separated list (or, in a config file, a
// list) of IP addresses and CIDR prefixes; an address stands for itself
// alone.
func prefixesValue(field func(*Config) *[]netip.Prefix) func(*Config, any) error {
	return func(c *Config, v any) error {
		var items []string
		if list, ok := v.([]any); ok {
			for _, e := range list {
				s, err := text(e)
				if err != nil {
					return err
				}
				items = append(items, s)
			}
		} else {
			s, err := text(v)
			if err != nil {
				return err
			}
			items = strings.Split(s, ",")
		}
		var out []netip.Prefix
		for _, item := range items {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			p, err := parsePrefix(item)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		*field(c) = out
		return nil
	}
}

// parsePrefix parses "10.0.0.0/8", "fd00::/8" or a bare address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix such as 10.0.0.0/8", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or a CIDR prefix such as 10.0.0.0/8", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// rateUnits are the periods that may be written as a bare unit, as in
// "100/s".
var rateUnits = map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}

// parseLimit parses "requests/period": requests a whole number of at least
// 1, period a duration ("1s", "1m", "60") or a bare unit ("s", "m", "h").
// With allowOff, "off" and "0" (in any case, around spaces) are the zero
// RateLimit; without, they are errors and no message offers them.
func parseLimit(s string, allowOff bool) (RateLimit, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "off") || t == "0" {
		if !allowOff {
			return RateLimit{}, fmt.Errorf(`%q: this limit cannot be off; want requests/period ("5/1m", "20/1h")`, s)
		}
		return RateLimit{}, nil
	}
	want, orOff := `want requests/period ("100/1s", "600/1m") or off`, ", or off for no limit"
	if !allowOff {
		want, orOff = `want requests/period ("5/1m", "20/1h")`, ""
	}
	n, p, ok := strings.Cut(t, "/")
	if !ok {
		return RateLimit{}, fmt.Errorf("%q is not a rate limit; %s", s, want)
	}
	rate, err := parseInt(n)
	if err != nil {
		return RateLimit{}, fmt.Errorf("%q: requests %q is not a whole number; %s", s, strings.TrimSpace(n), want)
	}
	if rate < 1 {
		return RateLimit{}, fmt.Errorf("%q: requests %d is too small; want 1 or more%s", s, rate, orOff)
	}
	p = strings.TrimSpace(p)
	period, ok := rateUnits[strings.ToLower(p)]
	if !ok {
		if period, err = parseDuration(p); err != nil {
			return RateLimit{}, fmt.Errorf("%q: period %q is not a duration; %s", s, p, want)
		}
	}
	if period <= 0 {
		return RateLimit{}, fmt.Errorf("%q: period %q is not positive", s, p)
	}
	return RateLimit{Rate: rate, Period: period}, nil
}

// checkPrometheusURL accepts "" or an absolute http or https URL without
// credentials: the dashboard hands the URL to browsers. Its errors show
// the URL with any password redacted.
func checkPrometheusURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	shown := redisurl.Redact(s)
	u, err := url.Parse(s)
	switch {
	case err != nil:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("%q is not a URL: %v", shown, err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return "", fmt.Errorf("%q is not an http:// or https:// URL with a host, such as http://prometheus:9090", shown)
	case u.User != nil:
		return "", fmt.Errorf("%q contains credentials, which the dashboard would hand to every browser", shown)
	}
	return s, nil
}
