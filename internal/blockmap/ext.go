package blockmap

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"sort"
)

// The ext2/3/4 on-disk layout, from the kernel's Documentation/filesystems/
// ext4 and e2fsprogs' lib/ext2fs.
const (
	extSuperOff = 1024
	extMagic    = 0xEF53

	extCompatHasJournal   = 0x4
	extCompatSparseSuper2 = 0x200

	extIncompatRecover    = 0x4
	extIncompatJournalDev = 0x8
	extIncompatMetaBG     = 0x10
	extIncompatExtents    = 0x40
	extIncompat64Bit      = 0x80
	extIncompatFlexBG     = 0x200
	// Every incompat feature whose layout we know. An unknown one may
	// move metadata: such a filesystem falls back.
	extIncompatKnown = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 |
		0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000

	extRoCompatSparseSuper  = 0x1
	extRoCompatHugeFile     = 0x8
	extRoCompatGDTCsum      = 0x10
	extRoCompatDirNlink     = 0x20
	extRoCompatExtraIsize   = 0x40
	extRoCompatHasSnapshot  = 0x80
	extRoCompatBigalloc     = 0x200
	extRoCompatMetadataCsum = 0x400
	extRoCompatKnown        = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 |
		0x400 | 0x800 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000

	extStateValid  = 0x1
	extStateErrors = 0x2

	extBGBlockUninit = 0x2
)

// isExt reports whether head holds an ext2/3/4 superblock magic.
func isExt(head []byte) bool {
	return len(head) >= extSuperOff+0x3A && binary.LittleEndian.Uint16(head[extSuperOff+0x38:]) == extMagic
}

// extSuper is what mapping needs from a superblock.
type extSuper struct {
	name          string // ext2, ext3 or ext4: for methods and notes
	bs            uint64 // block size in bytes
	blocks        uint64
	firstData     uint64
	perGroup      uint64 // blocks per group
	groups        uint64
	itableBlocks  uint64 // inode table blocks per group
	descSize      uint64
	descPerBlock  uint64
	descBlocks    uint64 // blocks of a full descriptor table
	reservedGDT   uint64
	firstMetaBG   uint64
	backupBGs     [2]uint64
	compat        uint32
	incompat      uint32
	roCompat      uint32
	groupDescCsum bool // BLOCK_UNINIT is honoured
}

// parseExtSuper reads and checks the superblock at head[1024:], for an
// area of size bytes: its features (what kind of ext it is, and whether
// its bitmaps can be trusted), then its geometry.
func parseExtSuper(head []byte, size int64) (*extSuper, error) {
	if len(head) < extSuperOff+1024 {
		return nil, fallback("ext: superblock cut short: the area is %d bytes", size)
	}
	sb := superBytes(head[extSuperOff : extSuperOff+1024])
	s := extFeatures(sb)
	if err := s.checkFeatures(sb.u16(0x3A)); err != nil {
		return nil, err
	}
	if err := s.readGeometry(sb, size); err != nil {
		return nil, err
	}
	return s, nil
}

// superBytes is a superblock, read little-endian at byte offsets.
type superBytes []byte

func (sb superBytes) u16(o int) uint64 { return uint64(binary.LittleEndian.Uint16(sb[o:])) }
func (sb superBytes) u32(o int) uint64 { return uint64(binary.LittleEndian.Uint32(sb[o:])) }

// extFeatures reads the feature flags and names the filesystem by them.
func extFeatures(sb superBytes) *extSuper {
	s := &extSuper{
		compat:   uint32(sb.u32(0x5C)),
		incompat: uint32(sb.u32(0x60)),
		roCompat: uint32(sb.u32(0x64)),
	}
	if sb.u32(0x4C) == 0 {
		// Revision 0 has no feature fields; clear whatever is there.
		s.compat, s.incompat, s.roCompat = 0, 0, 0
	}
	s.name = "ext2"
	if s.compat&extCompatHasJournal != 0 {
		s.name = "ext3"
	}
	if s.incompat&(extIncompatExtents|extIncompat64Bit|extIncompatFlexBG|0x8000) != 0 ||
		s.roCompat&(extRoCompatHugeFile|extRoCompatGDTCsum|extRoCompatDirNlink|extRoCompatExtraIsize|extRoCompatMetadataCsum) != 0 {
		s.name = "ext4"
	}
	return s
}

