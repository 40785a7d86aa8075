package source

import (
	"fmt"
	"time"
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
	return fmt.Sprintf("source %s holds more than %d bytes, the most the target can take: stopped reading it there", e.Source, e.Limit)
}
