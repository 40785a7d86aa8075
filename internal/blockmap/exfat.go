package blockmap

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The exFAT on-disk layout, from Microsoft's exFAT file system
// specification and Linux's fs/exfat.
const (
	exfatBootSectors   = 12 // the main boot region; the backup follows it
	exfatDirty         = 0x2
	exfatEntryBitmap   = 0x81
	exfatMaxRootDirLen = 1 << 20 // how much of the root directory is searched for the bitmap's entry
)

// isExFAT reports whether head starts with an exFAT boot sector's OEM name.
func isExFAT(head []byte) bool {
	return len(head) >= 512 && string(head[3:11]) == "EXFAT   "
}

// exfatVol is what mapping needs from the boot sector, in sectors and
// clusters.
type exfatVol struct {
	bps, cs          int64 // bytes per sector and per cluster
	sectors          int64
	fatOff, fatLen   int64
	fats             int64
	heapOff          int64
	clusters         int64
	rootCluster      int64
	dirty            bool
	fatEndBytes      int64
	bootRegionsBytes int64
}

// parseExFATBoot reads and checks the boot sector, as the specification's
// section 3.1 and Linux's exfat_read_boot_sector do.
func parseExFATBoot(b []byte, size int64) (*exfatVol, error) {
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	le64 := func(o int) int64 { return int64(binary.LittleEndian.Uint64(b[o:])) }
	if b[510] != 0x55 || b[511] != 0xAA {
		return nil, fallback("exFAT: boot sector without its 0x55AA signature")
	}
	for _, x := range b[0x0B:0x40] {
		if x != 0 {
			return nil, fallback("exFAT: the boot sector's must-be-zero bytes are not zero (a FAT BPB?)")
		}
	}
	bpsShift, spcShift := int64(b[0x6C]), int64(b[0x6D])
	if bpsShift < 9 || bpsShift > 12 || spcShift > 25-bpsShift {
		return nil, fallback("exFAT: sector size 2^%d, cluster of 2^%d sectors", bpsShift, spcShift)
	}
	v := &exfatVol{
		bps: 1 << bpsShift, sectors: le64(0x48),
		fatOff: le32(0x50), fatLen: le32(0x54), heapOff: le32(0x58),
		clusters: le32(0x5C), rootCluster: le32(0x60), fats: int64(b[0x6E]),
	}
	v.cs = v.bps << spcShift
	flags := binary.LittleEndian.Uint16(b[0x6A:])
	v.dirty = flags&exfatDirty != 0
	switch {
	case v.sectors <= 0 || v.sectors > size/v.bps:
		return nil, fallback("exFAT: volume of %d sectors of %d bytes does not fit its %d-byte area", v.sectors, v.bps, size)
	case v.fats != 1 && v.fats != 2:
		return nil, fallback("exFAT: %d FATs, want 1 or 2", v.fats)
	case v.fatOff < 2*exfatBootSectors || v.fatLen == 0:
		return nil, fallback("exFAT: FAT at sector %d of %d sectors", v.fatOff, v.fatLen)
	case v.fatOff+v.fats*v.fatLen > v.heapOff:
		return nil, fallback("exFAT: FATs end at sector %d, after the cluster heap's start %d", v.fatOff+v.fats*v.fatLen, v.heapOff)
	case v.clusters == 0 || v.clusters > 0xFFFFFFF5:
		return nil, fallback("exFAT: %d clusters", v.clusters)
	case v.heapOff+v.clusters*(v.cs/v.bps) > v.sectors:
		return nil, fallback("exFAT: cluster heap of %d clusters at sector %d runs past the volume's %d sectors", v.clusters, v.heapOff, v.sectors)
	case v.fatLen*v.bps < (v.clusters+2)*4:
		return nil, fallback("exFAT: a FAT of %d sectors cannot hold %d clusters", v.fatLen, v.clusters)
	case v.rootCluster < 2 || v.rootCluster >= v.clusters+2:
		return nil, fallback("exFAT: root directory cluster %d outside 2 to %d", v.rootCluster, v.clusters+1)
	}
	v.bootRegionsBytes = 2 * exfatBootSectors * v.bps
	v.fatEndBytes = (v.fatOff + v.fats*v.fatLen) * v.bps
	return v, nil
}

func (v *exfatVol) clusterOff(c int64) int64 { return v.heapOff*v.bps + (c-2)*v.cs }

