package blockmap

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The NTFS on-disk layout, from ntfs-3g's include/ntfs-3g/layout.h and
// libntfs-3g (bootsect.c, mft.c, runlist.c, logfile.c).
const (
	ntfsRecMFT     = 0 // $MFT
	ntfsRecLogFile = 2 // $LogFile
	ntfsRecVolume  = 3 // $Volume
	ntfsRecBitmap  = 6 // $Bitmap

	ntfsAttrList       = 0x20
	ntfsAttrVolumeInfo = 0x70
	ntfsAttrData       = 0x80
	ntfsAttrEnd        = 0xFFFFFFFF

	ntfsVolumeDirty = 0x0001
	// ntfsFixupBlock is the stride of the update sequence array: one
	// fixup per 512 bytes whatever the sector size.
	ntfsFixupBlock = 512
	// ntfsMaxCluster is Windows' largest cluster size.
	ntfsMaxCluster = 2 << 20
)

// isNTFS reports whether head starts with an NTFS boot sector's OEM name.
func isNTFS(head []byte) bool {
	return len(head) >= 512 && string(head[3:11]) == "NTFS    "
}

// ntfsVol is what mapping needs from the boot sector.
type ntfsVol struct {
	bps      int64 // bytes per sector
	cs       int64 // bytes per cluster
	sectors  int64 // the volume's sectors, the backup boot sector not counted
	clusters int64
	mftLCN   int64
	mirrLCN  int64
	recSize  int64 // bytes per MFT record
}

// parseNTFSBoot reads and checks the boot sector, as ntfs-3g's
// ntfs_boot_sector_is_ntfs and ntfs_boot_sector_parse do.
func parseNTFSBoot(b []byte, size int64) (*ntfsVol, error) {
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le64 := func(o int) int64 { return int64(binary.LittleEndian.Uint64(b[o:])) }
	v := &ntfsVol{bps: le16(0x0B), sectors: le64(0x28), mftLCN: le64(0x30), mirrLCN: le64(0x38)}
	if b[510] != 0x55 || b[511] != 0xAA {
		return nil, fallback("NTFS: boot sector without its 0x55AA signature")
	}
	if v.bps < 256 || v.bps > 4096 || v.bps&(v.bps-1) != 0 {
		return nil, fallback("NTFS: %d bytes per sector, want a power of two from 256 to 4096", v.bps)
	}
	spc := int64(b[0x0D])
	switch {
	case spc >= 240 && spc <= 253: // 2^(256-spc) sectors: clusters of 128 KiB and more
		v.cs = v.bps << (256 - spc)
	case spc != 0 && spc <= 128 && spc&(spc-1) == 0:
		v.cs = v.bps * spc
	default:
		return nil, fallback("NTFS: sectors per cluster byte %#x", spc)
	}
	if v.cs > ntfsMaxCluster {
		return nil, fallback("NTFS: clusters of %d bytes, more than Windows' %d", v.cs, ntfsMaxCluster)
	}
	if v.sectors <= 0 || v.sectors > size/v.bps {
		return nil, fallback("NTFS: volume of %d sectors of %d bytes does not fit its %d-byte area", v.sectors, v.bps, size)
	}
	v.clusters = v.sectors / (v.cs / v.bps)
	switch c := int8(b[0x40]); {
	case c > 0:
		v.recSize = int64(c) * v.cs
	case c < 0 && c >= -31:
		v.recSize = 1 << -c
	default:
		return nil, fallback("NTFS: clusters per MFT record byte %#x", b[0x40])
	}
	switch {
	case v.recSize < 512 || v.recSize > 64<<10 || v.recSize&(v.recSize-1) != 0:
		return nil, fallback("NTFS: MFT records of %d bytes, want a power of two from 512 to 65536", v.recSize)
	case v.mftLCN <= 0 || v.mftLCN >= v.clusters:
		return nil, fallback("NTFS: $MFT at cluster %d, outside the volume's %d clusters", v.mftLCN, v.clusters)
	case v.mirrLCN <= 0 || v.mirrLCN >= v.clusters:
		return nil, fallback("NTFS: $MFTMirr at cluster %d, outside the volume's %d clusters", v.mirrLCN, v.clusters)
	}
	return v, nil
}

