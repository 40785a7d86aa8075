package blockmap

import (
	"encoding/binary"
	"io"
)

// swapPageSizes are the page sizes a Linux swap header may be written for:
// the signature ends the first page.
var swapPageSizes = []int{4096, 8192, 16384, 32768, 65536}

// swapPageSize is the page size whose last ten bytes in head read
// "SWAPSPACE2", or 0.
func swapPageSize(head []byte) int {
	for _, ps := range swapPageSizes {
		if len(head) >= ps && string(head[ps-10:ps]) == "SWAPSPACE2" {
			return ps
		}
	}
	return 0
}

// mapSwap maps a Linux swap area: only its header page matters, since what
// was swapped out is worthless once the system that wrote it is gone. A
// swap area holding a hibernation image has another signature and is not
// mapped here.
func mapSwap(_ io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	ps := int64(swapPageSize(head))
	// The header after the 1 KiB of boot bits: version 1, then the last
	// page. Either byte order: the area may come from another machine.
	version := binary.LittleEndian.Uint32(head[1024:])
	last := int64(binary.LittleEndian.Uint32(head[1028:]))
	if version != 1 {
		version = binary.BigEndian.Uint32(head[1024:])
		last = int64(binary.BigEndian.Uint32(head[1028:]))
	}
	if version != 1 {
		return nil, fallback("swap: header version %#x, want 1", binary.LittleEndian.Uint32(head[1024:]))
	}
	// The area ends after its last page; a header that claims more than
	// the partition holds is cut to it, as the kernel does.
	n := size
	if last > 0 && (last+1) <= size/ps {
		n = (last + 1) * ps
	}
	return &fsMap{method: MethodSwap, size: n, used: []Extent{{0, ps}}}, nil
}