// checkFeatures refuses a filesystem whose bitmaps cannot be trusted or
// whose layout is not known: unknown or unsupported features, a journal to
// recover, a state that is not clean.
func (s *extSuper) checkFeatures(state uint64) error {
	name := s.name
	switch {
	case s.incompat&extIncompatJournalDev != 0:
		return fallback("%s: an external journal device, not a filesystem", name)
	case s.incompat&^extIncompatKnown != 0:
		return fallback("%s: unknown incompatible features %#x", name, s.incompat&^extIncompatKnown)
	case s.roCompat&^extRoCompatKnown != 0:
		return fallback("%s: unknown read-only features %#x", name, s.roCompat&^extRoCompatKnown)
	case s.roCompat&extRoCompatBigalloc != 0:
		return fallback("%s: bigalloc (bitmaps of clusters) is not supported", name)
	case s.roCompat&extRoCompatHasSnapshot != 0:
		return fallback("%s: snapshots are not supported", name)
	case s.incompat&extIncompatRecover != 0:
		// Committed allocations may still sit in the journal, not in the
		// bitmaps: a mounted or crashed filesystem.
		return fallback("%s: needs journal recovery (mounted, or not cleanly unmounted)", name)
	case state&extStateValid == 0:
		return fallback("%s: not cleanly unmounted (or mounted)", name)
	case state&extStateErrors != 0:
		return fallback("%s: marked as having errors: run e2fsck first", name)
	}
	return nil
}

// readGeometry reads the block and group layout and checks it against
// itself and against the size of the area.
func (s *extSuper) readGeometry(sb superBytes, size int64) error {
	name := s.name
	logBS := sb.u32(0x18)
	if logBS > 6 {
		return fallback("%s: block size 2^(10+%d) is larger than 64 KiB", name, logBS)
	}
	s.bs = 1024 << logBS
	s.blocks = sb.u32(0x4)
	if s.incompat&extIncompat64Bit != 0 {
		s.blocks |= sb.u32(0x150) << 32
	}
	s.firstData = sb.u32(0x14)
	s.perGroup = sb.u32(0x20)
	ipg := sb.u32(0x28)
	inodeSize := uint64(128)
	if sb.u32(0x4C) > 0 {
		inodeSize = sb.u16(0x58)
	}
	s.descSize = 32
	if s.incompat&extIncompat64Bit != 0 {
		s.descSize = sb.u16(0xFE)
	}
	s.reservedGDT = sb.u16(0xCE)
	s.firstMetaBG = sb.u32(0x104)
	s.backupBGs = [2]uint64{sb.u32(0x24C), sb.u32(0x250)}
	s.groupDescCsum = s.roCompat&(extRoCompatGDTCsum|extRoCompatMetadataCsum) != 0

	wantFirst := uint64(0)
	if s.bs == 1024 {
		wantFirst = 1
	}
	switch {
	case s.firstData != wantFirst:
		return fallback("%s: first data block %d with %d-byte blocks, want %d", name, s.firstData, s.bs, wantFirst)
	case s.blocks <= s.firstData:
		return fallback("%s: %d blocks", name, s.blocks)
	case s.blocks > uint64(size)/s.bs:
		return fallback("%s: filesystem of %d blocks of %d bytes is larger than its %d-byte area", name, s.blocks, s.bs, size)
	case s.perGroup < 256 || s.perGroup > 8*s.bs || s.perGroup%8 != 0:
		return fallback("%s: %d blocks per group, want a multiple of 8 from 256 to %d", name, s.perGroup, 8*s.bs)
	case ipg == 0 || ipg > 8*s.bs:
		return fallback("%s: %d inodes per group, want 1 to %d", name, ipg, 8*s.bs)
	case inodeSize < 128 || inodeSize > s.bs || inodeSize&(inodeSize-1) != 0:
		return fallback("%s: inode size %d", name, inodeSize)
	case s.descSize < 32 || s.descSize > s.bs || s.descSize&(s.descSize-1) != 0 ||
		(s.incompat&extIncompat64Bit != 0 && s.descSize < 64):
		return fallback("%s: group descriptor size %d", name, s.descSize)
	}
	s.groups = (s.blocks - s.firstData + s.perGroup - 1) / s.perGroup
	if n := sb.u32(0x0); n != ipg*s.groups {
		return fallback("%s: %d inodes, but %d groups of %d", name, n, s.groups, ipg)
	}
	s.itableBlocks = (ipg*inodeSize + s.bs - 1) / s.bs
	s.descPerBlock = s.bs / s.descSize
	s.descBlocks = (s.groups + s.descPerBlock - 1) / s.descPerBlock
	if s.incompat&extIncompatMetaBG != 0 && s.firstMetaBG > s.descBlocks {
		return fallback("%s: first meta block group %d beyond the %d descriptor blocks", name, s.firstMetaBG, s.descBlocks)
	}
	if s.incompat&extIncompatMetaBG == 0 && 1+s.descBlocks+s.reservedGDT > s.perGroup {
		return fallback("%s: %d descriptor and %d reserved blocks do not fit in a group", name, s.descBlocks, s.reservedGDT)
	}
	return nil
}

