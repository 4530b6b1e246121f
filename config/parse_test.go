package config

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultsParse(t *testing.T) {
	t.Parallel()

	for _, s := range specs {
		var c Config
		if err := s.apply(&c, s.Default); err != nil {
			t.Errorf("default of %s %q: %v", s.Key, s.Default, err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give    string
		want    time.Duration
		wantErr string
	}{
		{give: "10", want: 10 * time.Second},
		{give: "+2", want: 2 * time.Second},
		{give: "0.001", want: time.Millisecond},
		{give: "1.", want: time.Second},
		{give: "-5", want: -5 * time.Second},
		{give: "1h30m", want: 90 * time.Minute},
		{give: "", wantErr: `"" is not a duration`},
		{give: "1e3", wantErr: `"1e3" is not a duration`},
		{give: "10 s", wantErr: `"10 s" is not a duration`},
		{give: "9300000000", wantErr: `"9300000000" is too long`},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			got, err := parseDuration(tt.give)
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
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseQueues(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		give    any
		want    map[string]int
		wantErr string
	}{
		{name: "text", give: "a=1,b=20", want: map[string]int{"a": 1, "b": 20}},
		{name: "map of ints", give: map[string]any{"a": 1, "b": int64(2)}, want: map[string]int{"a": 1, "b": 2}},
		{name: "map of strings", give: map[string]any{"a": "3"}, want: map[string]int{"a": 3}},
		{name: "map of whole floats", give: map[string]any{"a": 4.0}, want: map[string]int{"a": 4}},
		{name: "trailing comma", give: "a=1,", wantErr: `"a=1,": entry "" is not name=weight`},
		{name: "map with a fraction", give: map[string]any{"a": 1.5}, wantErr: `weight "1.5" of queue "a" is not a whole number`},
		{name: "map with a list", give: map[string]any{"a": []any{1}}, wantErr: `queue "a": want a single value, got a list`},
		{name: "map with a bad name", give: map[string]any{"a b": 1}, wantErr: `queue name "a b": has a character outside A-Z a-z 0-9 . _ : -`},
		{name: "list", give: []any{"a=1"}, wantErr: `want a single value, got a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c Config
			err := queuesValue(func(c *Config) *map[string]int { return &c.Worker.Queues })(&c, tt.give)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, c.Worker.Queues); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give, want string
	}{
		{"redis.pool_sise", " (did you mean redis.pool_size?)"},
		{"Redis.Pool-Size", " (did you mean redis.pool_size?)"},
		{"redis.tls.cafile", " (did you mean redis.tls.ca_file?)"},
		{"reddis", " (did you mean redis?)"},
		{"celery", ""},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			if got := suggest(tt.give); got != tt.want {
				t.Errorf("suggest(%q) = %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}
