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

// zstd is the klauspost/compress encoder level for l.
//
// The default is the level whose images decode fastest, since restores run
// many times. Measured on bench/fsmap.sh's 1 GiB disks (30% used; imagescan's
// 8 MiB chunks), bytes stored, and CPU time to encode and to decode every
// chunk on one thread (decodes interleaved, medians of 7; the machine was
// loaded, so CPU time rather than wall time):
//
//	          SpeedDefault                 SpeedBetterCompression
//	ext4      176.2 MB  enc 0.9 s  dec  77 ms   176.1 MB  enc 2.0 s  dec  97 ms
//	NTFS      183.1 MB  enc 1.3 s  dec 150 ms   183.2 MB  enc 2.4 s  dec 425 ms
//	XFS       161.5 MB  enc 0.7 s  dec  90 ms   161.3 MB  enc 1.6 s  dec 140 ms
//	FAT32     193.0 MB  enc 1.2 s  dec  72 ms   182.0 MB  enc 2.2 s  dec  65 ms
//
// and ext4 in the 1 MiB chunks imagescan wrote before: SpeedBetterCompression
// (its default then) 212.6 MB, decode 159 ms; SpeedDefault 212.4 MB, 135 ms.
// SpeedDefault decodes fastest but on FAT32, where SpeedBetterCompression is
// 6% smaller and as fast; everywhere else it is as small and half the scan
// time. SpeedBestCompression was 0.2-0.5% smaller or larger, at 3-5 times
// the scan time and slower decoding (ext4: 127 ms against 99), so it stays
// a choice (best), not the default.
func (l Level) zstd() (zstd.EncoderLevel, error) {
	switch l {
	case LevelFast:
		return zstd.SpeedFastest, nil
	case LevelDefault:
		return zstd.SpeedDefault, nil
	case LevelBest:
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("unknown compression level %d", int(l))
}
