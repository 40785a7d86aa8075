package source

import (
	"fmt"
	"time"

	"github.com/asrlinux/asr/internal/progress"
)

// StallError is a network source that sent nothing for Idle: no answer to
// a request, or no byte of its body. It names no setting: the caller knows
// what its user calls the time limit (--timeout, asr.timeout=) and says so.
type StallError struct {
	Source string        // the URL, without its password
	What   string        // "the image", "its checksum file"
	Idle   time.Duration // how long nothing came
	Offset int64         // the byte of the file it was waiting for; -1 if none
}

func (e *StallError) Error() string {
	at := ""
	if e.Offset >= 0 {
		at = fmt.Sprintf(" at byte %d", e.Offset)
	}
	return fmt.Sprintf("source %s: the server sent nothing for %s%s of %s", e.Source, e.Idle.Round(time.Millisecond), at, e.What)
}

// TooBigError is a source that turned out larger than the caller's limit
// (the target's size) while it was being measured: it was not read further.
type TooBigError struct {
	Source string
	Limit  int64
}

func (e *TooBigError) Error() string {
	return fmt.Sprintf("source %s holds more than %s (%d bytes), the most the target can take: stopped reading it there", e.Source, progress.HumanBytes(e.Limit), e.Limit)
}

// WindowError is a compressed stream that needs more decoder memory (the
// xz dictionary, the zstd window) than asr allows: MaxDecoderWindow.
type WindowError struct {
	Format string // "xz", "zstd"
	Need   int64  // bytes the stream asks for; 0 when the decoder does not say
	Max    int64
}

func (e *WindowError) Error() string {
	switch {
	case e.Format == "xz":
		return fmt.Sprintf("the xz stream needs a %d MiB dictionary; asr allows %d MiB: recompress it with xz -9 or less", (e.Need+1<<20-1)>>20, e.Max>>20)
	default:
		return fmt.Sprintf("the %s stream needs a window larger than the %d MiB asr allows: recompress it with zstd -19 or less (--long=26 at most)", e.Format, e.Max>>20)
	}
}
