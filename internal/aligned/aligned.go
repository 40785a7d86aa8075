// Package aligned allocates memory that direct I/O (O_DIRECT) accepts: its
// start on a 4 KiB boundary, its length a whole number of 4 KiB blocks.
// Sources decode chunks into such buffers so that the target can write them
// past the page cache without copying them first.
package aligned

import "unsafe"

// Align is the alignment of every buffer: 4 KiB covers the logical block
// size and the memory alignment of every device Linux drives (512 or 4096).
const Align = 4096

// Make returns a buffer of at least n bytes (n rounded up to Align) that
// starts on an Align boundary.
func Make(n int) []byte {
	n = (n + Align - 1) &^ (Align - 1)
	b := make([]byte, n+Align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (Align - 1))
	if off != 0 {
		off = Align - off
	}
	return b[off : off+n : off+n]
}

// Is reports whether p starts on an Align boundary (an empty p does not).
func Is(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))&(Align-1) == 0
}