// ntfsRun is a run of clusters of a non-resident attribute: n clusters of
// the attribute from vcn lie at lcn (-1: a sparse run, not on disk).
type ntfsRun struct{ vcn, lcn, n int64 }

// ntfsAttr is an attribute of an MFT record.
type ntfsAttr struct {
	typ      uint32
	named    bool
	flags    uint16
	resident bool
	value    []byte // resident
	startVCN int64  // non-resident
	dataSize int64
	runs     []ntfsRun
}

// readNTFSRecord reads MFT record num at byte off of the area, checks it
// and undoes its update sequence fixups.
func (v *ntfsVol) readRecord(r io.ReaderAt, num, off int64) ([]byte, error) {
	b, err := readAt(r, off, int(v.recSize))
	if err != nil {
		return nil, fmt.Errorf("NTFS: reading MFT record %d at byte %d: %w", num, off, err)
	}
	le16 := func(o int64) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	if string(b[:4]) != "FILE" {
		return nil, fallback("NTFS: MFT record %d at byte %d has magic %q, want FILE", num, off, b[:4])
	}
	usa, count := le16(4), le16(6)
	if count-1 != v.recSize/ntfsFixupBlock || usa < 0x28 || usa+2*count > v.recSize {
		return nil, fallback("NTFS: MFT record %d: update sequence of %d entries at %d for %d bytes", num, count, usa, v.recSize)
	}
	for i := int64(1); i < count; i++ {
		end := i*ntfsFixupBlock - 2
		if b[end] != b[usa] || b[end+1] != b[usa+1] {
			return nil, fallback("NTFS: MFT record %d: fixup %d does not match (a torn write)", num, i)
		}
		b[end], b[end+1] = b[usa+2*i], b[usa+2*i+1]
	}
	if le16(0x16)&1 == 0 {
		return nil, fallback("NTFS: MFT record %d is not in use", num)
	}
	// NTFS 3.1 records (usa at 0x30) carry their own number.
	if usa >= 0x30 {
		if n := int64(binary.LittleEndian.Uint32(b[0x2C:])); n != num {
			return nil, fallback("NTFS: MFT record %d says it is record %d", num, n)
		}
	}
	return b, nil
}

// attrs decodes the attributes of a record, in order.
func (v *ntfsVol) attrs(rec []byte, num int64) ([]ntfsAttr, error) {
	le16 := func(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	le64 := func(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint64(b[o:])) }
	inUse := le32(rec, 0x18)
	if inUse > int64(len(rec)) {
		inUse = int64(len(rec))
	}
	var out []ntfsAttr
	for off := le16(rec, 0x14); ; {
		if off+4 > inUse {
			return nil, fallback("NTFS: MFT record %d: attributes run past its %d bytes in use", num, inUse)
		}
		typ := uint32(le32(rec, int(off)))
		if typ == ntfsAttrEnd {
			return out, nil
		}
		if off+16 > inUse {
			return nil, fallback("NTFS: MFT record %d: attribute at %d cut short", num, off)
		}
		n := le32(rec, int(off)+4)
		if n < 24 || off+n > inUse {
			return nil, fallback("NTFS: MFT record %d: attribute %#x at %d of %d bytes does not fit", num, typ, off, n)
		}
		a := rec[off : off+n]
		at := ntfsAttr{typ: typ, named: a[9] != 0, flags: uint16(le16(a, 0x0C)), resident: a[8] == 0}
		if at.resident {
			vlen, voff := le32(a, 0x10), le16(a, 0x14)
			if voff+vlen > n {
				return nil, fallback("NTFS: MFT record %d: resident attribute %#x's value runs past it", num, typ)
			}
			at.value = a[voff : voff+vlen]
		} else {
			if n < 0x40 {
				return nil, fallback("NTFS: MFT record %d: non-resident attribute %#x of %d bytes", num, typ, n)
			}
			at.startVCN, at.dataSize = le64(a, 0x10), le64(a, 0x30)
			mp := le16(a, 0x20)
			if mp < 0x40 || mp >= n || at.startVCN < 0 || at.dataSize < 0 {
				return nil, fallback("NTFS: MFT record %d: non-resident attribute %#x: mapping pairs at %d, first VCN %d, size %d", num, typ, mp, at.startVCN, at.dataSize)
			}
			runs, err := v.decodeRuns(a[mp:], at.startVCN)
			if err != nil {
				return nil, fallback("NTFS: MFT record %d: attribute %#x: %s", num, typ, err.Error())
			}
			at.runs = runs
		}
		out = append(out, at)
		off += n
	}
}

