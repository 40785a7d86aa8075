package blockmap

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sort"
	"strings"
)

// An LVM2 physical volume, from lvm2's lib/label/label.h and
// lib/format_text/layout.h: a label in one of the first four sectors
// ("LABELONE", then the pv_header: the volume's UUID, its size, and lists
// of data and metadata areas), metadata areas that each start with a
// 512-byte mda_header whose first raw_locn points at the volume group's
// metadata text in a circular buffer, and the extents from pe_start on.
//
// The map of a physical volume: the label and metadata areas are used;
// each logical volume that lies wholly on this volume in plain (linear or
// striped) segments is mapped by its own filesystem, through the same probe
// as a partition, and its used bytes translated to the disk; unallocated
// extents are free; volumes of other kinds (thin pools, RAID, snapshots,
// volumes spanning other physical volumes) are kept whole with a note.

const (
	// MethodLVM maps the label, metadata and unallocated extents of an
	// LVM2 physical volume.
	MethodLVM = "LVM2 metadata"

	lvmSignature   = "LVM2 physical volume" // foreignSignature's name for the label
	lvmLabelID     = "LABELONE"
	lvmLabelType   = "LVM2 001"
	lvmMDAMagic    = " LVM2 x[5A%r0N*>"
	lvmMDAHeader   = 512
	lvmInitialCRC  = 0xf597a6cf
	lvmRawIgnored  = 1
	maxLVMText     = 8 << 20 // metadata text; lvm2's default area is 1 MiB
	maxLVMAreas    = 8       // data or metadata areas in a label
	maxLVMSegments = 1 << 16 // pieces of one physical volume
)

// lvmCRC is lvm2's calc_crc: CRC-32 (IEEE) without the final inversion,
// from a fixed initial value.
func lvmCRC(b []byte) uint32 {
	return ^crc32.Update(^uint32(lvmInitialCRC), crc32.IEEETable, b)
}

// lvmLabel is what the label sector says.
type lvmLabel struct {
	uuid    string
	devSize int64
	data    []Extent // data areas: offset, size (0: to the end)
	mdas    []Extent // metadata areas
}

// readLVMLabel finds and checks the label in the first four sectors of
// head.
func readLVMLabel(head []byte) (*lvmLabel, error) {
	for s := range 4 {
		if len(head) < (s+1)*512 {
			break
		}
		sec := head[s*512 : (s+1)*512]
		if string(sec[:8]) != lvmLabelID {
			continue
		}
		if got := binary.LittleEndian.Uint64(sec[8:]); got != uint64(s) {
			return nil, fmt.Errorf("label in sector %d says it is in sector %d", s, got)
		}
		if got, want := binary.LittleEndian.Uint32(sec[16:]), lvmCRC(sec[20:]); got != want {
			return nil, fmt.Errorf("label in sector %d: checksum %#x, want %#x", s, got, want)
		}
		if string(sec[24:32]) != lvmLabelType {
			return nil, fmt.Errorf("label type %q, want %q", sec[24:32], lvmLabelType)
		}
		off := int(binary.LittleEndian.Uint32(sec[20:]))
		if off < 32 || off > 512-40-16 {
			return nil, fmt.Errorf("label's contents at byte %d of its sector", off)
		}
		return parsePVHeader(sec[off:])
	}
	return nil, errors.New("no label in the first four sectors")
}

// parsePVHeader reads a pv_header: the UUID, the size, then two lists of
// (offset, size) pairs each ended by a zero offset.
func parsePVHeader(h []byte) (*lvmLabel, error) {
	l := &lvmLabel{uuid: string(h[:32]), devSize: int64(binary.LittleEndian.Uint64(h[32:]))}
	if l.devSize < 0 {
		return nil, fmt.Errorf("volume size %d", l.devSize)
	}
	pos := 40
	for list := range 2 {
		for n := 0; ; n++ {
			if pos+16 > len(h) {
				return nil, errors.New("area lists run past the label sector")
			}
			off := int64(binary.LittleEndian.Uint64(h[pos:]))
			size := int64(binary.LittleEndian.Uint64(h[pos+8:]))
			pos += 16
			if off == 0 {
				break
			}
			if off < 0 || size < 0 || n >= maxLVMAreas {
				return nil, fmt.Errorf("area at %d of %d bytes", off, size)
			}
			if list == 0 {
				l.data = append(l.data, Extent{off, size})
			} else {
				l.mdas = append(l.mdas, Extent{off, size})
			}
		}
	}
	return l, nil
}

