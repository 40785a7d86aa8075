package blockmap

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The HFS+ and HFSX on-disk layout, from Apple's Technical Note TN1150
// ("HFS Plus Volume Format") and Linux's fs/hfsplus. Everything is
// big-endian.
const (
	hfsHeaderOff = 1024

	hfsAttrUnmounted    = 1 << 8
	hfsAttrInconsistent = 1 << 11
	hfsAttrJournaled    = 1 << 13

	hfsForkAlloc   = 0x70
	hfsForkExtents = 0xC0
	hfsForkCatalog = 0x110

	hfsJournalMagic = 0x4A4E4C78 // "JNLx"
	// hfsFreeSlack is how many more blocks the allocation file may call
	// free than the volume header counts.
	hfsFreeSlack = 16
)

// hfsKind names the volume header at head[1024:], or "".
func hfsKind(head []byte) string {
	if len(head) < hfsHeaderOff+512 {
		return ""
	}
	h := head[hfsHeaderOff:]
	switch sig, ver := string(h[:2]), binary.BigEndian.Uint16(h[2:]); {
	case sig == "H+" && ver == 4:
		return "HFS+"
	case sig == "HX" && ver == 5:
		return "HFSX"
	}
	return ""
}

// hfsFork is a fork's size and its first eight extents, in blocks.
type hfsFork struct {
	logical int64
	blocks  int64
	extents []Extent
}

func readHFSFork(b []byte) hfsFork {
	f := hfsFork{logical: int64(binary.BigEndian.Uint64(b)), blocks: int64(binary.BigEndian.Uint32(b[12:]))}
	for i := range 8 {
		e := b[16+8*i:]
		start, n := int64(binary.BigEndian.Uint32(e)), int64(binary.BigEndian.Uint32(e[4:]))
		if n > 0 {
			f.extents = append(f.extents, Extent{start, n})
		}
	}
	return f
}

// mapHFSPlus maps an HFS+ or HFSX volume by its allocation file, a bitmap
// of blocks numbered from the top bit of each byte. The volume header and
// the alternate one, 1024 bytes before the volume's end, are used whatever
// the bitmap says. A volume not cleanly unmounted, marked inconsistent, or
// whose journal holds transactions not yet replayed falls back.
func mapHFSPlus(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	kind := hfsKind(head)
	h := head[hfsHeaderOff : hfsHeaderOff+512]
	be32 := func(o int) int64 { return int64(binary.BigEndian.Uint32(h[o:])) }
	attrs := be32(0x04)
	bs, total, free := be32(0x28), be32(0x2C), be32(0x30)
	switch {
	case bs < 512 || bs > 1<<20 || bs&(bs-1) != 0:
		return nil, fallback("%s: block size %d, want a power of two from 512 to 1 MiB", kind, bs)
	case total < 2 || total > size/bs:
		return nil, fallback("%s: volume of %d blocks of %d bytes does not fit its %d-byte area", kind, total, bs, size)
	case free > total:
		return nil, fallback("%s: %d free blocks of %d", kind, free, total)
	case attrs&hfsAttrUnmounted == 0:
		return nil, fallback("%s: not cleanly unmounted (or mounted)", kind)
	case attrs&hfsAttrInconsistent != 0:
		// Debian 12 packages no HFS+ checker (hfsprogs' fsck.hfsplus):
		// the message names the tools that exist elsewhere.
		return nil, fallback("%s: marked inconsistent: check it first with fsck.hfsplus (hfsprogs, not in Debian 12) or macOS's fsck_hfs", kind)
	}
	if attrs&hfsAttrJournaled != 0 {
		if err := hfsJournalEmpty(r, kind, h, bs, total); err != nil {
			return nil, err
		}
	}
	alloc := readHFSFork(h[hfsForkAlloc:])
	need := (total + 7) / 8
	var runs, allocBlocks []Extent
	var have int64
	for _, e := range alloc.extents {
		if e.Off >= total || e.Len > total-e.Off {
			return nil, fallback("%s: allocation file extent at block %d (%d blocks) is outside the volume's %d", kind, e.Off, e.Len, total)
		}
		runs = append(runs, Extent{e.Off * bs, e.Len * bs})
		allocBlocks = append(allocBlocks, e)
		have += e.Len * bs
	}
	if alloc.logical < need || have < need {
		return nil, fallback("%s: allocation file of %d bytes in %d bytes of its first 8 extents, want %d for %d blocks (more extents are not read)",
			kind, alloc.logical, have, need, total)
	}
	used, set, err := streamBitmap(r, runs, uint64(total), true, nil)
	if err != nil {
		return nil, fmt.Errorf("%s allocation file: %w", kind, err)
	}
	// xorriso (libisofs) leaves a few blocks at the end free in the
	// bitmap but counts none free in the header: a small excess is how
	// real volumes come, a large one a bitmap that is not this volume's.
	if got := total - int64(set); got > free+hfsFreeSlack {
		return nil, fallback("%s: the allocation file marks %d blocks free, the volume header %d", kind, got, free)
	}
	// The blocks of the header and of the B-trees every volume has.
	must := []struct {
		what string
		e    []Extent
	}{
		{"the volume header", []Extent{{0, (hfsHeaderOff + 512 + bs - 1) / bs}}},
		{"the extents file", readHFSFork(h[hfsForkExtents:]).extents},
		{"the catalog file", readHFSFork(h[hfsForkCatalog:]).extents},
	}
	for _, m := range must {
		for _, e := range m.e {
			if c := firstFree(used, e); c >= 0 {
				return nil, fallback("%s: the allocation file marks block %d of %s free", kind, c, m.what)
			}
		}
	}
	method := MethodHFSPlus
	if kind == "HFSX" {
		method = MethodHFSX
	}
	end := total * bs
	// The allocation file is kept whether or not it marks itself: xorriso
	// (libisofs) puts it near the end and leaves its block free.
	used = append(used, allocBlocks...)
	used = append(scaleExtents(used, bs, 0), Extent{0, hfsHeaderOff + 512}, Extent{end - 1024, 1024})
	return &fsMap{method: method, size: end, used: used}, nil
}