// decodeRuns decodes a mapping pairs array (runlist.c's
// ntfs_mapping_pairs_decompress), checking every run lies in the volume.
func (v *ntfsVol) decodeRuns(b []byte, vcn int64) ([]ntfsRun, error) {
	var runs []ntfsRun
	var lcn int64
	for p := 0; p < len(b) && b[p] != 0; {
		lenSz, offSz := int(b[p]&0xF), int(b[p]>>4)
		if lenSz == 0 || lenSz > 8 || offSz > 8 || p+1+lenSz+offSz > len(b) {
			return nil, fmt.Errorf("run header %#x at %d does not fit", b[p], p)
		}
		var n int64
		for i := lenSz - 1; i >= 0; i-- {
			n = n<<8 | int64(b[p+1+i])
		}
		if n <= 0 || n > v.clusters {
			return nil, fmt.Errorf("run of %d clusters", n)
		}
		run := ntfsRun{vcn: vcn, lcn: -1, n: n}
		if offSz > 0 {
			var d int64
			for i := offSz - 1; i >= 0; i-- {
				d = d<<8 | int64(b[p+1+lenSz+i])
			}
			if sh := 64 - 8*offSz; sh > 0 { // sign-extend
				d = d << sh >> sh
			}
			lcn += d
			if lcn < 0 || lcn > v.clusters-n {
				return nil, fmt.Errorf("run of %d clusters at cluster %d, outside the volume's %d", n, lcn, v.clusters)
			}
			run.lcn = lcn
		}
		runs = append(runs, run)
		vcn += n
		p += 1 + lenSz + offSz
	}
	return runs, nil
}

// unnamedAttr returns the record's unnamed attribute of type typ, refusing
// a record whose attributes continue in other records (an attribute list):
// following one is more metadata to trust, and only $MFT commonly has one
// (a large, fragmented MFT), whose base record still holds the first
// extent of its data, where the records read here lie.
func unnamedAttr(attrs []ntfsAttr, typ uint32, num int64) (*ntfsAttr, error) {
	for i, a := range attrs {
		if a.typ == ntfsAttrList && num != ntfsRecMFT {
			return nil, fallback("NTFS: MFT record %d has an attribute list (too fragmented to map)", num)
		}
		if a.typ == typ && !a.named {
			return &attrs[i], nil
		}
	}
	return nil, fallback("NTFS: MFT record %d has no attribute %#x", num, typ)
}

// diskRuns returns the byte ranges of a non-resident attribute's first
// want bytes, refusing sparse, compressed or encrypted ones.
func (v *ntfsVol) diskRuns(a *ntfsAttr, num, want int64) ([]Extent, error) {
	if a.flags&(0x00FF|0x4000|0x8000) != 0 || a.startVCN != 0 {
		return nil, fallback("NTFS: MFT record %d: attribute %#x is compressed, encrypted, sparse or not whole (flags %#x, first VCN %d)", num, a.typ, a.flags, a.startVCN)
	}
	var out []Extent
	var have int64
	for _, r := range a.runs {
		if have >= want {
			break
		}
		if r.lcn < 0 {
			return nil, fallback("NTFS: MFT record %d: attribute %#x has a sparse run", num, a.typ)
		}
		out = append(out, Extent{r.lcn * v.cs, r.n * v.cs})
		have += r.n * v.cs
	}
	if have < want {
		return nil, fallback("NTFS: MFT record %d: attribute %#x's runs hold %d bytes, want %d", num, a.typ, have, want)
	}
	return out, nil
}

