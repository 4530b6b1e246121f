package termtext_test

import (
	"testing"

	"github.com/forgeq/forgeq/internal/termtext"
)

func TestEscape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		give string
		want string
	}{
		{name: "plain", give: "unknown task type data:proces", want: "unknown task type data:proces"},
		{name: "newline and tab kept", give: "a\n\tb", want: "a\n\tb"},
		{name: "OSC title", give: "\x1b]0;pwned\x07", want: `\x1b]0;pwned\a`},
		{name: "carriage return", give: "ok\rbad", want: `ok\rbad`},
		{name: "DEL", give: "a\x7fb", want: `a\x7fb`},
		{name: "C1 CSI", give: "a\u009b31mb", want: `a\u009b31mb`},
		{name: "bidi override", give: "abc\u202edef", want: `abc\u202edef`},
		{name: "not UTF-8", give: "a\xffb", want: `a\xffb`},
		{name: "UTF-8 kept", give: "café ✓ 日本", want: "café ✓ 日本"},
		{name: "backslash kept", give: `a\x1b`, want: `a\x1b`},
		{name: "quoted value unchanged", give: `--queue "\x1b"`, want: `--queue "\x1b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := termtext.Escape(tt.give)
			if got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.give, got, tt.want)
			}
			if again := termtext.Escape(got); again != got {
				t.Errorf("Escape is not idempotent: %q, then %q", got, again)
			}
		})
	}
}

func FuzzEscape(f *testing.F) {
	f.Add("\x1b]0;pwned\x07")
	f.Add("a\u009bb\u202e\xff")
	f.Fuzz(func(t *testing.T, s string) {
		got := termtext.Escape(s)
		for _, r := range got {
			if r != '\n' && r != '\t' && (r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0)) {
				t.Fatalf("Escape(%q) = %q keeps control character %U", s, got, r)
			}
		}
		if termtext.Escape(got) != got {
			t.Fatalf("Escape(%q) = %q is not idempotent", s, got)
		}
	})
}
