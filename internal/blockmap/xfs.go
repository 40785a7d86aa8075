package blockmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// The XFS on-disk layout, from the kernel's fs/xfs/libxfs/xfs_format.h and
// the "XFS Algorithms & Data Structures" book. Every number is big-endian.
const (
	xfsMagic    = "XFSB"
	xfsAGFMagic = "XAGF"
	xfsBnoMagic = "ABTB" // free-space by block number, v4
	xfsBnoCRC   = "AB3B" // the same, v5 (CRC)

	xfsIncompatFtype      = 0x1
	xfsIncompatSpinodes   = 0x2
	xfsIncompatMetaUUID   = 0x4
	xfsIncompatBigtime    = 0x8
	xfsIncompatNeedRepair = 0x10
	xfsIncompatNrext64    = 0x20
	xfsIncompatKnown      = xfsIncompatFtype | xfsIncompatSpinodes | xfsIncompatMetaUUID | xfsIncompatBigtime | xfsIncompatNrext64

	// xfsMaxLevels bounds a free-space btree's height (XFS_BTREE_MAXLEVELS).
	xfsMaxLevels = 9
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// isXFS reports whether head starts with an XFS superblock magic.
func isXFS(head []byte) bool { return len(head) >= 4 && string(head[:4]) == xfsMagic }

// xfsSuper is what mapping needs from an XFS superblock.
type xfsSuper struct {
	bs        int64 // block size
	sectSize  int64
	dblocks   uint64
	agBlocks  uint64
	agCount   uint64
	agBlkLog  uint
	logStart  uint64 // an fsblock number; 0: an external log
	logBlocks uint64
	v5        bool
	uuid      []byte // what v5 metadata blocks carry
}

// parseXFSSuper reads and checks the primary superblock for an area of size
// bytes.
func parseXFSSuper(head []byte, size int64) (*xfsSuper, error) {
	if len(head) < 512 {
		return nil, fallback("XFS: superblock cut short: the area is %d bytes", size)
	}
	be32 := func(o int) uint64 { return uint64(binary.BigEndian.Uint32(head[o:])) }
	be64 := func(o int) uint64 { return binary.BigEndian.Uint64(head[o:]) }
	be16 := func(o int) uint64 { return uint64(binary.BigEndian.Uint16(head[o:])) }
	s := &xfsSuper{
		bs: int64(be32(0x04)), dblocks: be64(0x08), logStart: be64(0x30),
		agBlocks: be32(0x54), agCount: be32(0x58), logBlocks: be32(0x60),
		sectSize: int64(be16(0x66)), agBlkLog: uint(head[0x7C]),
	}
	version := be16(0x64) & 0xF
	s.v5 = version == 5
	switch {
	case version != 4 && version != 5:
		return nil, fallback("XFS: superblock version %d, want 4 or 5", version)
	case s.bs < 512 || s.bs > 65536 || s.bs&(s.bs-1) != 0 || s.bs != 1<<head[0x78]:
		return nil, fallback("XFS: block size %d (log %d)", s.bs, head[0x78])
	case s.sectSize < 512 || s.sectSize > s.bs || s.sectSize&(s.sectSize-1) != 0 || s.sectSize != 1<<head[0x79]:
		return nil, fallback("XFS: sector size %d (log %d)", s.sectSize, head[0x79])
	case int64(len(head)) < s.sectSize:
		return nil, fallback("XFS: superblock cut short: the area is %d bytes", size)
	case head[0x7E] != 0:
		return nil, fallback("XFS: mkfs did not finish (sb_inprogress)")
	case s.agBlocks < 64 || s.agCount == 0 || s.agBlocks > 1<<31:
		return nil, fallback("XFS: %d allocation groups of %d blocks", s.agCount, s.agBlocks)
	case s.agBlkLog > 31 || uint64(1)<<s.agBlkLog < s.agBlocks || uint64(1)<<s.agBlkLog >= 2*s.agBlocks:
		return nil, fallback("XFS: allocation group block log %d for %d blocks", s.agBlkLog, s.agBlocks)
	case s.dblocks == 0 || s.dblocks > s.agBlocks*s.agCount || s.dblocks <= s.agBlocks*(s.agCount-1):
		return nil, fallback("XFS: %d blocks do not fill %d allocation groups of %d", s.dblocks, s.agCount, s.agBlocks)
	case s.dblocks > uint64(size)/uint64(s.bs):
		return nil, fallback("XFS: filesystem of %d blocks of %d bytes is larger than its %d-byte area", s.dblocks, s.bs, size)
	}
	s.uuid = head[0x20:0x30]
	if s.v5 {
		incompat := be32(0xD8)
		switch {
		case incompat&xfsIncompatNeedRepair != 0:
			return nil, fallback("XFS: marked as needing repair: run xfs_repair first")
		case incompat&^xfsIncompatKnown != 0:
			return nil, fallback("XFS: unknown incompatible features %#x", incompat&^xfsIncompatKnown)
		case !xfsCRCOK(head[:s.sectSize], 0xE0):
			return nil, fallback("XFS: superblock checksum does not match")
		}
		if incompat&xfsIncompatMetaUUID != 0 {
			s.uuid = head[0xF8:0x108]
		}
	}
	if s.logStart != 0 {
		ag, bno := s.logStart>>s.agBlkLog, s.logStart&(1<<s.agBlkLog-1)
		if ag >= s.agCount || bno+s.logBlocks > s.agLen(ag) || s.logBlocks == 0 {
			return nil, fallback("XFS: internal log of %d blocks at block %d of group %d is outside it", s.logBlocks, bno, ag)
		}
	}
	return s, nil
}

// agLen is the number of blocks of allocation group ag.
func (s *xfsSuper) agLen(ag uint64) uint64 {
	return min(s.agBlocks, s.dblocks-ag*s.agBlocks)
}

// xfsCRCOK checks a v5 metadata block's CRC32C, stored little-endian at
// off and computed with those four bytes as zeros.
func xfsCRCOK(b []byte, off int) bool {
	if len(b) < off+4 {
		return false
	}
	want := binary.LittleEndian.Uint32(b[off:])
	crc := crc32.Update(0, castagnoli, b[:off])
	crc = crc32.Update(crc, castagnoli, []byte{0, 0, 0, 0})
	crc = crc32.Update(crc, castagnoli, b[off+4:])
	return crc == want
}

// mapXFS maps an XFS filesystem by the free-space btree of each allocation
// group (the bnobt): what it lists is free, every other block used. The AG
// headers, the free list, every btree, the inodes and the internal log are
// not in it, and so are used. Each AGF and btree block is checked (magic,
// CRC, owner, position, sorted records, counts that add up to the AGF's)
// before it is believed.
func mapXFS(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	s, err := parseXFSSuper(head, size)
	if err != nil {
		return nil, err
	}
	if err := s.logClean(r); err != nil {
		return nil, err
	}
	used := newBoundedExtents(maxExtents)
	buf := make([]byte, s.bs)
	nodes := 0 // btree blocks read, over all groups: bounds the time
	for ag := range s.agCount {
		agStart := int64(ag * s.agBlocks)
		free, err := s.agFree(r, ag, buf, &nodes)
		if err != nil {
			return nil, err
		}
		pos := uint64(0)
		for _, f := range free {
			used.add(Extent{agStart + int64(pos), int64(f.Off) - int64(pos)})
			pos = uint64(f.End())
		}
		used.add(Extent{agStart + int64(pos), int64(s.agLen(ag) - pos)})
	}
	return &fsMap{method: MethodXFS, size: int64(s.dblocks) * s.bs, used: used.extents(s.bs)}, nil
}

// xfsMaxNodes bounds the btree blocks read for one filesystem: a free-space
// btree of 2^22 blocks lists more extents than any real filesystem holds.
const xfsMaxNodes = 1 << 22

// agFree reads allocation group ag's AGF and walks its bnobt. It returns
// the free extents, in blocks relative to the group, sorted, and checks
// them against the group's own metadata.
func (s *xfsSuper) agFree(r io.ReaderAt, ag uint64, buf []byte, nodes *int) ([]Extent, error) {
	agOff := int64(ag*s.agBlocks) * s.bs
	agf := make([]byte, s.sectSize)
	if err := readFull(r, agf, agOff+s.sectSize); err != nil {
		return nil, fmt.Errorf("XFS: reading the AGF of group %d: %w", ag, err)
	}
	be32 := func(o int) uint64 { return uint64(binary.BigEndian.Uint32(agf[o:])) }
	agLen := s.agLen(ag)
	root, level := be32(0x10), be32(0x1C)
	cntRoot := be32(0x14)
	freeBlks := be32(0x34)
	switch {
	case string(agf[:4]) != xfsAGFMagic:
		return nil, fallback("XFS: the AGF of group %d has no XAGF magic", ag)
	case s.v5 && !xfsCRCOK(agf, 0xD8):
		return nil, fallback("XFS: the AGF of group %d fails its checksum", ag)
	case s.v5 && !bytes.Equal(agf[0x40:0x50], s.uuid):
		return nil, fallback("XFS: the AGF of group %d belongs to another filesystem", ag)
	case be32(0x08) != ag || be32(0x0C) != agLen:
		return nil, fallback("XFS: the AGF of group %d says group %d of %d blocks, want %d", ag, be32(0x08), be32(0x0C), agLen)
	case level == 0 || level > xfsMaxLevels:
		return nil, fallback("XFS: the free-space btree of group %d has %d levels", ag, level)
	case root == 0 || root >= agLen || cntRoot == 0 || cntRoot >= agLen:
		return nil, fallback("XFS: the free-space btree roots of group %d (%d, %d) are outside it", ag, root, cntRoot)
	case freeBlks > agLen:
		return nil, fallback("XFS: group %d counts %d free blocks of %d", ag, freeBlks, agLen)
	}

	hdr := int64(16)
	magic := xfsBnoMagic
	if s.v5 {
		hdr, magic = 56, xfsBnoCRC
	}
	maxRecs := (s.bs - hdr) / 8
	maxPtrs := (s.bs - hdr) / 12

	type frame struct{ bno, level uint64 }
	stack := []frame{{root, level - 1}}
	var free []Extent
	var btree []uint64 // the blocks of the btree itself: used
	var sum uint64
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if *nodes++; *nodes > xfsMaxNodes {
			return nil, fallback("XFS: the free-space btrees hold more than %d blocks", xfsMaxNodes)
		}
		if f.bno == 0 || f.bno >= agLen {
			return nil, fallback("XFS: the free-space btree of group %d points at block %d, outside it", ag, f.bno)
		}
		btree = append(btree, f.bno)
		if err := readFull(r, buf, agOff+int64(f.bno)*s.bs); err != nil {
			return nil, fmt.Errorf("XFS: reading free-space btree block %d of group %d: %w", f.bno, ag, err)
		}
		lvl := uint64(binary.BigEndian.Uint16(buf[4:]))
		n := int64(binary.BigEndian.Uint16(buf[6:]))
		daddr := uint64(agOff/512) + f.bno*uint64(s.bs/512)
		switch {
		case string(buf[:4]) != magic:
			return nil, fallback("XFS: free-space btree block %d of group %d has no %s magic", f.bno, ag, magic)
		case s.v5 && !xfsCRCOK(buf, 52):
			return nil, fallback("XFS: free-space btree block %d of group %d fails its checksum", f.bno, ag)
		case s.v5 && (binary.BigEndian.Uint64(buf[16:]) != daddr || uint64(binary.BigEndian.Uint32(buf[48:])) != ag || !bytes.Equal(buf[32:48], s.uuid)):
			return nil, fallback("XFS: free-space btree block %d of group %d is not where its header says", f.bno, ag)
		case lvl != f.level:
			return nil, fallback("XFS: free-space btree block %d of group %d is at level %d, want %d", f.bno, ag, lvl, f.level)
		case lvl == 0 && n > maxRecs, lvl > 0 && (n > maxPtrs || n == 0):
			return nil, fallback("XFS: free-space btree block %d of group %d holds %d records", f.bno, ag, n)
		}
		if lvl > 0 {
			// Children go on the stack last first, so that leaves come in
			// key order: a pointer that repeats a subtree shows as records
			// out of order.
			ptrs := hdr + maxPtrs*8
			for i := n - 1; i >= 0; i-- {
				stack = append(stack, frame{uint64(binary.BigEndian.Uint32(buf[ptrs+4*i:])), lvl - 1})
			}
			continue
		}
		for i := range n {
			rec := buf[hdr+8*i:]
			start, cnt := uint64(binary.BigEndian.Uint32(rec)), uint64(binary.BigEndian.Uint32(rec[4:]))
			prevEnd := uint64(0)
			if k := len(free); k > 0 {
				prevEnd = uint64(free[k-1].End())
			}
			if cnt == 0 || start < prevEnd || start+cnt > agLen {
				return nil, fallback("XFS: free extent [%d, +%d) of group %d is empty, out of order or outside the group", start, cnt, ag)
			}
			free = append(free, Extent{int64(start), int64(cnt)})
			sum += cnt
			if len(free) > maxExtents {
				return nil, fallback("XFS: group %d has more than %d free extents", ag, maxExtents)
			}
		}
	}
	if sum != freeBlks {
		return nil, fallback("XFS: the free-space btree of group %d lists %d free blocks, its AGF %d", ag, sum, freeBlks)
	}
	// Blocks that must be used: the AG headers (superblock, AGF, AGI,
	// AGFL), the btree roots and blocks, the log.
	must := []Extent{{0, (4*s.sectSize + s.bs - 1) / s.bs}, {int64(cntRoot), 1}}
	for _, b := range btree {
		must = append(must, Extent{int64(b), 1})
	}
	if s.logStart != 0 && s.logStart>>s.agBlkLog == ag {
		must = append(must, Extent{int64(s.logStart & (1<<s.agBlkLog - 1)), int64(s.logBlocks)})
	}
	for _, m := range must {
		if e, ok := overlapsAny(free, m); ok {
			return nil, fallback("XFS: free extent [%d, +%d) of group %d covers its metadata at block %d", e.Off, e.Len, ag, m.Off)
		}
	}
	return free, nil
}