// hfsJournalEmpty checks that a journaled volume's journal holds nothing to
// replay: its header's start and end meet. A journal on another device
// cannot be checked.
func hfsJournalEmpty(r io.ReaderAt, kind string, h []byte, bs, total int64) error {
	blk := int64(binary.BigEndian.Uint32(h[0x0C:]))
	if blk <= 0 || blk >= total {
		return fallback("%s: journal info block %d outside the volume's %d blocks", kind, blk, total)
	}
	ji, err := readAt(r, blk*bs, 512)
	if err != nil {
		return fmt.Errorf("%s: reading the journal info block: %w", kind, err)
	}
	flags := binary.BigEndian.Uint32(ji)
	if flags&1 == 0 || flags&2 != 0 {
		return fallback("%s: the journal is not on this volume (flags %#x)", kind, flags)
	}
	off, n := int64(binary.BigEndian.Uint64(ji[0x24:])), int64(binary.BigEndian.Uint64(ji[0x2C:]))
	if off <= 0 || n <= 0 || off > total*bs-512 || n > total*bs-off {
		return fallback("%s: journal of %d bytes at byte %d is outside the volume", kind, n, off)
	}
	jh, err := readAt(r, off, 512)
	if err != nil {
		return fmt.Errorf("%s: reading the journal header: %w", kind, err)
	}
	// The journal is written in the byte order of the machine that wrote
	// it: its endian field says which.
	var order binary.ByteOrder = binary.BigEndian
	if binary.LittleEndian.Uint32(jh) == hfsJournalMagic {
		order = binary.LittleEndian
	}
	if order.Uint32(jh) != hfsJournalMagic || order.Uint32(jh[4:]) != 0x12345678 {
		return fallback("%s: journal header at byte %d has no JNLx magic", kind, off)
	}
	if start, end := order.Uint64(jh[8:]), order.Uint64(jh[16:]); start != end {
		return fallback("%s: the journal holds transactions not yet replayed: mount it once (macOS, or Linux's hfsplus) or run fsck.hfsplus or fsck_hfs", kind)
	}
	return nil
}
