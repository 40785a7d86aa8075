package image

import (
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	for _, l := range []Level{LevelFast, LevelDefault, LevelBest} {
		got, err := ParseLevel(l.String())
		if err != nil || got != l {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", l.String(), got, err, l)
		}
		if _, err := l.zstd(); err != nil {
			t.Errorf("%v has no zstd level: %v", l, err)
		}
	}
	for _, s := range []string{"", "Fast", "fastest", "3", "better"} {
		if _, err := ParseLevel(s); err == nil || !strings.Contains(err.Error(), LevelNames) {
			t.Errorf("ParseLevel(%q): %v, want an error naming %s", s, err, LevelNames)
		}
	}
	if _, _, err := Scan(t.Context(), strings.NewReader("x"), nil, ScanOptions{Level: Level(7)}); err == nil || !strings.Contains(err.Error(), "unknown compression level 7") {
		t.Errorf("Scan with Level(7): %v, want an unknown level error", err)
	}
}