func (s *extSuper) groupStart(g uint64) uint64 { return s.firstData + g*s.perGroup }

func (s *extSuper) groupLen(g uint64) uint64 {
	return min(s.perGroup, s.blocks-s.groupStart(g))
}

// hasSuper reports whether group g holds a superblock backup
// (ext2fs_bg_has_super).
func (s *extSuper) hasSuper(g uint64) bool {
	switch {
	case g == 0:
		return true
	case s.compat&extCompatSparseSuper2 != 0:
		return g == s.backupBGs[0] || g == s.backupBGs[1]
	case g == 1 || s.roCompat&extRoCompatSparseSuper == 0:
		return true
	case g%2 == 0:
		return false
	}
	return isPower(g, 3) || isPower(g, 5) || isPower(g, 7)
}

func isPower(g, base uint64) bool {
	n := base
	for n < g {
		n *= base
	}
	return n == g
}

// descBlock is where descriptor block i lies
// (ext2fs_descriptor_block_loc2).
func (s *extSuper) descBlock(i uint64) uint64 {
	if s.incompat&extIncompatMetaBG == 0 || i < s.firstMetaBG {
		return s.firstData + 1 + i
	}
	g := i * s.descPerBlock
	b := s.groupStart(g)
	if s.hasSuper(g) {
		b++
	}
	return b
}

// baseMeta appends the blocks at the start of group g that hold the
// superblock backup and descriptors (ext2fs_super_and_bgd_loc2), as block
// ranges.
func (s *extSuper) baseMeta(dst []Extent, g uint64) []Extent {
	start := s.groupStart(g)
	sup := s.hasSuper(g)
	metaBG := s.incompat&extIncompatMetaBG != 0
	if !metaBG || g/s.descPerBlock < s.firstMetaBG {
		if sup {
			old := s.descBlocks + s.reservedGDT
			if metaBG {
				old = s.firstMetaBG
			}
			dst = append(dst, Extent{int64(start), int64(1 + old)})
		}
		return dst
	}
	if sup {
		dst = append(dst, Extent{int64(start), 1})
	}
	if r := g % s.descPerBlock; r == 0 || r == 1 || r == s.descPerBlock-1 {
		b := start
		if sup {
			b++
		}
		dst = append(dst, Extent{int64(b), 1})
	}
	return dst
}

// extGroup is what mapping needs from a group descriptor.
type extGroup struct {
	bitmap, inodeBitmap, itable uint64
	free                        uint64
	uninit                      bool // BLOCK_UNINIT: the bitmap was never written
}

