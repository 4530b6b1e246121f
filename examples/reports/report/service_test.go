package report_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/forgeq/forgeq/examples/reports/report"
)

// t0 is the tests' "now": 2026-03-10 12:30 UTC, so that every day up to
// 2026-03-09 is over.
var t0 = time.Date(2026, 3, 10, 12, 30, 0, 0, time.UTC)

// clock is a settable clock, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// newService returns a Service with o on a clock at t0 (unless o has one),
// a small Work and the default accounts.
func newService(tb testing.TB, o report.Options) (*report.Service, *clock) {
	tb.Helper()
	c := newClock(t0)
	if o.Now == nil {
		o.Now = c.now
	}
	if o.Work == 0 {
		o.Work = 100
	}
	s, err := report.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return s, c
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		give report.Options
	}{
		{name: "bad account", give: report.Options{Accounts: []string{"Acme Inc"}}},
		{name: "work", give: report.Options{Work: report.MaxWork + 1}},
		{name: "retention", give: report.Options{Retention: time.Second}},
		{name: "parallel days", give: report.Options{MaxParallelDays: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := report.New(tt.give); !errors.Is(err, report.ErrInvalidOptions) {
				t.Errorf("New: %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestNewFromEnv(t *testing.T) {
	t.Parallel()

	env := map[string]string{report.EnvAccounts: "acme, umbrella", report.EnvWork: "5"}
	s, err := report.NewFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"acme", "umbrella"}, s.Accounts()); diff != "" {
		t.Errorf("accounts (-want +got):\n%s", diff)
	}
	for _, bad := range []map[string]string{{report.EnvWork: "many"}, {report.EnvRetention: "1d"}, {report.EnvWork: "0x"}} {
		if _, err := report.NewFromEnv(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("NewFromEnv(%v): no error", bad)
		}
	}
}
