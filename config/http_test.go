package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give    string
		want    RateLimit
		wantErr string
	}{
		{give: "100/1s", want: RateLimit{Rate: 100, Period: time.Second}},
		{give: "600/1m", want: RateLimit{Rate: 600, Period: time.Minute}},
		{give: "1/s", want: RateLimit{Rate: 1, Period: time.Second}},
		{give: "30/M", want: RateLimit{Rate: 30, Period: time.Minute}},
		{give: "5000/h", want: RateLimit{Rate: 5000, Period: time.Hour}},
		{give: "10/90", want: RateLimit{Rate: 10, Period: 90 * time.Second}},
		{give: "10/250ms", want: RateLimit{Rate: 10, Period: 250 * time.Millisecond}},
		{give: " 7 / 2m ", want: RateLimit{Rate: 7, Period: 2 * time.Minute}},
		{give: "off", want: RateLimit{}},
		{give: "Off", want: RateLimit{}},
		{give: " 0 ", want: RateLimit{}},
		{give: "", wantErr: `"" is not a rate limit; want requests/period ("100/1s", "600/1m") or off`},
		{give: "100", wantErr: `"100" is not a rate limit`},
		{give: "/1s", wantErr: `"/1s": requests "" is not a whole number`},
		{give: "1.5/1s", wantErr: `"1.5/1s": requests "1.5" is not a whole number`},
		{give: "-1/1s", wantErr: `"-1/1s": requests -1 is too small; want 1 or more, or off for no limit`},
		{give: "0/1s", wantErr: `"0/1s": requests 0 is too small`},
		{give: "10/", wantErr: `"10/": period "" is not a duration`},
		{give: "10/1s/2", wantErr: `"10/1s/2": period "1s/2" is not a duration`},
		{give: "10/0s", wantErr: `"10/0s": period "0s" is not positive`},
		{give: "10/-1m", wantErr: `"10/-1m": period "-1m" is not positive`},
		{give: "none", wantErr: `"none" is not a rate limit`},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			got, err := parseLimit(tt.give, true)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseLimitWithoutOff(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give    string
		want    RateLimit
		wantErr string // the whole message
	}{
		{give: "5/1m", want: RateLimit{Rate: 5, Period: time.Minute}},
		{give: " 20 / h ", want: RateLimit{Rate: 20, Period: time.Hour}},
		{give: "off", wantErr: `"off": this limit cannot be off; want requests/period ("5/1m", "20/1h")`},
		{give: " 0 ", wantErr: `" 0 ": this limit cannot be off; want requests/period ("5/1m", "20/1h")`},
		{give: "0/1m", wantErr: `"0/1m": requests 0 is too small; want 1 or more`},
		{give: "5", wantErr: `"5" is not a rate limit; want requests/period ("5/1m", "20/1h")`},
		{give: "x/1m", wantErr: `"x/1m": requests "x" is not a whole number; want requests/period ("5/1m", "20/1h")`},
		{give: "5/0s", wantErr: `"5/0s": period "0s" is not positive`},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			got, err := parseLimit(tt.give, false)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRateLimitString(t *testing.T) {
	t.Parallel()

	for _, give := range []RateLimit{{}, {Rate: 100, Period: time.Second}, {Rate: 600, Period: time.Minute}, {Rate: 3, Period: 1500 * time.Millisecond}} {
		s := give.String()
		got, err := parseLimit(s, true)
		if err != nil || got != give {
			t.Errorf("parseLimit(%+v.String() = %q) = %+v, %v", give, s, got, err)
		}
	}
}
