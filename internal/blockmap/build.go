package blockmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"

	"github.com/asrlinux/asr/internal/partition"
)

const (
	// headLen is how much of the disk Build reads first: enough for an MBR,
	// a GPT with 128 entries at either sector size, and every signature a
	// probe looks for when the disk is a bare filesystem.
	headLen = 128 << 10
	// maxHeadLen bounds the re-read when a GPT's entries lie beyond headLen.
	maxHeadLen = 16 << 20
	// probeLen is what a probe reads from the start of a partition: up to
	// the swap signature of 64 KiB pages and the btrfs magic at 64 KiB.
	probeLen = 68 << 10
	// maxRead bounds one metadata read (a run of bitmaps, a piece of a FAT).
	maxRead = 1 << 20
)

// Build reads a disk through r (a whole disk with a partition table, or a
// bare filesystem, partition or swap area) and maps which of its size bytes
// matter. It reads partition tables and filesystem metadata only.
//
// Damaged or unknown metadata is not an error: the area falls back to a
// NonZero region whose Note says why. Build fails only when r does (a read
// error, or r shorter than size).
func Build(r io.ReaderAt, size int64) (*Map, error) {
	if size < 0 {
		return nil, fmt.Errorf("blockmap: disk size %d is negative", size)
	}
	m := &Map{Size: size}
	if size == 0 {
		return m, nil
	}
	head, err := readAt(r, 0, int(min(size, headLen)))
	if err != nil {
		return nil, fmt.Errorf("blockmap: reading the first bytes of the disk: %w", err)
	}
	t := partition.Parse(head)
	if t.Scheme == partition.GPT {
		// partition.Parse sees only the entries inside what it is handed.
		if need := gptEntriesEnd(head, t.SectorSize); need > int64(len(head)) && need <= min(size, maxHeadLen) {
			if head, err = readAt(r, 0, int(need)); err != nil {
				return nil, fmt.Errorf("blockmap: reading the GPT entries: %w", err)
			}
			t = partition.Parse(head)
		}
	}
	m.Table = t
	cr := &headReader{r: r, head: head}
	if t.Scheme == partition.None {
		m.Regions, err = mapArea(cr, 0, size)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	tables, err := tableExtents(cr, t, head, size)
	if err != nil {
		return nil, err
	}
	m.Regions, err = mapPartitioned(cr, t, tables, size)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// claim is a piece of the disk the partition table speaks for: the table
// itself or a partition.
type claim struct {
	off, end int64
	table    bool
	part     partition.Partition
}

// mapPartitioned maps a disk with a partition table: the table, each
// partition by its filesystem, and whatever lies between them by zero
// detection.
func mapPartitioned(r io.ReaderAt, t *partition.Table, tables []Extent, size int64) ([]Region, error) {
	var claims []claim
	for _, e := range tables {
		claims = append(claims, claim{off: e.Off, end: e.End(), table: true})
	}
	for _, p := range t.Partitions {
		// A partition that starts past the end of the disk has nothing to
		// map; one that runs past it is mapped as far as the disk goes.
		if p.Start < 0 || p.Size <= 0 || p.Start >= size {
			continue
		}
		end := p.Start + p.Size
		if end < p.Start || end > size {
			end = size
		}
		claims = append(claims, claim{off: p.Start, end: end, part: p})
	}
	slices.SortStableFunc(claims, func(a, b claim) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})

	var regions []Region
	var pos int64
	for i := 0; i < len(claims); {
		// Claims that overlap form one cluster: the table cannot be
		// trusted to say whose bytes they are.
		off, end := claims[i].off, claims[i].end
		j := i + 1
		for ; j < len(claims) && claims[j].off < end; j++ {
			end = max(end, claims[j].end)
		}
		if off > pos {
			regions = append(regions, nonZero(pos, off-pos, "not in any partition"))
		}
		c := claims[i]
		switch {
		case j-i > 1:
			regions = append(regions, nonZero(off, end-off, overlapNote(claims[i:j])))
		case c.table:
			regions = append(regions, Region{Off: off, Len: end - off, Method: MethodPartitionTable, Used: []Extent{{off, end - off}}})
		case strings.HasPrefix(c.part.Type, "Extended"):
			regions = append(regions, nonZero(off, end-off, fmt.Sprintf("partition %d is an MBR extended partition: its logical partitions are not mapped", c.part.Number)))
		default:
			rs, err := mapArea(r, off, end-off)
			if err != nil {
				return nil, fmt.Errorf("partition %d: %w", c.part.Number, err)
			}
			regions = append(regions, rs...)
		}
		pos = end
		i = j
	}
	if pos < size {
		regions = append(regions, nonZero(pos, size-pos, "not in any partition"))
	}
	return regions, nil
}

func overlapNote(cs []claim) string {
	var names []string
	for _, c := range cs {
		if c.table {
			names = append(names, "the partition table")
		} else {
			names = append(names, fmt.Sprintf("partition %d", c.part.Number))
		}
	}
	return strings.Join(names, ", ") + " overlap"
}

// tableExtents returns where the partition table lives: the MBR sector;
// for a GPT also its header and entries at the start and the backup entries
// and header at the end.
func tableExtents(r io.ReaderAt, t *partition.Table, head []byte, size int64) ([]Extent, error) {
	if t.Scheme == partition.MBR {
		return normalize([]Extent{{0, 512}}, 0, size), nil
	}
	ss := int64(t.SectorSize)
	ext := []Extent{{0, 2 * ss}} // protective MBR and primary header
	entLBA, entBytes, ok := gptEntries(head[ss : 2*ss])
	if ok {
		ext = append(ext, Extent{entLBA * ss, roundUp(entBytes, ss)})
	}
	if b := t.BackupLBA; b > 1 && b < size/ss {
		ext = append(ext, Extent{b * ss, ss})
		hdr, err := readAt(r, b*ss, int(ss))
		if err != nil {
			return nil, fmt.Errorf("blockmap: reading the backup GPT header at byte %d: %w", b*ss, err)
		}
		if bl, bn, bok := gptEntries(hdr); bok && validGPTHeader(hdr) {
			ext = append(ext, Extent{bl * ss, roundUp(bn, ss)})
		} else if ok {
			// No valid backup header (yet): its entries, when there are
			// any, lie just before it.
			ext = append(ext, Extent{b*ss - roundUp(entBytes, ss), roundUp(entBytes, ss)})
		}
	}
	return normalize(ext, 0, size), nil
}

// gptEntries reads where a GPT header puts its entry array, in sectors and
// bytes. ok is false for numbers partition.Parse would refuse.
func gptEntries(h []byte) (lba, n int64, ok bool) {
	if len(h) < 92 || string(h[:8]) != "EFI PART" {
		return 0, 0, false
	}
	lba = int64(binary.LittleEndian.Uint64(h[72:]))
	count := int64(binary.LittleEndian.Uint32(h[80:]))
	esz := int64(binary.LittleEndian.Uint32(h[84:]))
	// The same bounds as partition.Parse, and an LBA small enough that
	// multiplying it by a sector size cannot overflow.
	if esz < 128 || esz > 4096 || count > 1024 || lba < 2 || lba > 1<<40 {
		return 0, 0, false
	}
	return lba, count * esz, true
}

// gptEntriesEnd is the byte after the primary GPT's entry array, or 0.
func gptEntriesEnd(head []byte, ss int) int64 {
	if len(head) < 2*ss {
		return 0
	}
	lba, n, ok := gptEntries(head[ss : 2*ss])
	if !ok {
		return 0
	}
	return lba*int64(ss) + n
}

// validGPTHeader checks a GPT header's signature and CRC.
func validGPTHeader(h []byte) bool {
	if len(h) < 92 || string(h[:8]) != "EFI PART" {
		return false
	}
	n := binary.LittleEndian.Uint32(h[12:])
	if n < 92 || int(n) > len(h) {
		return false
	}
	c := slices.Clone(h[:n])
	clear(c[16:20])
	return crc32.ChecksumIEEE(c) == binary.LittleEndian.Uint32(h[16:])
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// fsMap is what a filesystem method found in its area, in offsets relative
// to the area.
type fsMap struct {
	method string
	size   int64 // how much of the area the filesystem spans
	used   []Extent
	note   string
}

// fallbackError is metadata that cannot be trusted: the area is mapped by
// zero detection instead, and the message becomes the region's Note.
type fallbackError struct{ msg string }

func (e *fallbackError) Error() string { return e.msg }

func fallback(format string, a ...any) error {
	return &fallbackError{fmt.Sprintf(format, a...)}
}

// mapArea maps n bytes at off (a partition or a bare device) by the
// filesystem it holds: one region for the filesystem, a NonZero one for any
// bytes after its end, or a single NonZero region when no method applies.
func mapArea(r io.ReaderAt, off, n int64) ([]Region, error) {
	sr := io.NewSectionReader(r, off, n)
	head, err := readAt(sr, 0, int(min(n, probeLen)))
	if err != nil {
		return nil, fmt.Errorf("blockmap: reading the first bytes at %d: %w", off, err)
	}
	if note := encryptedNote(sr, n, head); note != "" {
		return []Region{nonZero(off, n, note)}, nil
	}
	type method struct {
		name string
		fn   func(io.ReaderAt, int64, []byte) (*fsMap, error)
	}
	var found []method
	if isExt(head) {
		found = append(found, method{"ext2/3/4 superblock", mapExt})
	}
	if isFAT(head) {
		found = append(found, method{"FAT boot sector", mapFAT})
	}
	if swapPageSize(head) != 0 {
		found = append(found, method{"swap signature", mapSwap})
	}
	if isXFS(head) {
		found = append(found, method{"XFS superblock", mapXFS})
	}
	if isBtrfs(head) {
		found = append(found, method{"btrfs superblock", mapBtrfs})
	}
	if isF2FS(head) {
		found = append(found, method{"F2FS superblock", mapF2FS})
	}
	if isNTFS(head) {
		found = append(found, method{"NTFS boot sector", mapNTFS})
	}
	if isExFAT(head) {
		found = append(found, method{"exFAT boot sector", mapExFAT})
	}
	if k := hfsKind(head); k != "" {
		found = append(found, method{k + " volume header", mapHFSPlus})
	}
	other := foreignSignature(head)
	switch {
	case len(found) == 0 && other == lvmSignature:
		return mapLVM(r, off, n, head)
	case len(found) == 0 && other != "":
		return []Region{nonZero(off, n, other+": not mapped")}, nil
	case len(found) == 0:
		return []Region{nonZero(off, n, "no ext2/3/4 superblock, FAT boot sector or swap signature")}, nil
	case len(found) > 1 || other != "":
		var names []string
		for _, f := range found {
			names = append(names, f.name)
		}
		if other != "" {
			names = append(names, other+" signature")
		}
		r := nonZero(off, n, "ambiguous: both "+strings.Join(names, " and "))
		r.Fallback = true
		return []Region{r}, nil
	}
	fm, err := found[0].fn(sr, n, head)
	var fb *fallbackError
	if errors.As(err, &fb) {
		r := nonZero(off, n, fb.msg)
		r.Fallback = true
		return []Region{r}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("blockmap: area at %d: %w", off, err)
	}
	regions := []Region{{
		Off: off, Len: fm.size, Method: fm.method, Note: fm.note,
		Used: shift(normalize(fm.used, 0, fm.size), off),
	}}
	if fm.size < n {
		// Whatever follows the filesystem inside its partition is not the
		// filesystem's: it may be garbage, or an md RAID superblock.
		regions = append(regions, nonZero(off+fm.size, n-fm.size, fmt.Sprintf("after the end of the %s", fsName(fm.method))))
	}
	return regions, nil
}

// fsName turns a method into the name of what it maps: "ext4 bitmap" ->
// "ext4 filesystem", "HFS+ allocation file" -> "HFS+ filesystem".
func fsName(method string) string {
	switch method {
	case MethodSwap:
		return "swap area"
	case MethodXFS:
		return "XFS filesystem"
	case MethodBtrfs, MethodBtrfsChunks:
		return "btrfs filesystem"
	case MethodF2FS:
		return "F2FS filesystem"
	}
	method = strings.TrimSuffix(method, " allocation file")
	return strings.TrimSuffix(method, " bitmap") + " filesystem"
}

// foreignSignature names a format Build sees but does not map, so that a
// stale ext or FAT signature beside it is not believed.
func foreignSignature(h []byte) string {
	at := func(off int, s string) bool { return len(h) >= off+len(s) && string(h[off:off+len(s)]) == s }
	switch {
	case at(0, "LUKS\xba\xbe"):
		return "LUKS"
	case at(0, "\xfc\x4e\x2b\xa9"), at(4096, "\xfc\x4e\x2b\xa9"):
		return "Linux RAID (md)"
	case at(0x8001, "CD001"):
		return "ISO 9660"
	}
	for _, s := range []int{0, 512, 1024, 1536} {
		if at(s, "LABELONE") {
			return "LVM2 physical volume"
		}
	}
	for _, ps := range swapPageSizes {
		for _, sig := range []string{"S1SUSPEND", "S2SUSPEND", "ULSUSPEND", "LINHIB0001"} {
			if at(ps-10, sig) {
				return "swap holding a hibernation image"
			}
		}
	}
	return ""
}

// readAt reads exactly n bytes at off.
func readAt(r io.ReaderAt, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	if err := readFull(r, b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// readFull fills b from off. io.ReaderAt may return io.EOF with a full
// buffer at the end of its data; that is success.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d, got %d: %w", len(b), off, n, err)
}

// headReader serves reads inside the first bytes of the disk, which Build
// holds already, from memory: a bare filesystem's superblock and group
// descriptors are read once.
type headReader struct {
	r    io.ReaderAt
	head []byte
}

func (h *headReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= 0 && off+int64(len(b)) <= int64(len(h.head)) {
		return copy(b, h.head[off:]), nil
	}
	return h.r.ReadAt(b, off)
}