// mapNTFS maps an NTFS volume by its $Bitmap: the clusters it marks used,
// and past the last whole cluster the sectors up to and including the
// backup boot sector, which mkntfs and Windows put in the sector after the
// volume's last. It reads the boot sector, MFT records 0, 2, 3 and 6, the
// start of $LogFile and the bitmap, and falls back when the volume was not
// cleanly unmounted (dirty, or its log not clean): then $Bitmap may not say
// what the volume holds.
func mapNTFS(r io.ReaderAt, size int64, head []byte) (*fsMap, error) {
	v, err := parseNTFSBoot(head, size)
	if err != nil {
		return nil, err
	}
	// $MFT's own record locates the others.
	if v.mftLCN*v.cs+v.recSize > v.clusters*v.cs {
		return nil, fallback("NTFS: $MFT's first record at cluster %d runs past the volume", v.mftLCN)
	}
	rec, err := v.readRecord(r, ntfsRecMFT, v.mftLCN*v.cs)
	if err != nil {
		return nil, err
	}
	attrs, err := v.attrs(rec, ntfsRecMFT)
	if err != nil {
		return nil, err
	}
	mftData, err := unnamedAttr(attrs, ntfsAttrData, ntfsRecMFT)
	if err != nil {
		return nil, err
	}
	if mftData.resident || len(mftData.runs) == 0 || mftData.runs[0].lcn != v.mftLCN {
		return nil, fallback("NTFS: $MFT's data does not start at cluster %d, where the boot sector puts it", v.mftLCN)
	}
	mftRuns, err := v.diskRuns(mftData, ntfsRecMFT, (ntfsRecBitmap+1)*v.recSize)
	if err != nil {
		return nil, err
	}
	record := func(num int64) ([]ntfsAttr, error) {
		pos := num * v.recSize
		for _, e := range mftRuns {
			if pos < e.Len {
				if pos+v.recSize > e.Len {
					return nil, fallback("NTFS: MFT record %d straddles two runs of $MFT", num)
				}
				rec, err := v.readRecord(r, num, e.Off+pos)
				if err != nil {
					return nil, err
				}
				return v.attrs(rec, num)
			}
			pos -= e.Len
		}
		return nil, fallback("NTFS: MFT record %d is past $MFT's data", num)
	}

	if err := v.checkClean(r, record); err != nil {
		return nil, err
	}

	attrs, err = record(ntfsRecBitmap)
	if err != nil {
		return nil, err
	}
	bm, err := unnamedAttr(attrs, ntfsAttrData, ntfsRecBitmap)
	if err != nil {
		return nil, err
	}
	need := (v.clusters + 7) / 8
	var used []Extent
	var bmRuns []Extent
	if bm.resident {
		if int64(len(bm.value)) < need {
			return nil, fallback("NTFS: $Bitmap holds %d bytes, want %d for %d clusters", len(bm.value), need, v.clusters)
		}
		used = appendBitRuns(nil, bm.value, uint64(v.clusters), 0)
	} else {
		if bm.dataSize < need {
			return nil, fallback("NTFS: $Bitmap is %d bytes, want %d for %d clusters", bm.dataSize, need, v.clusters)
		}
		if bmRuns, err = v.diskRuns(bm, ntfsRecBitmap, need); err != nil {
			return nil, err
		}
		if used, _, err = streamBitmap(r, bmRuns, uint64(v.clusters), false, nil); err != nil {
			return nil, fmt.Errorf("NTFS $Bitmap: %w", err)
		}
	}

	// A bitmap that leaves the boot sector, the MFT, its mirror or itself
	// free is not this volume's.
	must := []struct {
		what string
		e    Extent // clusters
	}{{"the boot sector", Extent{0, 1}}, {"$MFTMirr", Extent{v.mirrLCN, 1}}}
	for _, e := range mftRuns {
		must = append(must, struct {
			what string
			e    Extent
		}{"$MFT", Extent{e.Off / v.cs, e.Len / v.cs}})
	}
	for _, e := range bmRuns {
		must = append(must, struct {
			what string
			e    Extent
		}{"$Bitmap", Extent{e.Off / v.cs, e.Len / v.cs}})
	}
	for _, m := range must {
		if c := firstFree(used, m.e); c >= 0 {
			return nil, fallback("NTFS: $Bitmap marks cluster %d of %s free", c, m.what)
		}
	}

	used = scaleExtents(used, v.cs, 0)
	fsSize := min((v.sectors+1)*v.bps, size)
	if tail := v.clusters * v.cs; tail < fsSize {
		used = append(used, Extent{tail, fsSize - tail})
	}
	return &fsMap{method: MethodNTFS, size: fsSize, used: used}, nil
}

