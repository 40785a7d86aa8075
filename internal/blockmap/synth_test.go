package blockmap

import (
	"encoding/binary"
	"hash/crc32"
	"unicode/utf16"
)

// Tiny hand-made filesystems and disks: the tests that need no root use
// them, and they seed the fuzzer (small inputs fuzz faster). Their layouts
// follow what mke2fs, mkfs.fat and mkswap write; the tests with real tools
// check the same code against the real thing.

const tinyExtBlocks = 8

// tinyExt2 makes an 8 KiB ext2 with 1 KiB blocks and one group: boot block
// 0, superblock 1, descriptors 2, block bitmap 3, inode bitmap 4, inode
// table 5, and the data blocks 6 and 7 marked used and filled when in used.
func tinyExt2(used ...int) []byte {
	b := make([]byte, tinyExtBlocks*1024)
	sb := b[1024:2048]
	le32 := binary.LittleEndian.PutUint32
	le16 := binary.LittleEndian.PutUint16
	le32(sb[0x0:], 8)              // inodes
	le32(sb[0x4:], tinyExtBlocks)  // blocks
	le32(sb[0x14:], 1)             // first data block
	le32(sb[0x18:], 0)             // 1 KiB blocks
	le32(sb[0x20:], 8192)          // blocks per group
	le32(sb[0x24:], 8192)          // clusters per group
	le32(sb[0x28:], 8)             // inodes per group
	le16(sb[0x38:], extMagic)      //
	le16(sb[0x3A:], extStateValid) //
	le32(sb[0x4C:], 1)             // dynamic revision
	le32(sb[0x54:], 11)            // first inode
	le16(sb[0x58:], 128)           // inode size
	le32(sb[0x64:], extRoCompatSparseSuper)

	bitmap := b[3*1024 : 4*1024]
	mark := func(blk int) { bitmap[(blk-1)/8] |= 1 << ((blk - 1) % 8) }
	for blk := 1; blk <= 5; blk++ {
		mark(blk)
	}
	for _, blk := range used {
		mark(blk)
		for i := range 1024 {
			b[blk*1024+i] = byte(blk + i)
		}
	}
	// The bits past the group's last block are set, as the kernel does.
	for bit := tinyExtBlocks - 1; bit < 8*1024; bit++ {
		bitmap[bit/8] |= 1 << (bit % 8)
	}
	d := b[2*1024:]
	le32(d[0x0:], 3)
	le32(d[0x4:], 4)
	le32(d[0x8:], 5)
	le16(d[0xC:], uint16(tinyExtBlocks-1-5-len(used)))
	return b
}

// tinyFAT makes a FAT12 (bits 12: a 16-entry root directory) or a FAT32
// (bits 32: root directory in cluster 2) of 16 sectors of 512 bytes and
// clusters of one sector, whose clusters in chain are linked one after the
// other and filled.
func tinyFAT(bits int, chain ...int) []byte {
	sectors, fatSz, rootEnts := 16, 1, 16
	if bits == 32 {
		rootEnts = 0
	}
	b := make([]byte, sectors*512)
	le32 := binary.LittleEndian.PutUint32
	le16 := binary.LittleEndian.PutUint16
	copy(b, "\xEB\x3C\x90mkfs.fat")
	le16(b[11:], 512)
	b[13] = 1 // sectors per cluster
	le16(b[14:], 1)
	b[16] = 2
	le16(b[17:], uint16(rootEnts))
	le16(b[19:], uint16(sectors))
	b[21] = 0xF8
	if bits == 32 {
		le32(b[36:], uint32(fatSz))
		le32(b[44:], 2) // root directory cluster
	} else {
		le16(b[22:], uint16(fatSz))
	}
	b[510], b[511] = 0x55, 0xAA

	dataStart := 1 + 2*fatSz + (rootEnts*32+511)/512
	var fat []uint32
	set := func(c int, v uint32) {
		for len(fat) <= c {
			fat = append(fat, 0)
		}
		fat[c] = v
	}
	set(0, 0x0FFFFFF8)
	set(1, 0x0FFFFFFF)
	if bits == 32 {
		set(2, 0x0FFFFFFF)
	}
	for i, c := range chain {
		next := uint32(0x0FFFFFFF)
		if i+1 < len(chain) {
			next = uint32(chain[i+1])
		}
		set(c, next)
		for k := range 512 {
			b[(dataStart+c-2)*512+k] = byte(c*3 + k)
		}
	}
	for copyN := range 2 {
		f := b[(1+copyN*fatSz)*512:]
		for c, v := range fat {
			if bits == 32 {
				le32(f[c*4:], v)
				continue
			}
			v &= 0xFFF
			o := c * 3 / 2
			if c%2 == 0 {
				f[o] = byte(v)
				f[o+1] = f[o+1]&0xF0 | byte(v>>8)
			} else {
				f[o] = f[o]&0x0F | byte(v<<4)
				f[o+1] = byte(v >> 4)
			}
		}
	}
	return b
}