// errNoLVMText is a metadata area that holds no metadata: the volume
// belongs to no group, or its area is marked ignored.
var errNoLVMText = errors.New("no metadata in the area")

// readLVMText reads and checks the metadata text a metadata area points
// at; the area lies at mda inside the n bytes of r.
func readLVMText(r io.ReaderAt, mda Extent, n int64) ([]byte, error) {
	if mda.Len < 2*lvmMDAHeader || mda.Off > n || mda.Len > n-mda.Off {
		return nil, fmt.Errorf("metadata area at %d of %d bytes is not inside the %d-byte volume", mda.Off, mda.Len, n)
	}
	h, err := readAt(r, mda.Off, lvmMDAHeader)
	if err != nil {
		return nil, err
	}
	if got, want := binary.LittleEndian.Uint32(h), lvmCRC(h[4:]); got != want {
		return nil, fmt.Errorf("metadata area header at %d: checksum %#x, want %#x", mda.Off, got, want)
	}
	if string(h[4:20]) != lvmMDAMagic || binary.LittleEndian.Uint32(h[20:]) != 1 {
		return nil, fmt.Errorf("metadata area header at %d: bad magic or version", mda.Off)
	}
	if start, size := int64(binary.LittleEndian.Uint64(h[24:])), int64(binary.LittleEndian.Uint64(h[32:])); start != mda.Off || size != mda.Len {
		return nil, fmt.Errorf("metadata area header at %d says it is at %d, %d bytes, the label %d bytes", mda.Off, start, size, mda.Len)
	}
	off := int64(binary.LittleEndian.Uint64(h[40:]))
	size := int64(binary.LittleEndian.Uint64(h[48:]))
	sum := binary.LittleEndian.Uint32(h[56:])
	flags := binary.LittleEndian.Uint32(h[60:])
	if flags&lvmRawIgnored != 0 || off == 0 {
		return nil, errNoLVMText
	}
	// The text may wrap around the end of the circular buffer, to just
	// after the header.
	if off < lvmMDAHeader || off >= mda.Len || size <= 0 || size > maxLVMText || size > mda.Len-lvmMDAHeader {
		return nil, fmt.Errorf("metadata text at %d of %d bytes does not fit the %d-byte area", off, size, mda.Len)
	}
	first := min(size, mda.Len-off)
	wrap := size - first
	if wrap > off-lvmMDAHeader {
		return nil, fmt.Errorf("metadata text of %d bytes wraps over itself", size)
	}
	text := make([]byte, 0, size)
	for _, part := range []Extent{{mda.Off + off, first}, {mda.Off + lvmMDAHeader, wrap}} {
		for p := part.Off; p < part.End(); p += maxRead {
			b, err := readAt(r, p, int(min(maxRead, part.End()-p)))
			if err != nil {
				return nil, err
			}
			text = append(text, b...)
		}
	}
	if got := lvmCRC(text); got != sum {
		return nil, fmt.Errorf("metadata text at %d: checksum %#x, want %#x", mda.Off+off, got, sum)
	}
	return text, nil
}

// lvReader reads a logical volume: its segments' stripes on the disk.
type lvReader struct {
	r      io.ReaderAt
	size   int64
	pieces []lvPiece // every stripe of every segment, by segment then stripe
}

// lvPiece is one stripe of a segment: the segment covers LV bytes [lvOff,
// lvOff+lvLen) in stripes of chunk bytes dealt in turn to n areas; this is
// area i, areaLen bytes at disk offset disk. A linear segment is one area
// whose chunk is the whole segment.
type lvPiece struct {
	lvOff, lvLen int64
	n, i, chunk  int64
	disk         int64
	areaLen      int64
}

