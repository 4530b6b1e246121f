package report

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The environment variables NewFromEnv reads.
const (
	EnvAccounts  = "REPORT_ACCOUNTS"  // comma-separated accounts (Options.Accounts)
	EnvWork      = "REPORT_DAY_WORK"  // rounds per day (Options.Work)
	EnvRetention = "REPORT_RETENTION" // a Go duration (Options.Retention)
)

// NewFromEnv returns a Service with the Options the variables EnvAccounts,
// EnvWork and EnvRetention set, read with getenv; an unset one keeps its
// default. Errors name the variable.
func NewFromEnv(getenv func(string) string) (*Service, error) {
	var o Options
	if v := getenv(EnvAccounts); v != "" {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				o.Accounts = append(o.Accounts, a)
			}
		}
	}
	if v := getenv(EnvWork); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: not a number", EnvWork, v)
		}
		o.Work = n
	}
	if v := getenv(EnvRetention); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %w", EnvRetention, v, err)
		}
		o.Retention = d
	}
	s, err := New(o)
	if err != nil {
		return nil, fmt.Errorf("%s, %s or %s: %w", EnvAccounts, EnvWork, EnvRetention, err)
	}
	return s, nil
}
