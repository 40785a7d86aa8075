package blockmap

import (
	"encoding/binary"
	"fmt"
	"io"
)

// isFAT reports whether head starts like a FAT boot sector: a jump
// instruction and a valid media byte. NTFS and exFAT start the same way and
// are told apart by their OEM names.
func isFAT(head []byte) bool {
	if len(head) < 512 {
		return false
	}
	jump := head[0] == 0xEB && head[2] == 0x90 || head[0] == 0xE9
	media := head[21] == 0xF0 || head[21] >= 0xF8
	oem := string(head[3:11])
	return jump && media && oem != "NTFS    " && oem != "EXFAT   "
}

// fatGeom is a FAT volume's layout, in sectors and clusters.
type fatGeom struct {
	bits        int // 12, 16 or 32
	bps         int64
	clusterSize int64
	reserved    int64 // sectors
	fats        int64
	fatSectors  int64
	dataStart   int64 // first sector of cluster 2
	clusters    int64
	totSectors  int64
	rootCluster uint32 // FAT32
	media       byte
	dirty       bool
}

// parseFAT reads and checks the BPB, following Microsoft's FAT
// specification ("fatgen103") and Linux's fs/fat where they differ.
func parseFAT(b []byte, size int64) (*fatGeom, error) {
	u16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	u32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	g := &fatGeom{bps: u16(11), reserved: u16(14), fats: int64(b[16]), media: b[21]}
	spc := int64(b[13])
	rootEnts := u16(17)
	g.totSectors = u16(19)
	if g.totSectors == 0 {
		g.totSectors = u32(32)
	}
	fatSz16 := u16(22)
	g.fatSectors = fatSz16
	if g.fatSectors == 0 {
		g.fatSectors = u32(36)
	}
	switch {
	case g.bps < 512 || g.bps > 4096 || g.bps&(g.bps-1) != 0:
		return nil, fallback("FAT: %d bytes per sector, want a power of two from 512 to 4096", g.bps)
	case spc == 0 || spc&(spc-1) != 0:
		return nil, fallback("FAT: %d sectors per cluster, want a power of two", spc)
	case g.reserved == 0:
		return nil, fallback("FAT: no reserved sectors")
	case g.fats == 0 || g.fats > 4:
		return nil, fallback("FAT: %d FATs, want 1 to 4", g.fats)
	case g.totSectors == 0 || g.fatSectors == 0:
		return nil, fallback("FAT: %d sectors, %d sectors per FAT", g.totSectors, g.fatSectors)
	case g.totSectors > size/g.bps:
		return nil, fallback("FAT: volume of %d sectors of %d bytes is larger than its %d-byte area", g.totSectors, g.bps, size)
	}
	g.clusterSize = spc * g.bps
	rootSectors := (rootEnts*32 + g.bps - 1) / g.bps
	g.dataStart = g.reserved + g.fats*g.fatSectors + rootSectors
	if g.dataStart >= g.totSectors {
		return nil, fallback("FAT: data area starts at sector %d of %d", g.dataStart, g.totSectors)
	}
	g.clusters = (g.totSectors - g.dataStart) / spc
	// The BPB's shape says FAT32 (no FAT12/16 FAT size), as Linux reads
	// it; mkfs.fat makes small FAT32 volumes that the cluster count alone
	// would call FAT16. Between FAT12 and FAT16 the count decides.
	switch {
	case fatSz16 == 0:
		g.bits = 32
	case g.clusters < 4085:
		g.bits = 12
	case g.clusters < 65525:
		g.bits = 16
	default:
		return nil, fallback("FAT: %d clusters are too many for FAT16", g.clusters)
	}
	if g.bits == 32 {
		g.rootCluster = uint32(u32(44))
		switch {
		case rootEnts != 0:
			return nil, fallback("FAT32: the BPB has a FAT12/16 root directory of %d entries", rootEnts)
		case g.clusters > 0x0FFFFFF5:
			return nil, fallback("FAT32: %d clusters are too many", g.clusters)
		case u16(42) != 0:
			return nil, fallback("FAT32: version %#x", u16(42))
		case g.rootCluster < 2 || int64(g.rootCluster) >= g.clusters+2:
			return nil, fallback("FAT32: root directory cluster %d outside 2 to %d", g.rootCluster, g.clusters+1)
		}
		g.dirty = b[65]&1 != 0
	} else {
		if rootEnts == 0 {
			return nil, fallback("FAT%d: the BPB has no root directory", g.bits)
		}
		g.dirty = b[37]&1 != 0
	}
	if need := ((g.clusters+2)*int64(g.bits) + 7) / 8; g.fatSectors*g.bps < need {
		return nil, fallback("FAT: a FAT of %d sectors cannot hold %d clusters", g.fatSectors, g.clusters)
	}
	return g, nil
}

