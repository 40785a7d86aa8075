package blockmap

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
)

// The F2FS on-disk layout, from the kernel's include/linux/f2fs_fs.h and
// fs/f2fs/segment.h, checkpoint.c. Every number is little-endian.
const (
	f2fsSuperOff   = 1024
	f2fsMagic      = 0xF2F52010
	f2fsBlockSize  = 4096
	f2fsSegBlocks  = 512 // blocks per segment: the only size Linux mounts
	f2fsSitEntry   = 74  // vblocks, a 512-bit valid map, mtime
	f2fsSitPerBlk  = f2fsBlockSize / f2fsSitEntry
	f2fsJournalLen = 507 // SUM_JOURNAL_SIZE
	f2fsSumEntries = 7 * 512
	f2fsSitJournal = 6 // SIT_JOURNAL_ENTRIES

	f2fsFeatureBlkzoned = 0x2
	f2fsFeatureSBChksum = 0x800
	f2fsFeatureRO       = 0x4000

	f2fsCPUmount     = 0x1
	f2fsCPCompactSum = 0x4
	f2fsCPError      = 0x8
	f2fsCPFsck       = 0x10
	f2fsCPLargeNAT   = 0x400
	f2fsCPDisabled   = 0x1000 | 0x2000
)

// isF2FS reports whether head holds an F2FS superblock magic.
func isF2FS(head []byte) bool {
	return len(head) >= f2fsSuperOff+4 && binary.LittleEndian.Uint32(head[f2fsSuperOff:]) == f2fsMagic
}

// f2fsCRC is f2fs_crc32: a CRC-32 (IEEE, reflected) seeded with the magic,
// without the usual inversions.
func f2fsCRC(b []byte) uint32 {
	return ^crc32.Update(^uint32(f2fsMagic), crc32.IEEETable, b)
}

// f2fsSuper is what mapping needs from an F2FS superblock.
type f2fsSuper struct {
	blocks                        uint64
	segCount, segMain             uint64
	segCP, segSIT, segNAT, segSSA uint64
	seg0, cpAddr, sitAddr         uint64
	natAddr, ssaAddr, mainAddr    uint64
	cpPayload                     uint64
}

// parseF2FSSuper reads and checks the primary superblock.
func parseF2FSSuper(head []byte, size int64) (*f2fsSuper, error) {
	if len(head) < f2fsSuperOff+3072 {
		return nil, fallback("F2FS: superblock cut short: the area is %d bytes", size)
	}
	sb := head[f2fsSuperOff : f2fsSuperOff+3072]
	u32 := func(o int) uint64 { return uint64(binary.LittleEndian.Uint32(sb[o:])) }
	s := &f2fsSuper{
		blocks: binary.LittleEndian.Uint64(sb[0x24:]), segCount: u32(0x30),
		segCP: u32(0x34), segSIT: u32(0x38), segNAT: u32(0x3C), segSSA: u32(0x40), segMain: u32(0x44),
		seg0: u32(0x48), cpAddr: u32(0x4C), sitAddr: u32(0x50), natAddr: u32(0x54), ssaAddr: u32(0x58), mainAddr: u32(0x5C),
		cpPayload: u32(0x680),
	}
	feature := u32(0x884)
	meta := s.segCP + s.segSIT + s.segNAT + s.segSSA
	switch {
	case u32(0x10) != 12 || u32(0x14) != 9:
		return nil, fallback("F2FS: block size 2^%d with 2^%d blocks per segment, want 4096 and 512", u32(0x10), u32(0x14))
	case feature&f2fsFeatureSBChksum != 0 && (u32(0x20) != 0xBFC || f2fsCRC(sb[:0xBFC]) != uint32(u32(0xBFC))):
		return nil, fallback("F2FS: superblock checksum does not match")
	case feature&(f2fsFeatureBlkzoned|f2fsFeatureRO) != 0:
		return nil, fallback("F2FS: zoned or read-only layout (features %#x) is not mapped", feature)
	case sb[0x899] != 0:
		return nil, fallback("F2FS: one of several devices: a multi-device filesystem is kept whole")
	case s.blocks == 0 || s.blocks > uint64(size)/f2fsBlockSize:
		return nil, fallback("F2FS: filesystem of %d blocks of 4096 bytes is larger than its %d-byte area", s.blocks, size)
	case s.segCP < 2 || s.segSIT < 2 || s.segSIT%2 != 0 || s.segMain == 0 || meta+s.segMain > s.segCount:
		return nil, fallback("F2FS: %d segments: %d checkpoint, %d SIT, %d NAT, %d SSA, %d main", s.segCount, s.segCP, s.segSIT, s.segNAT, s.segSSA, s.segMain)
	case s.segNAT < 2 || s.segNAT%2 != 0 || s.segSSA*f2fsSegBlocks < s.segMain:
		return nil, fallback("F2FS: %d NAT segments, %d SSA segments for %d main segments", s.segNAT, s.segSSA, s.segMain)
	case s.cpAddr != s.seg0 || s.sitAddr != s.seg0+s.segCP*f2fsSegBlocks || s.natAddr != s.sitAddr+s.segSIT*f2fsSegBlocks ||
		s.ssaAddr != s.natAddr+s.segNAT*f2fsSegBlocks || s.mainAddr != s.seg0+meta*f2fsSegBlocks:
		return nil, fallback("F2FS: areas at blocks %d, %d, %d, %d, %d do not follow from segment 0 at %d", s.cpAddr, s.sitAddr, s.natAddr, s.ssaAddr, s.mainAddr, s.seg0)
	case s.seg0+s.segCount*f2fsSegBlocks > s.blocks || s.segCount > 1<<32/f2fsSegBlocks:
		return nil, fallback("F2FS: %d segments from block %d do not fit %d blocks", s.segCount, s.seg0, s.blocks)
	case s.cpPayload > f2fsSegBlocks/2:
		return nil, fallback("F2FS: checkpoint payload of %d blocks", s.cpPayload)
	case s.segMain/f2fsSitPerBlk >= s.segSIT/2*f2fsSegBlocks:
		return nil, fallback("F2FS: %d main segments need more SIT than %d segments", s.segMain, s.segSIT)
	}
	return s, nil
}

