package blockmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
)

// The btrfs on-disk layout, from the kernel's include/uapi/linux/
// btrfs_tree.h and fs/btrfs/accessors.h, and btrfs-progs'
// Documentation/dev/On-disk-format.rst. Every number is little-endian.
const (
	btrfsSuperOff   = 0x10000
	btrfsSuperLen   = 4096
	btrfsMagic      = "_BHRfS_M"
	btrfsHeaderLen  = 101
	btrfsItemLen    = 25 // a leaf's item: key, data offset, data size
	btrfsKeyPtrLen  = 33 // a node's pointer: key, block, generation
	btrfsMaxLevel   = 8  // BTRFS_MAX_LEVEL
	btrfsReserved   = 1 << 20
	btrfsCsumCRC32C = 0
	btrfsCsumSHA256 = 2

	btrfsRootItemKey     = 132
	btrfsExtentItemKey   = 168
	btrfsMetadataItemKey = 169
	btrfsChunkItemKey    = 228
	btrfsExtentTreeID    = 2

	btrfsBlockGroupDUP = 1 << 5
	btrfsProfileMask   = 0x7F8 // RAID0 RAID1 DUP RAID10 RAID5 RAID6 RAID1C3 RAID1C4

	btrfsIncompatMetadataUUID = 0x400
	// Every incompat feature that keeps the chunk and extent trees as
	// mapped here: not zoned, extent-tree-v2 or the raid stripe tree.
	btrfsIncompatKnown = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x10000
	// Super flags: WRITTEN, RELOC and SEEDING describe a normal
	// filesystem; ERROR, METADUMP and the CHANGING_* ones do not.
	btrfsSuperFlagsOK = 0x1 | 0x2 | 1<<32

	// btrfsMaxNodes bounds the tree blocks read for one filesystem: 2^20
	// blocks of 16 KiB are 16 GiB of metadata.
	btrfsMaxNodes = 1 << 20
	// btrfsMaxChunks bounds the chunks held.
	btrfsMaxChunks = 1 << 18
)

// btrfsMirrors are the superblock copies' offsets.
var btrfsMirrors = []int64{btrfsSuperOff, 64 << 20, 256 << 30}

// isBtrfs reports whether head holds a btrfs superblock magic.
func isBtrfs(head []byte) bool {
	return len(head) >= btrfsSuperOff+0x48 && string(head[btrfsSuperOff+0x40:btrfsSuperOff+0x48]) == btrfsMagic
}

type btrfsStripe struct{ devid, offset uint64 }

// btrfsChunk maps a logical range to its stripes.
type btrfsChunk struct {
	logical, length, typ uint64
	stripes              []btrfsStripe
}

// btrfsFS is a single-device btrfs being mapped.
type btrfsFS struct {
	r          io.ReaderAt
	devSize    uint64 // this device's size in the filesystem
	devid      uint64
	nodeSize   uint64
	csumType   uint16
	fsid       []byte       // what tree blocks carry
	chunks     []btrfsChunk // sorted by logical
	nodes      int          // tree blocks read so far
	treeBlocks *boundedExtents
}