// checkClean refuses a volume marked dirty ($Volume) or whose log holds
// operations not yet applied ($LogFile), as ntfs-3g does before mounting
// one: the allocations they describe may not be in $Bitmap.
func (v *ntfsVol) checkClean(r io.ReaderAt, record func(int64) ([]ntfsAttr, error)) error {
	attrs, err := record(ntfsRecVolume)
	if err != nil {
		return err
	}
	vi, err := unnamedAttr(attrs, ntfsAttrVolumeInfo, ntfsRecVolume)
	if err != nil {
		return err
	}
	if !vi.resident || len(vi.value) < 12 {
		return fallback("NTFS: $Volume's information is not a resident value of 12 bytes")
	}
	if binary.LittleEndian.Uint16(vi.value[0x0A:])&ntfsVolumeDirty != 0 {
		return fallback("NTFS: marked dirty: not cleanly unmounted, or scheduled for chkdsk")
	}

	attrs, err = record(ntfsRecLogFile)
	if err != nil {
		return err
	}
	lf, err := unnamedAttr(attrs, ntfsAttrData, ntfsRecLogFile)
	if err != nil {
		return err
	}
	// The two restart pages at the start of the log; the newer one
	// (the larger LSN) is in force.
	const page = 4096
	if lf.resident || lf.dataSize < 2*page {
		return fallback("NTFS: $LogFile of %d bytes is too small", lf.dataSize)
	}
	runs, err := v.diskRuns(lf, ntfsRecLogFile, 2*page)
	if err != nil {
		return err
	}
	var bestLSN uint64
	clean, seen := true, false
	for i := range int64(2) {
		b, err := readInRuns(r, runs, i*page, 512)
		if err != nil {
			return fmt.Errorf("NTFS $LogFile: %w", err)
		}
		switch string(b[:4]) {
		case "\xff\xff\xff\xff": // emptied by mkntfs or ntfsresize
			continue
		case "RSTR":
		default:
			return fallback("NTFS: $LogFile restart page %d has magic %q (chkdsk found errors, or not a log)", i, b[:4])
		}
		ra := int(binary.LittleEndian.Uint16(b[0x18:]))
		if ra < 0x1E || ra+16 > 510 {
			return fallback("NTFS: $LogFile restart area at %d of its page", ra)
		}
		lsn := binary.LittleEndian.Uint64(b[ra:])
		inUse := binary.LittleEndian.Uint16(b[ra+0x0C:])
		flags := binary.LittleEndian.Uint16(b[ra+0x0E:])
		if !seen || lsn >= bestLSN {
			bestLSN, seen = lsn, true
			clean = inUse == 0xFFFF || flags&0x2 != 0
		}
	}
	if !clean {
		return fallback("NTFS: $LogFile is not clean: not cleanly unmounted, or Windows hibernated")
	}
	return nil
}

// readInRuns reads n bytes at offset off of data stored in runs.
func readInRuns(r io.ReaderAt, runs []Extent, off int64, n int) ([]byte, error) {
	for _, e := range runs {
		if off < e.Len {
			if off+int64(n) > e.Len {
				return nil, fallback("NTFS: %d bytes at %d straddle two runs", n, off)
			}
			return readAt(r, e.Off+off, n)
		}
		off -= e.Len
	}
	return nil, fallback("NTFS: byte %d is past the runs' data", off)
}