// overlapsAny returns an extent of sorted ext that overlaps m.
func overlapsAny(ext []Extent, m Extent) (Extent, bool) {
	lo, hi := 0, len(ext)
	for lo < hi { // the first extent ending after m.Off
		mid := (lo + hi) / 2
		if ext[mid].End() > m.Off {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo < len(ext) && ext[lo].Off < m.End() {
		return ext[lo], true
	}
	return Extent{}, false
}

// The log's record header (xlog_rec_header) and what ends a clean log.
const (
	xfsLogMagic      = 0xFEEDBABE
	xfsLogUnmount    = 0x20 // XLOG_UNMOUNT_TRANS, in the first op header's flags
	xfsLogCycleSize  = 32768
	xfsLogMaxRecBB   = 2 * (256<<10 + 8*xfsLogCycleSize) / 512 // the largest record and its headers, twice
	xfsLogSearchRead = 64 << 10
)

// logClean checks that the internal log ends with an unmount record: the
// filesystem was cleanly unmounted, so its btrees hold every committed
// allocation. A dirty log (mounted, or crashed) may hold allocations the
// btrees do not show yet. It finds the head as xlog_find_head does, by the
// cycle numbers stamped in each 512-byte block, and reads back from there
// to the last record header (xlog_check_unmount_rec). An external log is
// not on this device, so whether it is clean cannot be told: such a
// filesystem falls back too.
func (s *xfsSuper) logClean(r io.ReaderAt) error {
	if s.logStart == 0 {
		return fallback("XFS: the log is on another device: whether it is clean cannot be told from this one")
	}
	ag, bno := s.logStart>>s.agBlkLog, s.logStart&(1<<s.agBlkLog-1)
	base := (int64(ag*s.agBlocks) + int64(bno)) * s.bs
	n := int64(s.logBlocks) * s.bs / 512 // basic blocks
	bb := make([]byte, 512)
	cycle := func(i int64) (uint32, error) {
		if err := readFull(r, bb, base+i*512); err != nil {
			return 0, fmt.Errorf("XFS: reading log block %d: %w", i, err)
		}
		if binary.BigEndian.Uint32(bb) == xfsLogMagic {
			return binary.BigEndian.Uint32(bb[4:]), nil
		}
		return binary.BigEndian.Uint32(bb), nil
	}
	first, err := cycle(0)
	if err != nil {
		return err
	}
	last, err := cycle(n - 1)
	if err != nil {
		return err
	}
	dirty := func(why string) error {
		return fallback("XFS: the log is not clean (%s): mounted, or not cleanly unmounted; mount and unmount it, or run xfs_repair", why)
	}
	// Blocks before the head carry the current cycle, those after it the
	// one before. The same cycle throughout: the head is at the end.
	head := n
	switch {
	case first == last:
	case last+1 == first:
		lo, hi := int64(0), n-1 // cycle(lo) == first, cycle(hi) == last
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			c, err := cycle(mid)
			if err != nil {
				return err
			}
			if c == first {
				lo = mid
			} else {
				hi = mid
			}
		}
		head = hi
	default:
		return dirty(fmt.Sprintf("cycles %d and %d at its ends", first, last))
	}
	// The last record header before the head: read back a window.
	win := min(head, xfsLogMaxRecBB)
	if win == 0 {
		return dirty("no record before the head")
	}
	buf := make([]byte, win*512)
	if err := readFull(r, buf, base+(head-win)*512); err != nil {
		return fmt.Errorf("XFS: reading the log before its head: %w", err)
	}
	for i := win - 1; i >= 0; i-- {
		h := buf[i*512 : (i+1)*512]
		if binary.BigEndian.Uint32(h) != xfsLogMagic {
			continue
		}
		hblks := int64(1)
		if size := int64(binary.BigEndian.Uint32(h[320:])); binary.BigEndian.Uint32(h[8:])&2 != 0 && size > xfsLogCycleSize {
			hblks = (size + xfsLogCycleSize - 1) / xfsLogCycleSize
		}
		recLen := int64(binary.BigEndian.Uint32(h[12:]))
		end := head - win + i + hblks + (recLen+511)/512
		data := i + hblks
		switch {
		case end != head:
			return dirty("the last record does not end at the head")
		case binary.BigEndian.Uint32(h[40:]) != 1 || data >= win || buf[data*512+9]&xfsLogUnmount == 0:
			return dirty("the last record is not an unmount record")
		}
		return nil
	}
	return dirty("no record header before the head")
}
