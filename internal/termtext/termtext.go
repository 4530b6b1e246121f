// Package termtext makes text from users safe to write to a terminal.
//
// Error messages and listings that echo what a user gave (a line of a
// file, a task type, a flag) must not carry its control characters raw:
// an ESC or BEL starts a terminal escape sequence, which can retitle the
// terminal, move the cursor over earlier output or worse. [Escape] writes
// them the way Go quotes them (\x1b, \a), so that what was wrong can still
// be read.
package termtext

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every control character other than newline and
// tab, every bidirectional-text control and every byte that is not UTF-8
// written as a Go escape ("\x1b", "\a", "\u202e", "\xff"). Other text,
// backslashes included, is left as it is, so Escape(Escape(s)) ==
// Escape(s).
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafe(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// needsEscape reports whether Escape would change s.
func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || (c < ' ' && c != '\n' && c != '\t') || c == 0x7f {
			return !isPlain(s[i:])
		}
	}
	return false
}

// isPlain reports whether s has nothing Escape changes; it is the slow
// path of needsEscape for text that is not ASCII.
func isPlain(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		}
		if unsafe(r) {
			return false
		}
	}
	return true
}

// unsafe reports whether r is escaped: a control character other than
// newline and tab (C0, DEL and C1), or a bidirectional-text control, which
// can make text read in another order than it is written.
func unsafe(r rune) bool {
	switch {
	case r == '\n', r == '\t':
		return false
	case unicode.IsControl(r):
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, 0x202a <= r && r <= 0x202e, 0x2066 <= r && r <= 0x2069:
		return true
	}
	return false
}