// mapBtrfs maps a btrfs filesystem on one device: the chunk tree says where
// each logical range lies on the device, the extent tree which logical
// ranges hold data or metadata. The first MiB, the superblock copies and
// every tree block read are used too. With a tree log to replay (fsync'd
// data not yet committed) the extent tree is not the whole truth: every
// allocated chunk is used instead.
func mapBtrfs(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	if len(head) < btrfsSuperOff+btrfsSuperLen {
		return nil, fallback("btrfs: superblock cut short: the area is %d bytes", size)
	}
	sb := head[btrfsSuperOff : btrfsSuperOff+btrfsSuperLen]
	u64 := func(o int) uint64 { return binary.LittleEndian.Uint64(sb[o:]) }
	u32 := func(o int) uint64 { return uint64(binary.LittleEndian.Uint32(sb[o:])) }
	fs := &btrfsFS{
		r: r, devid: u64(0xC9), devSize: u64(0xC9 + 8), nodeSize: u32(0x94),
		csumType: binary.LittleEndian.Uint16(sb[0xC4:]), fsid: sb[0x20:0x30],
		treeBlocks: newBoundedExtents(maxExtents / 4),
	}
	sectorSize, incompat, flags := u32(0x90), u64(0xBC), u64(0x38)
	sysLen := u32(0xA0)
	switch {
	case !fs.csumOK(sb):
		return nil, fallback("btrfs: superblock checksum does not match")
	case u64(0x30) != btrfsSuperOff:
		return nil, fallback("btrfs: superblock says it lies at byte %d", u64(0x30))
	case u64(0x88) != 1:
		return nil, fallback("btrfs: one of %d devices: a multi-device filesystem is kept whole", u64(0x88))
	case flags&^btrfsSuperFlagsOK != 0:
		return nil, fallback("btrfs: superblock flags %#x (an error, a metadata dump, or a change in progress)", flags)
	case incompat&^btrfsIncompatKnown != 0:
		return nil, fallback("btrfs: unknown or unsupported incompatible features %#x", incompat&^btrfsIncompatKnown)
	case sectorSize < 4096 || sectorSize > 65536 || sectorSize&(sectorSize-1) != 0:
		return nil, fallback("btrfs: sector size %d", sectorSize)
	case fs.nodeSize < sectorSize || fs.nodeSize > 65536 || fs.nodeSize&(fs.nodeSize-1) != 0:
		return nil, fallback("btrfs: node size %d", fs.nodeSize)
	case fs.devSize < btrfsReserved || fs.devSize > uint64(size):
		return nil, fallback("btrfs: device of %d bytes in a %d-byte area", fs.devSize, size)
	case sysLen > 2048:
		return nil, fallback("btrfs: system chunk array of %d bytes", sysLen)
	}
	if incompat&btrfsIncompatMetadataUUID != 0 {
		fs.fsid = sb[0x23B:0x24B]
	}
	if err := fs.readSysChunks(sb[0x32B : 0x32B+sysLen]); err != nil {
		return nil, err
	}
	if err := fs.readChunkTree(u64(0x58), uint64(sb[0xC7])); err != nil {
		return nil, err
	}

	used := newBoundedExtents(maxExtents)
	used.add(Extent{0, btrfsReserved})
	for _, m := range btrfsMirrors {
		if uint64(m)+btrfsSuperLen <= fs.devSize {
			used.add(Extent{m, btrfsSuperLen})
		}
	}
	method, note := MethodBtrfs, ""
	if logRoot := u64(0x60); logRoot != 0 {
		method, note = MethodBtrfsChunks, "a tree log to replay (mounted, or not cleanly unmounted): every allocated chunk kept"
		for _, c := range fs.chunks {
			for _, st := range c.stripes {
				used.add(Extent{int64(st.offset), int64(c.length)})
			}
		}
	} else {
		extRoot, extLevel, err := fs.findExtentRoot(u64(0x50), uint64(sb[0xC6]))
		if err != nil {
			return nil, err
		}
		var total uint64
		if total, err = fs.readExtents(extRoot, extLevel, used); err != nil {
			return nil, err
		}
		if want := u64(0x78); total != want {
			return nil, fallback("btrfs: the extent tree holds %d bytes, the superblock counts %d used", total, want)
		}
	}
	for _, e := range fs.treeBlocks.extents(1) {
		used.add(e)
	}
	return &fsMap{method: method, size: int64(fs.devSize), used: used.extents(1), note: note}, nil
}

// csumOK checks the checksum at the start of a superblock or tree block.
// Checksum types without a hash in Go's standard library (xxhash64,
// blake2b) are not checked: the structure checks still apply.
func (fs *btrfsFS) csumOK(b []byte) bool {
	switch fs.csumType {
	case btrfsCsumCRC32C:
		return crc32.Checksum(b[0x20:], castagnoli) == binary.LittleEndian.Uint32(b)
	case btrfsCsumSHA256:
		h := sha256.Sum256(b[0x20:])
		return bytes.Equal(h[:], b[:32])
	}
	return true
}

// parseChunk reads a chunk item at logical address logical from b, and
// returns how many bytes it took.
func (fs *btrfsFS) parseChunk(logical uint64, b []byte) (btrfsChunk, int, error) {
	if len(b) < 48 {
		return btrfsChunk{}, 0, fallback("btrfs: chunk item at logical %d cut short", logical)
	}
	c := btrfsChunk{logical: logical, length: binary.LittleEndian.Uint64(b), typ: binary.LittleEndian.Uint64(b[24:])}
	n := int(binary.LittleEndian.Uint16(b[44:]))
	if n == 0 || 48+32*n > len(b) || c.length == 0 || c.length > 1<<50 || logical > 1<<62 {
		return btrfsChunk{}, 0, fallback("btrfs: chunk at logical %d of %d bytes with %d stripes does not fit", logical, c.length, n)
	}
	if p := c.typ & btrfsProfileMask; p != 0 && p != btrfsBlockGroupDUP {
		return btrfsChunk{}, 0, fallback("btrfs: chunk at logical %d has RAID profile %#x: not mapped on a single device", logical, p)
	}
	for i := range n {
		s := b[48+32*i:]
		st := btrfsStripe{devid: binary.LittleEndian.Uint64(s), offset: binary.LittleEndian.Uint64(s[8:])}
		if st.devid != fs.devid || st.offset < btrfsReserved || st.offset > fs.devSize || c.length > fs.devSize-st.offset {
			return btrfsChunk{}, 0, fallback("btrfs: chunk at logical %d: stripe on device %d at byte %d is not on this %d-byte device %d",
				logical, st.devid, st.offset, fs.devSize, fs.devid)
		}
		c.stripes = append(c.stripes, st)
	}
	return c, 48 + 32*n, nil
}