// mapExt maps an ext2/3/4 filesystem of an area of size bytes by its block
// bitmaps. The used blocks are what the bitmaps of initialized groups say,
// plus every block of metadata the descriptors and the superblock place, so
// that a group whose bitmap is uninitialized keeps its metadata. INODE_UNINIT
// changes nothing: an inode table's blocks are allocated, and kept, whether
// or not they were ever written.
func mapExt(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	s, err := parseExtSuper(head, size)
	if err != nil {
		return nil, err
	}
	groups, err := readExtGroups(r, s)
	if err != nil {
		return nil, err
	}

	// Metadata, in block ranges: the boot block and superblock, each
	// group's superblock backup and descriptors, bitmaps and inode table.
	meta := []Extent{{0, int64(s.firstData + 1)}}
	for g := range s.groups {
		meta = s.baseMeta(meta, g)
		gr := groups[g]
		meta = append(meta, Extent{int64(gr.bitmap), 1}, Extent{int64(gr.inodeBitmap), 1}, Extent{int64(gr.itable), int64(s.itableBlocks)})
	}
	meta = normalize(meta, 0, int64(s.blocks))

	used := append([]Extent(nil), meta...)
	var want []uint64 // bitmap blocks to read, in group order
	var wantGroup []uint64
	for g := range s.groups {
		gr := groups[g]
		if gr.uninit {
			// The kernel builds this bitmap from the metadata alone
			// (ext4_init_block_bitmap): the group may hold nothing else.
			if n := metaIn(meta, s.groupStart(g), s.groupLen(g)); gr.free+n < s.groupLen(g) {
				return nil, fallback("%s: group %d is marked BLOCK_UNINIT but counts %d free of %d blocks with %d of metadata",
					s.name, g, gr.free, s.groupLen(g), n)
			}
			continue
		}
		want = append(want, gr.bitmap)
		wantGroup = append(wantGroup, g)
	}
	err = readBlocks(r, s.bs, want, func(k int, b []byte) error {
		g := wantGroup[k]
		start, n := s.groupStart(g), s.groupLen(g)
		used = appendBitRuns(used, b, n, int64(start))
		if free := n - countBits(b, n); free > groups[g].free {
			return fallback("%s: block bitmap of group %d (block %d) marks %d blocks free, its descriptor %d",
				s.name, g, groups[g].bitmap, free, groups[g].free)
		}
		if blk, ok := metaMissing(meta, b, start, n); !ok {
			return fallback("%s: block bitmap of group %d (block %d) marks metadata block %d free",
				s.name, g, groups[g].bitmap, blk)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Blocks to bytes, and the superblock's first 2 KiB whatever the block
	// size: with 1 KiB blocks the boot block is not in any group.
	used = normalize(used, 0, int64(s.blocks))
	for i := range used {
		used[i] = Extent{used[i].Off * int64(s.bs), used[i].Len * int64(s.bs)}
	}
	used = append(used, Extent{0, 2048})
	return &fsMap{method: s.name + " bitmap", size: int64(s.blocks * s.bs), used: used}, nil
}

// readExtGroups reads and checks every group descriptor.
func readExtGroups(r io.ReaderAt, s *extSuper) ([]extGroup, error) {
	locs := make([]uint64, s.descBlocks)
	for i := range locs {
		locs[i] = s.descBlock(uint64(i))
		if locs[i] >= s.blocks {
			return nil, fallback("%s: descriptor block %d at block %d is outside the filesystem (%d blocks)", s.name, i, locs[i], s.blocks)
		}
	}
	flex := s.incompat&extIncompatFlexBG != 0
	// Not preallocated: a hostile group count costs only as much memory
	// as there are descriptors that pass the checks.
	var groups []extGroup
	err := readBlocks(r, s.bs, locs, func(_ int, b []byte) error {
		for o := uint64(0); o+s.descSize <= s.bs && uint64(len(groups)) < s.groups; o += s.descSize {
			d := b[o : o+s.descSize]
			lo32 := func(off int) uint64 { return uint64(binary.LittleEndian.Uint32(d[off:])) }
			lo16 := func(off int) uint64 { return uint64(binary.LittleEndian.Uint16(d[off:])) }
			gr := extGroup{bitmap: lo32(0x0), inodeBitmap: lo32(0x4), itable: lo32(0x8), free: lo16(0xC)}
			if s.descSize >= 64 {
				gr.bitmap |= lo32(0x20) << 32
				gr.inodeBitmap |= lo32(0x24) << 32
				gr.itable |= lo32(0x28) << 32
				gr.free |= lo16(0x2C) << 16
			}
			gr.uninit = s.groupDescCsum && lo16(0x12)&extBGBlockUninit != 0
			g := uint64(len(groups))
			// Without flex_bg a group's metadata lies inside it.
			lo, hi := s.firstData, s.blocks
			if !flex {
				lo, hi = s.groupStart(g), s.groupStart(g)+s.groupLen(g)
			}
			switch {
			case gr.bitmap < lo || gr.bitmap >= hi:
				return fallback("%s: block bitmap of group %d at block %d is outside [%d, %d)", s.name, g, gr.bitmap, lo, hi)
			case gr.inodeBitmap < lo || gr.inodeBitmap >= hi:
				return fallback("%s: inode bitmap of group %d at block %d is outside [%d, %d)", s.name, g, gr.inodeBitmap, lo, hi)
			case gr.itable < lo || gr.itable >= hi || s.itableBlocks > hi-gr.itable:
				return fallback("%s: inode table of group %d at block %d (%d blocks) is outside [%d, %d)", s.name, g, gr.itable, s.itableBlocks, lo, hi)
			case gr.free > s.groupLen(g):
				return fallback("%s: group %d counts %d free blocks of %d", s.name, g, gr.free, s.groupLen(g))
			}
			groups = append(groups, gr)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return groups, nil
}

// metaWithin returns the metadata extents that overlap [start, start+n),
// found by binary search: a filesystem without flex_bg has a few per group.
func metaWithin(meta []Extent, start, n uint64) []Extent {
	lo := sort.Search(len(meta), func(i int) bool { return meta[i].End() > int64(start) })
	hi := lo
	for hi < len(meta) && meta[hi].Off < int64(start+n) {
		hi++
	}
	return meta[lo:hi]
}

// metaIn counts the metadata blocks in [start, start+n).
func metaIn(meta []Extent, start, n uint64) uint64 {
	var c int64
	for _, e := range metaWithin(meta, start, n) {
		c += min(e.End(), int64(start+n)) - max(e.Off, int64(start))
	}
	return uint64(c)
}

// metaMissing checks that a group's bitmap marks every metadata block inside
// the group used: a bitmap that does not is not this group's bitmap. It
// returns the first block that is not marked.
func metaMissing(meta []Extent, bitmap []byte, start, n uint64) (uint64, bool) {
	for _, e := range metaWithin(meta, start, n) {
		for b := max(e.Off, int64(start)); b < min(e.End(), int64(start+n)); b++ {
			i := uint64(b) - start
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				return uint64(b), false
			}
		}
	}
	return 0, true
}

// countBits counts the set bits among the first n bits of b.
func countBits(b []byte, n uint64) uint64 {
	var c int
	full := n / 8
	for len(b[:full]) >= 8 {
		c += bits.OnesCount64(binary.LittleEndian.Uint64(b))
		b, full = b[8:], full-8
	}
	for _, x := range b[:full] {
		c += bits.OnesCount8(x)
	}
	if r := n % 8; r != 0 {
		c += bits.OnesCount8(b[full] & (1<<r - 1))
	}
	return uint64(c)
}

// appendBitRuns appends the runs of set bits among the first n bits of b
// (LSB first, as ext and the kernel number them), as extents of units from
// base.
func appendBitRuns(dst []Extent, b []byte, n uint64, base int64) []Extent {
	var runStart int64 = -1
	emit := func(end int64) {
		if runStart >= 0 {
			if k := len(dst); k > 0 && dst[k-1].End() == base+runStart {
				dst[k-1].Len += end - runStart
			} else {
				dst = append(dst, Extent{base + runStart, end - runStart})
			}
			runStart = -1
		}
	}
	var i uint64
	for i < n {
		// Whole words of zeros or ones go in one step.
		if i%64 == 0 && i+64 <= n {
			w := binary.LittleEndian.Uint64(b[i/8:])
			if w == 0 {
				emit(int64(i))
				i += 64
				continue
			}
			if w == ^uint64(0) {
				if runStart < 0 {
					runStart = int64(i)
				}
				i += 64
				continue
			}
			// A mixed word: walk its runs with bit counts.
			for j := uint64(0); j < 64; {
				rest := w >> j
				if rest&1 == 1 {
					k := uint64(bits.TrailingZeros64(^rest))
					if runStart < 0 {
						runStart = int64(i + j)
					}
					j += k
				} else {
					emit(int64(i + j))
					if rest == 0 {
						j = 64
					} else {
						j += uint64(bits.TrailingZeros64(rest))
					}
				}
			}
			i += 64
			continue
		}
		if b[i/8]&(1<<(i%8)) != 0 {
			if runStart < 0 {
				runStart = int64(i)
			}
		} else {
			emit(int64(i))
		}
		i++
	}
	emit(int64(n))
	return dst
}

// readBlocks reads each block of blocks (block numbers, of bs bytes) and
// hands it to fn with its index, reading a run of consecutive blocks in one
// call: with flex_bg the bitmaps of many groups lie side by side.
func readBlocks(r io.ReaderAt, bs uint64, blocks []uint64, fn func(k int, b []byte) error) error {
	perRead := max(1, maxRead/int(bs))
	var buf []byte
	for k := 0; k < len(blocks); {
		n := 1
		for n < perRead && k+n < len(blocks) && blocks[k+n] == blocks[k]+uint64(n) {
			n++
		}
		if n*int(bs) > cap(buf) {
			buf = make([]byte, n*int(bs))
		}
		buf = buf[:n*int(bs)]
		off := int64(blocks[k] * bs)
		if err := readFull(r, buf, off); err != nil {
			return fmt.Errorf("reading blocks %d to %d: %w", blocks[k], blocks[k]+uint64(n)-1, err)
		}
		for i := range n {
			if err := fn(k+i, buf[i*int(bs):(i+1)*int(bs)]); err != nil {
				return err
			}
		}
		k += n
	}
	return nil
}