// f2fsCP is a checkpoint pack that checked out.
type f2fsCP struct {
	start   uint64 // its first block
	hdr     []byte // its first block
	payload []byte // the payload blocks after it
	version uint64
}

func (c *f2fsCP) u32(o int) uint64 { return uint64(binary.LittleEndian.Uint32(c.hdr[o:])) }

// readCP reads the checkpoint pack at block start; nil when it does not
// check out (a torn write leaves one pack invalid, which is normal).
func (s *f2fsSuper) readCP(r io.ReaderAt, start uint64) (*f2fsCP, error) {
	c := &f2fsCP{start: start, hdr: make([]byte, f2fsBlockSize)}
	if err := readFull(r, c.hdr, int64(start)*f2fsBlockSize); err != nil {
		return nil, fmt.Errorf("F2FS: reading the checkpoint at block %d: %w", start, err)
	}
	csOff := c.u32(0xA4)
	if csOff < 0xC0 || csOff > f2fsBlockSize-4 || csOff%4 != 0 || f2fsCRC(c.hdr[:csOff]) != uint32(c.u32(int(csOff))) {
		return nil, nil
	}
	total := c.u32(0x88)
	if total < 2+s.cpPayload || total > f2fsSegBlocks {
		return nil, nil
	}
	foot := make([]byte, f2fsBlockSize)
	if err := readFull(r, foot, int64(start+total-1)*f2fsBlockSize); err != nil {
		return nil, fmt.Errorf("F2FS: reading the checkpoint's last block at %d: %w", start+total-1, err)
	}
	c.version = binary.LittleEndian.Uint64(c.hdr)
	if binary.LittleEndian.Uint64(foot) != c.version || f2fsCRC(foot[:csOff]) != binary.LittleEndian.Uint32(foot[csOff:]) {
		return nil, nil
	}
	if s.cpPayload > 0 {
		c.payload = make([]byte, s.cpPayload*f2fsBlockSize)
		if err := readFull(r, c.payload, int64(start+1)*f2fsBlockSize); err != nil {
			return nil, fmt.Errorf("F2FS: reading the checkpoint payload at block %d: %w", start+1, err)
		}
	}
	return c, nil
}