// readSysChunks reads the superblock's system chunk array: the chunks that
// hold the chunk tree.
func (fs *btrfsFS) readSysChunks(b []byte) error {
	for len(b) > 0 {
		if len(b) < 17 || b[8] != btrfsChunkItemKey {
			return fallback("btrfs: system chunk array holds something other than a chunk")
		}
		c, n, err := fs.parseChunk(binary.LittleEndian.Uint64(b[9:]), b[17:])
		if err != nil {
			return err
		}
		if err := fs.addChunk(c); err != nil {
			return err
		}
		b = b[17+n:]
	}
	return nil
}

// addChunk inserts c in logical order; chunks must not overlap.
func (fs *btrfsFS) addChunk(c btrfsChunk) error {
	i := sort.Search(len(fs.chunks), func(i int) bool { return fs.chunks[i].logical >= c.logical })
	if i < len(fs.chunks) && fs.chunks[i].logical == c.logical {
		if fs.chunks[i].length != c.length {
			return fallback("btrfs: two chunks at logical %d", c.logical)
		}
		fs.chunks[i] = c
		return nil
	}
	if (i > 0 && fs.chunks[i-1].logical+fs.chunks[i-1].length > c.logical) ||
		(i < len(fs.chunks) && c.logical+c.length > fs.chunks[i].logical) {
		return fallback("btrfs: chunks overlap at logical %d", c.logical)
	}
	if len(fs.chunks) >= btrfsMaxChunks {
		return fallback("btrfs: more than %d chunks", btrfsMaxChunks)
	}
	fs.chunks = append(fs.chunks, btrfsChunk{})
	copy(fs.chunks[i+1:], fs.chunks[i:])
	fs.chunks[i] = c
	return nil
}

// chunkOf returns the chunk holding logical range [l, l+n).
func (fs *btrfsFS) chunkOf(l, n uint64) (*btrfsChunk, bool) {
	i := sort.Search(len(fs.chunks), func(i int) bool { return fs.chunks[i].logical+fs.chunks[i].length > l })
	if i == len(fs.chunks) || fs.chunks[i].logical > l || l+n > fs.chunks[i].logical+fs.chunks[i].length || l+n < l {
		return nil, false
	}
	return &fs.chunks[i], true
}

// readChunkTree reads every chunk item of the chunk tree.
func (fs *btrfsFS) readChunkTree(root, level uint64) error {
	return fs.walk("chunk", root, level, func(typ uint8, objectid, offset uint64, data []byte) error {
		if typ != btrfsChunkItemKey {
			return nil
		}
		c, _, err := fs.parseChunk(offset, data)
		if err != nil {
			return err
		}
		return fs.addChunk(c)
	})
}

