package image

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Level is how hard Scan compresses chunks. It changes the image's size and
// the scan's time only: the image records no level, and every level is
// plain zstd that restores the same way.
type Level int

const (
	// LevelDefault is the zero Level: the level whose images decode
	// fastest, as restores run many times (measured; see Level.zstd).
	LevelDefault Level = iota
	// LevelFast scans fastest, for images made often and restored rarely.
	LevelFast
	// LevelBest makes the smallest images, at several times the scan time
	// and somewhat slower decoding.
	LevelBest
)

// LevelNames are the values ParseLevel accepts, in order of strength.
const LevelNames = "fast, default or best"

// ParseLevel reads a level's name as String gives it.
func ParseLevel(s string) (Level, error) {
	for _, l := range []Level{LevelFast, LevelDefault, LevelBest} {
		if s == l.String() {
			return l, nil
		}
	}
	return 0, fmt.Errorf("unknown compression level %q: use %s", s, LevelNames)
}

func (l Level) String() string {
	switch l {
	case LevelDefault:
		return "default"
	case LevelFast:
		return "fast"
	case LevelBest:
		return "best"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// zstd is the klauspost/compress encoder level for l. Measured on a 512 MiB
// ext4 disk 43% full of text, programs and random data (219 MB of zstd
// chunks), zstd CPU time to decode them all on one core and scan time on two:
//
//	SpeedFastest            102.9 MB   decode 201 ms   scan  3.5 s
//	SpeedDefault             98.9 MB   decode 180 ms   scan  5.6 s
//	SpeedBetterCompression   97.9 MB   decode 172 ms   scan  8.7 s
//	SpeedBestCompression     94.1 MB   decode 204 ms   scan 43.0 s
//
// Decoding does not get faster with the level: better compression decodes
// fastest and best compression as slowly as the fastest level, so the
// default, which every restore pays for, is better compression.
func (l Level) zstd() (zstd.EncoderLevel, error) {
	switch l {
	case LevelFast:
		return zstd.SpeedFastest, nil
	case LevelDefault:
		return zstd.SpeedBetterCompression, nil
	case LevelBest:
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("unknown compression level %d", int(l))
}