// toDisk maps LV offset x (inside the piece's segment) to a disk offset
// and how many bytes from there stay contiguous on the disk.
func (p lvPiece) toDisk(areas []lvPiece, x int64) (int64, int64) {
	rel := x - p.lvOff
	k := rel / p.chunk
	a := areas[k%p.n]
	in := rel % p.chunk
	return a.disk + (k/p.n)*p.chunk + in, min(p.chunk-in, p.lvLen-rel)
}

func (l *lvReader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off >= l.size {
		return 0, io.EOF
	}
	done := 0
	for done < len(b) && off < l.size {
		// The first stripe of the segment holding off.
		i := sort.Search(len(l.pieces), func(i int) bool { return l.pieces[i].lvOff+l.pieces[i].lvLen > off })
		p := l.pieces[i]
		d, run := p.toDisk(l.pieces[i:i+int(p.n)], off)
		run = min(run, int64(len(b)-done))
		n, err := l.r.ReadAt(b[done:done+int(run)], d)
		done += n
		off += int64(n)
		if err != nil && n < int(run) {
			return done, err
		}
	}
	if done < len(b) {
		return done, io.EOF
	}
	return done, nil
}

// translate maps LV extent [x, y) onto the piece's area: the disk bytes
// holding it, one range (the middle chunks of a stripe are contiguous).
func (p lvPiece) translate(x, y int64) (Extent, bool) {
	a, b := max(x, p.lvOff)-p.lvOff, min(y, p.lvOff+p.lvLen)-p.lvOff
	if a >= b {
		return Extent{}, false
	}
	if p.n == 1 {
		return Extent{p.disk + a, b - a}, true
	}
	k0, k1 := a/p.chunk, (b-1)/p.chunk
	f := k0 + (p.i-k0%p.n+p.n)%p.n // the first chunk of this stripe from k0
	l := k1 - (k1%p.n-p.i+p.n)%p.n // the last up to k1
	if f > l {
		return Extent{}, false
	}
	s := (f / p.n) * p.chunk
	if f == k0 {
		s += a % p.chunk
	}
	e := (l/p.n)*p.chunk + p.chunk
	if l == k1 {
		e = (l/p.n)*p.chunk + (b-1)%p.chunk + 1
	}
	return Extent{p.disk + s, e - s}, true
}

// mapLVM maps the LVM2 physical volume in the n bytes at off of r.
func mapLVM(r io.ReaderAt, off, n int64, head []byte) ([]Region, error) {
	if _, nested := r.(*lvReader); nested {
		return []Region{nonZero(off, n, "LVM2 physical volume inside a logical volume: not mapped")}, nil
	}
	fb := func(format string, a ...any) []Region {
		rg := nonZero(off, n, "LVM2: "+fmt.Sprintf(format, a...))
		rg.Fallback = true
		return []Region{rg}
	}
	label, err := readLVMLabel(head)
	if err != nil {
		return fb("%v", err), nil
	}
	sr := io.NewSectionReader(r, off, n)
	var text []byte
	var firstErr error
	for _, mda := range label.mdas {
		text, err = readLVMText(sr, mda, n)
		if err == nil {
			break
		}
		if firstErr == nil || errors.Is(firstErr, errNoLVMText) {
			firstErr = err
		}
	}
	switch {
	case text == nil && (firstErr == nil || errors.Is(firstErr, errNoLVMText)):
		return []Region{nonZero(off, n, "LVM2 physical volume holding no volume group metadata (in no group, or its copy is elsewhere): not mapped")}, nil
	case text == nil:
		return fb("%v", firstErr), nil
	}
	vg, err := parseVG(text)
	if err != nil {
		return fb("metadata text: %v", err), nil
	}
	var pv *lvmPV
	for _, p := range vg.pvs {
		if p.id == label.uuid {
			pv = p
		}
	}
	if pv == nil {
		return fb("volume group %s does not list this physical volume (%s)", vg.name, label.uuid), nil
	}
	ext := vg.extentSize
	dataEnd := pv.peStart + pv.peCount*ext
	if pv.peStart < lvmMDAHeader || pv.peCount > (n-pv.peStart)/ext {
		return fb("physical volume %s: %d extents of %d bytes from byte %d do not fit its %d bytes", pv.name, pv.peCount, ext, pv.peStart, n), nil
	}
	for _, m := range label.mdas {
		if m.Off < pv.peStart && m.End() > pv.peStart || m.Off >= pv.peStart && m.Off < dataEnd {
			return fb("metadata area at %d overlaps the extents", m.Off), nil
		}
	}
	regions, err := mapPV(r, off, vg, pv)
	if err != nil {
		var fe *fallbackError
		if errors.As(err, &fe) {
			return fb("%s", fe.msg), nil
		}
		return nil, err
	}
	// The label and metadata before the extents, and after them what is
	// left of the volume: a second metadata area, then nothing LVM uses.
	regions = append(regions, Region{Off: off, Len: pv.peStart, Method: MethodLVM,
		Used: []Extent{{off, pv.peStart}}, Note: "LVM2 label and metadata of volume group " + vg.name})
	devEnd := n
	if pv.devSize > 0 {
		devEnd = min(max(pv.devSize, dataEnd), n)
	}
	if dataEnd < devEnd {
		used := slices.Clone(label.mdas)
		regions = append(regions, Region{Off: off + dataEnd, Len: devEnd - dataEnd, Method: MethodLVM,
			Used: shift(normalize(used, dataEnd, devEnd), off), Note: "after the last physical extent"})
	}
	if devEnd < n {
		regions = append(regions, nonZero(off+devEnd, n-devEnd, "after the end of the LVM2 physical volume"))
	}
	slices.SortFunc(regions, func(a, b Region) int { return cmp.Compare(a.Off, b.Off) })
	return regions, nil
}

