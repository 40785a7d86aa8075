// Command asr-init is the asr imaging appliance's /init: see package appliance.
package main

import (
	"runtime/debug"

	"github.com/asrlinux/asr/appliance"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

func main() {
	// The restore engine's buffers grow with the image's chunk size, as in
	// asr restore (cmd/asr/restore.go): the same soft limit has the garbage
	// collector work harder near the 256 MiB budget instead of letting the
	// heap grow to twice what it holds, on a machine that may have 1 GiB.
	debug.SetMemoryLimit(192 << 20)
	appliance.Main(Version)
}