// findExtentRoot reads the root tree for the extent tree's root item.
func (fs *btrfsFS) findExtentRoot(root, level uint64) (uint64, uint64, error) {
	var bytenr, lvl uint64
	found := false
	err := fs.walk("root", root, level, func(typ uint8, objectid, offset uint64, data []byte) error {
		if typ != btrfsRootItemKey || objectid != btrfsExtentTreeID {
			return nil
		}
		if len(data) < 239 || found {
			return fallback("btrfs: the extent tree's root item is cut short or repeated")
		}
		bytenr, lvl, found = binary.LittleEndian.Uint64(data[176:]), uint64(data[238]), true
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if !found {
		return 0, 0, fallback("btrfs: the root tree has no extent tree")
	}
	return bytenr, lvl, nil
}

// readExtents walks the extent tree, adding the device bytes of every
// extent (data, and tree blocks) to used. It returns the bytes the extents
// span, logically.
func (fs *btrfsFS) readExtents(root, level uint64, used *boundedExtents) (uint64, error) {
	var total uint64
	err := fs.walk("extent", root, level, func(typ uint8, objectid, offset uint64, data []byte) error {
		var n uint64
		switch typ {
		case btrfsExtentItemKey:
			n = offset
		case btrfsMetadataItemKey:
			n = fs.nodeSize
		default:
			return nil
		}
		c, ok := fs.chunkOf(objectid, n)
		if n == 0 || !ok {
			return fallback("btrfs: extent at logical %d of %d bytes is in no chunk", objectid, n)
		}
		for _, st := range c.stripes {
			used.add(Extent{int64(st.offset + objectid - c.logical), int64(n)})
		}
		total += n
		return nil
	})
	return total, err
}

// walk visits every item of the tree at root in key order. Each block is
// checked (checksum, place, filesystem, level, item count); keys must rise
// strictly from item to item, so a pointer that loops back to a block
// already seen stops the walk.
func (fs *btrfsFS) walk(name string, root, level uint64, fn func(typ uint8, objectid, offset uint64, data []byte) error) error {
	if level >= btrfsMaxLevel {
		return fallback("btrfs: the %s tree has level %d", name, level)
	}
	type frame struct{ at, level uint64 }
	stack := []frame{{root, level}}
	buf := make([]byte, fs.nodeSize)
	var last [17]byte // the last key seen, big-endian so that bytes.Compare orders keys
	first := true
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		b, err := fs.readNode(name, f.at, f.level, buf)
		if err != nil {
			return err
		}
		n := int(binary.LittleEndian.Uint32(b[0x60:]))
		if f.level > 0 {
			if n == 0 || btrfsHeaderLen+n*btrfsKeyPtrLen > len(b) {
				return fallback("btrfs: %s tree node at logical %d holds %d pointers", name, f.at, n)
			}
			for i := n - 1; i >= 0; i-- {
				p := b[btrfsHeaderLen+i*btrfsKeyPtrLen:]
				stack = append(stack, frame{binary.LittleEndian.Uint64(p[17:]), f.level - 1})
			}
			continue
		}
		if btrfsHeaderLen+n*btrfsItemLen > len(b) {
			return fallback("btrfs: %s tree leaf at logical %d holds %d items", name, f.at, n)
		}
		for i := range n {
			it := b[btrfsHeaderLen+i*btrfsItemLen:]
			objectid, typ, offset := binary.LittleEndian.Uint64(it), it[8], binary.LittleEndian.Uint64(it[9:])
			var key [17]byte
			binary.BigEndian.PutUint64(key[:], objectid)
			key[8] = typ
			binary.BigEndian.PutUint64(key[9:], offset)
			if !first && bytes.Compare(key[:], last[:]) <= 0 {
				return fallback("btrfs: %s tree keys out of order in the leaf at logical %d", name, f.at)
			}
			last, first = key, false
			doff, dlen := uint64(binary.LittleEndian.Uint32(it[17:])), uint64(binary.LittleEndian.Uint32(it[21:]))
			if btrfsHeaderLen+doff+dlen > uint64(len(b)) {
				return fallback("btrfs: %s tree item %d of the leaf at logical %d lies outside it", name, i, f.at)
			}
			if err := fn(typ, objectid, offset, b[btrfsHeaderLen+doff:btrfsHeaderLen+doff+dlen]); err != nil {
				return err
			}
		}
	}
	return nil
}

// readNode reads and checks the tree block at logical address at.
func (fs *btrfsFS) readNode(name string, at, level uint64, buf []byte) ([]byte, error) {
	if fs.nodes++; fs.nodes > btrfsMaxNodes {
		return nil, fallback("btrfs: the trees hold more than %d blocks", btrfsMaxNodes)
	}
	c, ok := fs.chunkOf(at, fs.nodeSize)
	if !ok {
		return nil, fallback("btrfs: %s tree block at logical %d is in no chunk", name, at)
	}
	phys := c.stripes[0].offset + at - c.logical
	if err := readFull(fs.r, buf, int64(phys)); err != nil {
		return nil, fmt.Errorf("btrfs: reading %s tree block at logical %d: %w", name, at, err)
	}
	switch {
	case !fs.csumOK(buf):
		return nil, fallback("btrfs: %s tree block at logical %d fails its checksum", name, at)
	case binary.LittleEndian.Uint64(buf[0x30:]) != at || !bytes.Equal(buf[0x20:0x30], fs.fsid):
		return nil, fallback("btrfs: %s tree block at logical %d is not where its header says, or of another filesystem", name, at)
	case uint64(buf[0x64]) != level:
		return nil, fallback("btrfs: %s tree block at logical %d is at level %d, want %d", name, at, buf[0x64], level)
	}
	for _, st := range c.stripes {
		fs.treeBlocks.add(Extent{int64(st.offset + at - c.logical), int64(fs.nodeSize)})
	}
	return buf, nil
}
