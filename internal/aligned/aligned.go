// Package aligned allocates memory that direct I/O (O_DIRECT) accepts: its
// start on a 4 KiB boundary, its length a whole number of 4 KiB blocks.
// Sources decode chunks into such buffers so that the target can write them
// past the page cache without copying them first.
package aligned

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Align is the alignment of every buffer: 4 KiB covers the logical block
// size and the memory alignment of every device Linux drives (512 or 4096).
const Align = 4096

// hugePage is the size of a transparent huge page on x86-64 and arm64.
const hugePage = 2 << 20

// Make returns a buffer of at least n bytes (n rounded up to Align) that
// starts on an Align boundary.
//
// A buffer of a huge page or more starts on a huge-page boundary and is
// advised to be backed by huge pages: a restore's chunk buffers are its
// memory, and a new process touched them a 4 KiB page fault at a time
// (about 29,000 faults, 15% of a 2 GiB restore's CPU in a virtual machine,
// where a fault costs microseconds); with huge pages that is a few dozen.
// Where the kernel has none to give, the advice changes nothing.
func Make(n int) []byte {
	n = (n + Align - 1) &^ (Align - 1)
	align := Align
	if n >= hugePage {
		align = hugePage
	}
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1))
	if off != 0 {
		off = align - off
	}
	b = b[off : off+n : off+n]
	if align == hugePage {
		// Only whole huge pages; the error (no THP in this kernel) is
		// no reason to fail an allocation.
		_ = unix.Madvise(b[:n&^(hugePage-1)], unix.MADV_HUGEPAGE)
	}
	return b
}

// Is reports whether p starts on an Align boundary (an empty p does not).
func Is(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))&(Align-1) == 0
}

// Clone returns a copy of p in a buffer from Make: the same length, an
// aligned start.
func Clone(p []byte) []byte {
	b := Make(len(p))[:len(p)]
	copy(b, p)
	return b
}

// Pool keeps buffers of one size from Make for reuse, up to a number: a
// restore's phases (compare, write, verify) take chunk buffers one after
// the other, and memory Go freed and took back was cleared and faulted in
// again for each (40 ms of a 0.33 s delta restore in a virtual machine).
// Not a sync.Pool, which drops its buffers at every garbage collection.
type Pool struct {
	size int
	free chan []byte
}

// NewPool returns a pool of buffers of size bytes that keeps up to keep.
func NewPool(size, keep int) *Pool {
	return &Pool{size: size, free: make(chan []byte, keep)}
}

// Get returns a kept buffer, or a new one.
func (p *Pool) Get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return Make(p.size)
	}
}

// Put gives b, from Get, back; beyond what the pool keeps it is dropped.
func (p *Pool) Put(b []byte) {
	select {
	case p.free <- b[:cap(b)]:
	default:
	}
}