// mapPV maps the extents of physical volume pv, which starts at disk
// offset off: every logical volume's areas on it, and the unallocated
// extents between them. A *fallbackError says the metadata does not add
// up.
func mapPV(r io.ReaderAt, off int64, vg *lvmVG, pv *lvmPV) ([]Region, error) {
	ext := vg.extentSize
	base := off + pv.peStart
	var regions []Region
	for _, lv := range vg.lvs {
		pieces, whole, err := lvPieces(vg, lv, pv, base)
		if err != nil {
			return nil, err
		}
		if len(pieces) > maxLVMSegments {
			return nil, fallback("logical volume %s has more than %d segments", lv.name, maxLVMSegments)
		}
		name := "LVM2 logical volume " + vg.name + "/" + lv.name
		if whole != "" {
			for _, p := range pieces {
				if p.areaLen > 0 && p.onPV {
					regions = append(regions, nonZero(p.disk, p.areaLen, name+": "+whole+", kept whole"))
				}
			}
			continue
		}
		if len(pieces) == 0 {
			continue
		}
		rs, err := mapLV(r, pieces, name)
		if err != nil {
			return nil, err
		}
		regions = append(regions, rs...)
	}
	slices.SortFunc(regions, func(a, b Region) int { return cmp.Compare(a.Off, b.Off) })
	// Between the volumes' areas: unallocated extents.
	var out []Region
	pos, end := base, base+pv.peCount*ext
	for _, rg := range regions {
		if rg.Off < pos || rg.End() > end {
			return nil, fallback("extents at byte %d (%s) overlap others or lie outside the physical volume", rg.Off-off, rg.Note)
		}
		if rg.Off > pos {
			out = append(out, Region{Off: pos, Len: rg.Off - pos, Method: MethodLVM, Note: "unallocated physical extents"})
		}
		out = append(out, rg)
		pos = rg.End()
	}
	if pos < end {
		out = append(out, Region{Off: pos, Len: end - pos, Method: MethodLVM, Note: "unallocated physical extents"})
	}
	return out, nil
}

// lvPiece with where it lies: onPV says the area is on this physical
// volume (disk is meaningful).
type lvPieceOn struct {
	lvPiece
	onPV bool
}