// mapExFAT maps an exFAT volume by its allocation bitmap: the main and
// backup boot regions and the FATs are used, and each cluster of the heap
// whose bit is set. The bitmap is the authority (files flagged NoFatChain
// have no FAT entries), found through its entry in the root directory. A
// dirty volume falls back: Linux and Windows set the flag while mounted.
func mapExFAT(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	v, err := parseExFATBoot(head, size)
	if err != nil {
		return nil, err
	}
	if v.dirty {
		return nil, fallback("exFAT: marked dirty: mounted, or not cleanly unmounted")
	}
	if v.fats == 2 {
		// TexFAT keeps a second FAT and bitmap, and the flag says
		// which is in force: not worth trusting without a writer to test.
		return nil, fallback("exFAT: two FATs (TexFAT) are not supported")
	}
	bmCluster, bmLen, rootClusters, err := v.findBitmap(r)
	if err != nil {
		return nil, err
	}
	need := (v.clusters + 7) / 8
	if bmLen < need || bmLen > v.clusters*v.cs {
		return nil, fallback("exFAT: allocation bitmap of %d bytes, want %d for %d clusters", bmLen, need, v.clusters)
	}
	// Linux reads the bitmap as contiguous clusters (exfat_load_bitmap),
	// as mkfs.exfat and Windows write it.
	bmClusters := (bmLen + v.cs - 1) / v.cs
	if bmCluster < 2 || bmCluster+bmClusters > v.clusters+2 {
		return nil, fallback("exFAT: allocation bitmap at cluster %d (%d clusters) is outside the heap's %d", bmCluster, bmClusters, v.clusters)
	}
	used, _, err := streamBitmap(r, []Extent{{v.clusterOff(bmCluster), need}}, uint64(v.clusters), false, nil)
	if err != nil {
		return nil, fmt.Errorf("exFAT: %w", err)
	}
	// Clusters from 0, not 2: bit i is cluster i+2.
	if c := firstFree(used, Extent{bmCluster - 2, bmClusters}); c >= 0 {
		return nil, fallback("exFAT: the allocation bitmap marks its own cluster %d free", c+2)
	}
	for _, c := range rootClusters {
		if firstFree(used, Extent{c - 2, 1}) >= 0 {
			return nil, fallback("exFAT: the allocation bitmap marks the root directory's cluster %d free", c)
		}
	}
	used = scaleExtents(used, v.cs, v.clusterOff(2))
	used = append(used, Extent{0, v.bootRegionsBytes}, Extent{v.fatOff * v.bps, v.fatEndBytes - v.fatOff*v.bps})
	return &fsMap{method: MethodExFAT, size: v.sectors * v.bps, used: used}, nil
}

// findBitmap follows the root directory's cluster chain through the FAT
// and returns the first cluster and length of the allocation bitmap its
// entry names, and the root directory's clusters it read.
func (v *exfatVol) findBitmap(r io.ReaderAt) (cluster, length int64, root []int64, err error) {
	// Clusters may be 32 MiB: read them a piece at a time.
	buf := make([]byte, min(v.cs, 64<<10))
	read := int64(0)
	for c := v.rootCluster; ; {
		if c < 2 || c >= v.clusters+2 {
			return 0, 0, nil, fallback("exFAT: root directory chain reaches cluster %#x", c)
		}
		root = append(root, c)
		for o := int64(0); o < v.cs; o += int64(len(buf)) {
			if read += int64(len(buf)); read > exfatMaxRootDirLen {
				return 0, 0, nil, fallback("exFAT: no allocation bitmap entry in the first %d bytes of the root directory", exfatMaxRootDirLen)
			}
			if err := readFull(r, buf, v.clusterOff(c)+o); err != nil {
				return 0, 0, nil, fmt.Errorf("exFAT: reading the root directory's cluster %d: %w", c, err)
			}
			for e := 0; e+32 <= len(buf); e += 32 {
				d := buf[e : e+32]
				switch d[0] {
				case 0x00: // end of directory
					return 0, 0, nil, fallback("exFAT: the root directory has no allocation bitmap entry")
				case exfatEntryBitmap:
					if d[1]&1 != 0 {
						continue // the second FAT's bitmap
					}
					return int64(binary.LittleEndian.Uint32(d[20:])), int64(binary.LittleEndian.Uint64(d[24:])), root, nil
				}
			}
		}
		next := make([]byte, 4)
		if err := readFull(r, next, v.fatOff*v.bps+c*4); err != nil {
			return 0, 0, nil, fmt.Errorf("exFAT: reading the FAT entry of cluster %d: %w", c, err)
		}
		c = int64(binary.LittleEndian.Uint32(next))
		if c == 0xFFFFFFFF {
			return 0, 0, nil, fallback("exFAT: the root directory ends without an allocation bitmap entry")
		}
	}
}