// tinySwap makes a swap area of pages pages of 4 KiB.
func tinySwap(pages int) []byte {
	b := make([]byte, pages*4096)
	binary.LittleEndian.PutUint32(b[1024:], 1)
	binary.LittleEndian.PutUint32(b[1028:], uint32(pages-1))
	copy(b[4086:], "SWAPSPACE2")
	for i := 4096; i < len(b); i++ {
		b[i] = byte(i) // swapped-out pages: worthless
	}
	return b
}

// gptPart is a partition for tinyGPT, in 512-byte sectors.
type gptPart struct {
	first, last int64
	typ         [16]byte
	content     []byte
}

var linuxFS = [16]byte{0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4}

// tinyGPT makes a disk of sectors 512-byte sectors with a GPT of four
// entries (one sector at LBA 2, and one before the backup header) and the
// partitions' contents in place.
func tinyGPT(sectors int64, parts ...gptPart) []byte {
	b := make([]byte, sectors*512)
	le64 := binary.LittleEndian.PutUint64
	le32 := binary.LittleEndian.PutUint32
	// Protective MBR.
	b[446+4] = 0xEE
	le32(b[446+8:], 1)
	le32(b[446+12:], uint32(sectors-1))
	b[510], b[511] = 0x55, 0xAA

	ents := make([]byte, 512)
	for i, p := range parts {
		e := ents[i*128:]
		copy(e, p.typ[:])
		e[16] = byte(i + 1) // unique GUID
		le64(e[32:], uint64(p.first))
		le64(e[40:], uint64(p.last))
		for j, c := range utf16.Encode([]rune("part")) {
			binary.LittleEndian.PutUint16(e[56+2*j:], c)
		}
		if p.content != nil {
			copy(b[p.first*512:(p.last+1)*512], p.content)
		}
	}
	header := func(my, alt, entLBA int64) []byte {
		h := make([]byte, 512)
		copy(h, "EFI PART")
		le32(h[8:], 0x00010000)
		le32(h[12:], 92)
		le64(h[24:], uint64(my))
		le64(h[32:], uint64(alt))
		le64(h[40:], 3)
		le64(h[48:], uint64(sectors-3))
		h[56] = 0x42 // disk GUID
		le64(h[72:], uint64(entLBA))
		le32(h[80:], 4)
		le32(h[84:], 128)
		le32(h[88:], crc32.ChecksumIEEE(ents))
		le32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	copy(b[512:], header(1, sectors-1, 2))
	copy(b[1024:], ents)
	copy(b[(sectors-2)*512:], ents)
	copy(b[(sectors-1)*512:], header(sectors-1, 1, sectors-2))
	return b
}

// mbrPart is a primary entry for tinyMBR, in 512-byte sectors.
type mbrPart struct {
	typ         byte
	start, size uint32
	content     []byte
}

// tinyMBR makes a disk of sectors 512-byte sectors with an MBR.
func tinyMBR(sectors int64, parts ...mbrPart) []byte {
	b := make([]byte, sectors*512)
	for i, p := range parts {
		e := b[446+16*i:]
		e[4] = p.typ
		binary.LittleEndian.PutUint32(e[8:], p.start)
		binary.LittleEndian.PutUint32(e[12:], p.size)
		if p.content != nil {
			copy(b[int64(p.start)*512:], p.content)
		}
	}
	b[510], b[511] = 0x55, 0xAA
	return b
}