// lvPieces lists a volume's stripes. whole says why the volume is kept
// whole instead of mapped (then only the pieces on this physical volume
// matter); an error, that the metadata does not add up.
func lvPieces(vg *lvmVG, lv *lvmLV, pv *lvmPV, base int64) ([]lvPieceOn, string, error) {
	ext := vg.extentSize
	whole := lv.whole
	var out []lvPieceOn
	for _, s := range lv.segs {
		if s.typ != "striped" {
			// Areas of other types on this volume are kept whole, at
			// the segment's full length: too long for some types, which
			// can only make the metadata look inconsistent (the whole
			// volume is then kept), never leave an extent in use free.
			for _, a := range s.areas {
				if a.pv != pv.name || a.pe < 0 {
					continue
				}
				if a.pe+s.count > pv.peCount {
					return nil, "", fallback("logical volume %s: extents %d to %d lie past the %d of the physical volume", lv.name, a.pe, a.pe+s.count, pv.peCount)
				}
				p := lvPieceOn{lvPiece: lvPiece{n: 1, disk: base + a.pe*ext, areaLen: s.count * ext}, onPV: true}
				out = append(out, p)
			}
			continue
		}
		n := int64(len(s.areas))
		areaExt := s.count / n
		chunk := areaExt * ext
		if n > 1 {
			chunk = s.stripeSize
			if chunk <= 0 || (areaExt*ext)%chunk != 0 {
				if whole == "" {
					whole = fmt.Sprintf("stripes of %d bytes do not divide its areas", chunk)
				}
				chunk = areaExt * ext
			}
		}
		for i, a := range s.areas {
			p := lvPieceOn{lvPiece: lvPiece{lvOff: s.start * ext, lvLen: s.count * ext, n: n, i: int64(i), chunk: chunk, areaLen: areaExt * ext}}
			if a.pv == pv.name {
				if a.pe+areaExt > pv.peCount {
					return nil, "", fallback("logical volume %s: extents %d to %d lie past the %d of the physical volume", lv.name, a.pe, a.pe+areaExt, pv.peCount)
				}
				p.disk, p.onPV = base+a.pe*ext, true
			} else if whole == "" {
				whole = "lies partly on another physical volume"
			}
			out = append(out, p)
		}
	}
	return out, whole, nil
}

// mapLV maps a logical volume that lies wholly on this physical volume by
// the filesystem it holds, and translates what the probe found to the disk:
// one region per stripe of each segment.
func mapLV(r io.ReaderAt, pieces []lvPieceOn, name string) ([]Region, error) {
	lr := &lvReader{r: r}
	for _, p := range pieces {
		lr.pieces = append(lr.pieces, p.lvPiece)
		lr.size = max(lr.size, p.lvOff+p.lvLen)
	}
	inner, err := mapArea(lr, 0, lr.size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var out []Region
	for _, p := range lr.pieces {
		rg := Region{Off: p.disk, Len: p.areaLen}
		var notes []string
		allNonZero, fellBack := true, false
		var used []Extent
		for _, in := range inner {
			if in.End() <= p.lvOff || in.Off >= p.lvOff+p.lvLen {
				continue
			}
			if in.Note != "" && !slices.Contains(notes, in.Note) {
				notes = append(notes, in.Note)
			}
			fellBack = fellBack || in.Fallback
			if in.NonZero {
				if e, ok := p.translate(in.Off, in.End()); ok {
					used = append(used, e)
				}
				continue
			}
			if allNonZero {
				rg.Method = in.Method
				allNonZero = false
			}
			j := sort.Search(len(in.Used), func(j int) bool { return in.Used[j].End() > p.lvOff })
			for ; j < len(in.Used) && in.Used[j].Off < p.lvOff+p.lvLen; j++ {
				if e, ok := p.translate(in.Used[j].Off, in.Used[j].End()); ok {
					used = append(used, e)
				}
			}
		}
		note := name
		if len(notes) > 0 {
			note += ": " + strings.Join(notes, "; ")
		}
		if allNonZero {
			nz := nonZero(p.disk, p.areaLen, note)
			nz.Fallback = fellBack
			out = append(out, nz)
			continue
		}
		rg.Note = note
		rg.Used = normalize(used, p.disk, p.disk+p.areaLen)
		out = append(out, rg)
	}
	return out, nil
}
