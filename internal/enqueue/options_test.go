package enqueue

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give    string
		want    time.Duration
		wantErr string
	}{
		{give: "90s", want: 90 * time.Second},
		{give: "1h30m", want: 90 * time.Minute},
		{give: "10", want: 10 * time.Second},
		{give: "0.5", want: 500 * time.Millisecond},
		{give: " 2s ", want: 2 * time.Second},
		{give: "0", want: 0},
		{give: "-5s", wantErr: "must not be negative"},
		{give: "-1", wantErr: "must not be negative"},
		{give: "10x", wantErr: "not a duration"},
		{give: "soon", wantErr: "not a duration"},
		{give: "", wantErr: "empty"},
		{give: "NaN", wantErr: "not a usable number"},
		{give: "1e300", wantErr: "not a usable number"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			got, err := parseDuration(tt.give)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseDuration(%q) = %v, %v; want error containing %q", tt.give, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseDuration(%q) = %v, %v; want %v", tt.give, got, err, tt.want)
			}
		})
	}
	if _, err := parseDuration("-3s"); !errors.Is(err, errNegative) {
		t.Errorf("negative: %v, want errNegative", err)
	}
}

func TestRawOptionsParse(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	str := func(s string) *string { return &s }
	num := func(n int) *int { return &n }
	tests := []struct {
		name     string
		give     rawOptions
		want     taskOptions
		wantErrs []string // each error, in order, as a substring
	}{
		{name: "none"},
		{
			name: "all good",
			give: rawOptions{
				Queue: str("low"), Delay: str("90"), MaxRetry: num(2), Timeout: str("5m"),
				Deadline: str("2030-01-03T00:00:00Z"), Unique: str("1h"), ID: str("a-1"),
				Retention: str("0"),
			},
			want: taskOptions{
				queue: "low", delay: 90 * time.Second, maxRetry: num(2), timeout: 5 * time.Minute,
				deadline: time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC), unique: time.Hour, id: "a-1",
				retention: new(time.Duration),
			},
		},
		{
			name: "at and relative deadline",
			give: rawOptions{At: str("2030-01-02T05:00:00+01:00"), Deadline: str("10m")},
			want: taskOptions{at: time.Date(2030, 1, 2, 4, 0, 0, 0, time.UTC), deadline: now.Add(10 * time.Minute)},
		},
		{
			name:     "negative delay",
			give:     rawOptions{Delay: str("-5s")},
			wantErrs: []string{`--delay "-5s": must not be negative`},
		},
		{
			name:     "unparsable duration",
			give:     rawOptions{Timeout: str("5 minutes")},
			wantErrs: []string{`--timeout "5 minutes": not a duration`},
		},
		{
			name:     "at in the past",
			give:     rawOptions{At: str("2030-01-02T03:02:05Z")},
			wantErrs: []string{`--at "2030-01-02T03:02:05Z": is in the past (now is 2030-01-02T03:04:05Z)`},
		},
		{
			name: "at within tasks.ProcessAtSkew of now",
			give: rawOptions{At: str("2030-01-02T03:03:35Z")},
			want: taskOptions{at: time.Date(2030, 1, 2, 3, 3, 35, 0, time.UTC)},
		},
		{
			name:     "at too far ahead",
			give:     rawOptions{At: str("2031-06-01T00:00:00Z")},
			wantErrs: []string{`--at "2031-06-01T00:00:00Z": is more than 366 days ahead`},
		},
		{
			name:     "at unparsable",
			give:     rawOptions{At: str("tomorrow")},
			wantErrs: []string{`--at "tomorrow": want an RFC 3339 time`},
		},
		{
			name:     "delay and at",
			give:     rawOptions{Delay: str("1s"), At: str("2031-01-01T00:00:00Z")},
			wantErrs: []string{`--delay "1s" and --at "2031-01-01T00:00:00Z": give one or the other`},
		},
		{
			name: "several at once",
			give: rawOptions{Queue: str(" "), MaxRetry: num(-1), Unique: str("500ms"), Deadline: str("-1m"), Retention: str("x")},
			wantErrs: []string{
				`--queue " ": has a character outside A-Z a-z 0-9 . _ : -`,
				`--max-retry "-1": must not be negative`,
				`--deadline "-1m": is in the past`,
				`--unique "500ms": want at least 1s`,
				`--retention "x": not a duration`,
			},
		},
		{
			name:     "timeout under a second",
			give:     rawOptions{Timeout: str("0.5")},
			wantErrs: []string{`--timeout "0.5": want at least 1s`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, errs := tt.give.parse(now, flagName)
			var gotErrs []string
			for _, e := range errs {
				gotErrs = append(gotErrs, e.Error())
			}
			if len(gotErrs) != len(tt.wantErrs) {
				t.Fatalf("errors = %q, want %d matching %q", gotErrs, len(tt.wantErrs), tt.wantErrs)
			}
			for i := range gotErrs {
				if !strings.Contains(gotErrs[i], tt.wantErrs[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, gotErrs[i], tt.wantErrs[i])
				}
			}
			if len(tt.wantErrs) > 0 {
				return
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(taskOptions{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRawOptionsOver(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	flags := rawOptions{Queue: str("low"), Delay: str("10s"), Timeout: str("1m")}
	got := flags.over(rawOptions{At: str("2031-01-01T00:00:00Z"), Timeout: str("2m")})
	if got.Delay != nil || *got.At != "2031-01-01T00:00:00Z" || *got.Queue != "low" || *got.Timeout != "2m" {
		t.Errorf("over = %+v: want the line's at to replace the flags' delay, its timeout to win, the queue kept", got)
	}
}
