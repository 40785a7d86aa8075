package safetext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"pc-01", "pc-01"},
		{"Müller's Laptop", "Müller's Laptop"},
		{"evil\x1b[2J\x1b[Hname", `evil\x1b[2J\x1b[Hname`},
		{"a\r\n2026/12/01 forged line", `a\r\n2026/12/01 forged line`},
		{"tab\there", `tab\there`},
		{"del\x7f", `del\x7f`},
		{"c1\u009b31m", `c1\u009b31m`},
		{"bidi\u202eexe.txt", `bidi\u202eexe.txt`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"", ""},
	} {
		if got := Line(tc.in); got != tc.want {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestShort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"abcdef", 10, "abcdef"},
		{"abcdef", 3, "abc..."},
		{"ééééé", 2, "éé..."},
		{"\x1b\x1b\x1b", 2, `\x1b\x1b...`},
		{"x", 0, ""},
	} {
		if got := Short(tc.in, tc.max); got != tc.want {
			t.Errorf("Short(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func FuzzLine(f *testing.F) {
	for _, s := range []string{"pc-01", "a\x1b[31mb", "\xff\xfe", "\u202e", "ok\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Line(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Line(%q) = %q: not valid UTF-8", s, got)
		}
		for _, r := range got {
			if needsEscape(r) {
				t.Fatalf("Line(%q) = %q: still holds %U", s, got, r)
			}
		}
		if printable(s) && got != s {
			t.Fatalf("Line(%q) = %q: changed printable text", s, got)
		}
		if Line(got) != got {
			t.Fatalf("Line is not idempotent on %q", got)
		}
		if sh := Short(s, 8); strings.Count(sh, "...") > strings.Count(got, "...")+1 {
			t.Fatalf("Short(%q, 8) = %q", s, sh)
		}
	})
}
