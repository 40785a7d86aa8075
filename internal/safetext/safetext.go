// Package safetext makes untrusted text safe to print on a terminal or in a
// log: a client's name, an image's Name, a server's status message. It
// escapes what could move the cursor, clear the screen, start a new
// (forged) log line or reorder text, and bounds the length. It does not
// quote: text that is already printable comes out unchanged.
package safetext

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line returns s with every control character (C0, DEL, C1, and Unicode
// format characters such as bidirectional overrides) and every invalid
// UTF-8 byte escaped in Go syntax (\n, \x1b, \u202e), so that printing it
// can neither emit a terminal escape sequence nor break the line.
func Line(s string) string {
	if printable(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])|0x100, 16)[1:])
		case needsEscape(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Short is Line(s) cut to at most max runes of s, with "..." when cut, for
// fields of a fixed-width table.
func Short(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= max {
		return Line(s)
	}
	n := 0
	for i := range s {
		if n == max {
			return Line(s[:i]) + "..."
		}
		n++
	}
	return Line(s)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return asciiFree(s[i:])
		}
	}
	return true
}

// asciiFree reports whether the non-ASCII rest of s is valid UTF-8 with
// nothing to escape.
func asciiFree(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || needsEscape(r) {
			return false
		}
	}
	return true
}

func needsEscape(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) ||
		r == '\u2028' || r == '\u2029' // line and paragraph separators
}