// mapFAT maps a FAT12/16/32 volume: the reserved sectors, the FATs and the
// root directory are used, and each cluster whose entry is not zero in any
// copy of the FAT (copies that disagree are read as their union).
func mapFAT(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	g, err := parseFAT(head, size)
	if err != nil {
		return nil, err
	}
	used := []Extent{{0, g.dataStart * g.bps}}
	fatBytes := ((g.clusters+2)*int64(g.bits) + 7) / 8
	// A FAT12 entry straddles bytes: read it whole (at most 6 KiB). FAT16
	// and FAT32 entries are read a piece at a time.
	piece := fatBytes
	if g.bits != 12 {
		piece = min(fatBytes, maxRead)
	}
	buf := make([]byte, piece)
	acc := make([]byte, piece)
	dataOff := g.dataStart * g.bps
	var first uint32 = 1<<32 - 1 // entry 0 of the first FAT: the media byte
	for off := int64(0); off < fatBytes; off += piece {
		n := min(piece, fatBytes-off)
		clear(acc[:n])
		for i := range g.fats {
			at := (g.reserved+i*g.fatSectors)*g.bps + off
			if err := readFull(r, buf[:n], at); err != nil {
				return nil, fmt.Errorf("FAT: reading FAT %d at byte %d: %w", i+1, at, err)
			}
			if off == 0 && i == 0 {
				first = fatEntry(buf, g.bits, 0)
			}
			for j := range n {
				acc[j] |= buf[j]
			}
		}
		// Entries fully inside this piece: its first and past-the-end
		// cluster numbers.
		lo := off * 8 / int64(g.bits)
		hi := min((off+n)*8/int64(g.bits), g.clusters+2)
		for c := max(lo, 2); c < hi; c++ {
			if fatEntry(acc, g.bits, c-lo) == 0 {
				continue
			}
			e := Extent{dataOff + (c-2)*g.clusterSize, g.clusterSize}
			if k := len(used); k > 0 && used[k-1].End() == e.Off {
				used[k-1].Len += e.Len
			} else {
				used = append(used, e)
			}
		}
	}
	// Entry 0 holds the media byte in its low 8 bits: FATs that do not are
	// not where the BPB says.
	if byte(first) != g.media {
		return nil, fallback("FAT%d: the first FAT entry %#x does not hold the media byte %#x", g.bits, first, g.media)
	}
	if g.bits == 32 {
		root := int64(g.rootCluster)
		if !extentsCover(used, dataOff+(root-2)*g.clusterSize) {
			return nil, fallback("FAT32: the root directory's cluster %d is free in the FAT", root)
		}
	}
	fm := &fsMap{method: fmt.Sprintf("FAT%d", g.bits), size: g.totSectors * g.bps, used: used}
	if g.dirty {
		fm.note = "marked dirty: mounted, or not cleanly unmounted"
	}
	return fm, nil
}

// fatEntry is entry i of a FAT of the given width held in b, with FAT32's
// reserved top bits cleared.
func fatEntry(b []byte, bits int, i int64) uint32 {
	switch bits {
	case 12:
		v := uint32(binary.LittleEndian.Uint16(b[i*3/2:]))
		if i%2 == 1 {
			return v >> 4
		}
		return v & 0xFFF
	case 16:
		return uint32(binary.LittleEndian.Uint16(b[i*2:]))
	}
	return binary.LittleEndian.Uint32(b[i*4:]) & 0x0FFFFFFF
}

// extentsCover reports whether sorted extents hold byte off.
func extentsCover(ext []Extent, off int64) bool {
	for _, e := range ext {
		if e.Off <= off && off < e.End() {
			return true
		}
	}
	return false
}