// mapF2FS maps an F2FS filesystem by its segment information table: the
// valid-block bitmap of each main-area segment, the newer copy of each SIT
// block as the checkpoint's version bitmap chooses, with the checkpoint's
// SIT journal entries overriding. The superblocks, checkpoints, SIT, NAT
// and SSA are used whole. Only a cleanly unmounted filesystem is mapped:
// otherwise roll-forward recovery may still claim blocks the SIT calls
// free.
func mapF2FS(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	s, err := parseF2FSSuper(head, size)
	if err != nil {
		return nil, err
	}
	var cp *f2fsCP
	for _, at := range []uint64{s.cpAddr, s.cpAddr + f2fsSegBlocks} {
		c, err := s.readCP(r, at)
		if err != nil {
			return nil, err
		}
		if c != nil && (cp == nil || c.version > cp.version) {
			cp = c
		}
	}
	if cp == nil {
		return nil, fallback("F2FS: neither checkpoint checks out")
	}
	flags := cp.u32(0x84)
	switch {
	case flags&f2fsCPError != 0, flags&f2fsCPFsck != 0:
		return nil, fallback("F2FS: the checkpoint asks for fsck.f2fs (flags %#x)", flags)
	case flags&f2fsCPDisabled != 0:
		return nil, fallback("F2FS: checkpointing is disabled (flags %#x)", flags)
	case flags&f2fsCPUmount == 0:
		return nil, fallback("F2FS: not cleanly unmounted (or mounted): roll-forward recovery may claim free blocks")
	case flags&f2fsCPLargeNAT != 0:
		return nil, fallback("F2FS: large NAT bitmap checkpoints are not mapped")
	}
	sitBlocks := s.segSIT / 2 * f2fsSegBlocks
	verBitmap, err := s.sitVersionBitmap(cp, sitBlocks)
	if err != nil {
		return nil, err
	}
	journal, err := s.sitJournal(r, cp, flags)
	if err != nil {
		return nil, err
	}

	natBlocks := s.segNAT / 2 * f2fsSegBlocks
	natBitmap, err := s.natVersionBitmap(cp, natBlocks, uint64(len(verBitmap)))
	if err != nil {
		return nil, err
	}

	// The metadata areas are used where they are read: the superblocks
	// and checkpoint segments whole; the SIT blocks that describe main
	// segments, both copies; the current copy of each NAT block
	// (current_nat_addr); the summary blocks of segments that hold valid
	// blocks or are current logs. The rest was never written or is stale,
	// and mkfs.f2fs leaves whatever the device held there.
	used := newBoundedExtents(maxExtents)
	nSit := (s.segMain + f2fsSitPerBlk - 1) / f2fsSitPerBlk
	used.add(Extent{0, int64(s.sitAddr + nSit)})
	used.add(Extent{int64(s.sitAddr + sitBlocks), int64(nSit)})
	for i := range natBlocks {
		at := s.natAddr + i/f2fsSegBlocks*2*f2fsSegBlocks + i%f2fsSegBlocks
		if natBitmap[i/8]&(0x80>>(i%8)) != 0 {
			at += f2fsSegBlocks
		}
		used.add(Extent{int64(at), 1})
	}
	for i := range 3 {
		for _, seg := range []uint64{cp.u32(0x24 + 4*i), cp.u32(0x54 + 4*i)} {
			if seg < s.segMain {
				used.add(Extent{int64(s.ssaAddr + seg), 1})
			}
		}
	}
	mainEnd := s.mainAddr + s.segMain*f2fsSegBlocks
	used.add(Extent{int64(mainEnd), int64(s.blocks - mainEnd)})
	locs := make([]uint64, nSit)
	for i := range locs {
		locs[i] = s.sitAddr + uint64(i)
		if verBitmap[i/8]&(0x80>>(i%8)) != 0 {
			locs[i] += sitBlocks
		}
	}
	var valid uint64
	entry := func(seg uint64, e []byte) error {
		v := uint64(binary.LittleEndian.Uint16(e)) & 0x3FF
		m := e[2 : 2+f2fsSegBlocks/8]
		var n uint64
		for k := 0; k < len(m); k += 8 {
			n += uint64(bits.OnesCount64(binary.LittleEndian.Uint64(m[k:])))
		}
		if n != v {
			return fallback("F2FS: SIT entry of segment %d counts %d valid blocks, its bitmap %d", seg, v, n)
		}
		valid += n
		if n > 0 {
			used.add(Extent{int64(s.ssaAddr + seg), 1})
		}
		base := int64(s.mainAddr + seg*f2fsSegBlocks)
		for k := range m {
			switch m[k] {
			case 0:
				continue
			case 0xFF:
				used.add(Extent{base + int64(8*k), 8})
				continue
			}
			for bit := range 8 {
				if m[k]&(0x80>>bit) != 0 {
					used.add(Extent{base + int64(8*k+bit), 1})
				}
			}
		}
		return nil
	}
	err = readBlocks(r, f2fsBlockSize, locs, func(k int, b []byte) error {
		for i := range uint64(f2fsSitPerBlk) {
			seg := uint64(k)*f2fsSitPerBlk + i
			if seg >= s.segMain {
				break
			}
			e := b[i*f2fsSitEntry : (i+1)*f2fsSitEntry]
			if j, ok := journal[seg]; ok {
				e = j
			}
			if err := entry(seg, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if want := binary.LittleEndian.Uint64(cp.hdr[0x10:]); valid != want {
		return nil, fallback("F2FS: the SIT marks %d blocks valid, the checkpoint counts %d", valid, want)
	}
	return &fsMap{method: MethodF2FS, size: int64(s.blocks) * f2fsBlockSize, used: used.extents(f2fsBlockSize)}, nil
}

// sitVersionBitmap returns the checkpoint's SIT version bitmap: bit i set
// means SIT block i is read from the second copy.
func (s *f2fsSuper) sitVersionBitmap(cp *f2fsCP, sitBlocks uint64) ([]byte, error) {
	n := cp.u32(0x9C)
	natN := cp.u32(0xA0)
	if n != sitBlocks/8 {
		return nil, fallback("F2FS: SIT version bitmap of %d bytes for %d SIT blocks", n, sitBlocks)
	}
	if s.cpPayload > 0 {
		if n > uint64(len(cp.payload)) {
			return nil, fallback("F2FS: SIT version bitmap of %d bytes does not fit the checkpoint payload", n)
		}
		return cp.payload[:n], nil
	}
	if 0xC0+n+natN > cp.u32(0xA4) {
		return nil, fallback("F2FS: SIT and NAT version bitmaps of %d and %d bytes do not fit the checkpoint", n, natN)
	}
	return cp.hdr[0xC0 : 0xC0+n], nil
}

// sitJournal reads the SIT entries the checkpoint keeps in its summary of
// the cold data log, which are newer than the SIT blocks.
func (s *f2fsSuper) sitJournal(r io.ReaderAt, cp *f2fsCP, flags uint64) (map[uint64][]byte, error) {
	total := cp.u32(0x88)
	blk, off := cp.start+total-5, f2fsSumEntries // the cold data summary (read_normal_summaries)
	if flags&f2fsCPCompactSum != 0 {
		blk, off = cp.start+cp.u32(0x8C), f2fsJournalLen // after the NAT journal (read_compacted_summaries)
	}
	if blk <= cp.start+s.cpPayload || blk >= cp.start+total-1 {
		return nil, fallback("F2FS: the checkpoint's summary block %d lies outside its pack", blk)
	}
	b := make([]byte, f2fsBlockSize)
	if err := readFull(r, b, int64(blk)*f2fsBlockSize); err != nil {
		return nil, fmt.Errorf("F2FS: reading the checkpoint's summary at block %d: %w", blk, err)
	}
	j := b[off : off+f2fsJournalLen]
	n := int(binary.LittleEndian.Uint16(j))
	if n > f2fsSitJournal {
		return nil, fallback("F2FS: the checkpoint's SIT journal holds %d entries, at most %d fit", n, f2fsSitJournal)
	}
	out := make(map[uint64][]byte, n)
	for i := range n {
		e := j[2+i*(4+f2fsSitEntry):]
		seg := uint64(binary.LittleEndian.Uint32(e))
		if seg >= s.segMain {
			return nil, fallback("F2FS: the checkpoint's SIT journal names segment %d of %d", seg, s.segMain)
		}
		out[seg] = e[4 : 4+f2fsSitEntry]
	}
	return out, nil
}

// natVersionBitmap returns the checkpoint's NAT version bitmap: bit i set
// means NAT block i is read from the second copy. It follows the SIT's
// (sitN bytes) in the checkpoint block, or starts it when the SIT's is in
// the payload.
func (s *f2fsSuper) natVersionBitmap(cp *f2fsCP, natBlocks, sitN uint64) ([]byte, error) {
	n := cp.u32(0xA0)
	if n != natBlocks/8 {
		return nil, fallback("F2FS: NAT version bitmap of %d bytes for %d NAT blocks", n, natBlocks)
	}
	at := 0xC0 + sitN
	if s.cpPayload > 0 {
		at = 0xC0
	}
	if at+n > cp.u32(0xA4) {
		return nil, fallback("F2FS: NAT version bitmap of %d bytes does not fit the checkpoint", n)
	}
	return cp.hdr[at : at+n], nil
}
