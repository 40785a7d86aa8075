package blockmap

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/asrlinux/asr/internal/partition"
)

// Extent is a byte range [Off, Off+Len) of the disk or partition.
type Extent struct{ Off, Len int64 }

// End is the first byte after e.
func (e Extent) End() int64 { return e.Off + e.Len }

// The methods a Region names. The ext and FAT ones say which variant the
// metadata declared; callers that only need to know whether the map is exact
// look at Region.NonZero.
const (
	MethodPartitionTable = "partition table"
	MethodExt2           = "ext2 bitmap"
	MethodExt3           = "ext3 bitmap"
	MethodExt4           = "ext4 bitmap"
	MethodFAT12          = "FAT12"
	MethodFAT16          = "FAT16"
	MethodFAT32          = "FAT32"
	MethodSwap           = "swap header"
	MethodXFS            = "XFS free-space btree"
	MethodBtrfs          = "btrfs extent tree"
	MethodBtrfsChunks    = "btrfs chunk tree" // allocated chunks only: the extent tree could not be used
	MethodF2FS           = "F2FS SIT"
	MethodNTFS           = "NTFS bitmap"
	MethodExFAT          = "exFAT bitmap"
	MethodHFSPlus        = "HFS+ allocation file"
	MethodHFSX           = "HFSX allocation file"
	MethodNonZero        = "non-zero"
)

// Region is what one method found about one area of the disk.
type Region struct {
	Off, Len int64 // the area: a partition, a gap, the partition table, the whole device
	Method   string
	// Used holds the used byte ranges inside the area: sorted,
	// non-overlapping, not touching, in absolute disk offsets.
	Used []Extent
	// NonZero says the map knows nothing finer about this area than "any
	// byte may matter": Used is the whole area, and the caller keeps what
	// does not read as zeros (Method is MethodNonZero). Used is filled even
	// so, that a caller which ignores NonZero still copies everything.
	NonZero bool
	// Note says why a method fell back, or what it saw: "ext4: needs journal
	// recovery", "not in any partition".
	Note string
	// Fallback says the area holds a filesystem Build knows but could not
	// map (damaged or stale metadata, or signatures of two kinds): a
	// NonZero region that callers warn about.
	Fallback bool
}

// End is the first byte after r.
func (r Region) End() int64 { return r.Off + r.Len }

// UsedBytes is the number of used bytes in r.
func (r Region) UsedBytes() int64 {
	var n int64
	for _, e := range r.Used {
		n += e.Len
	}
	return n
}

// Map is a whole disk's used map.
type Map struct {
	Size    int64
	Regions []Region // sorted, covering [0, Size) without gaps or overlaps
	// Table is the partition table Build read (Scheme None for a bare
	// filesystem); nil in a Map made by hand.
	Table *partition.Table
}

// Used reports whether any byte of [off, off+n) is used. Bytes outside
// [0, Size) are not. It costs two binary searches per region the range
// touches.
func (m *Map) Used(off, n int64) bool {
	if n <= 0 {
		return false
	}
	end := off + n
	if end < off { // overflow: the range runs to the end of everything
		end = math.MaxInt64
	}
	off, end = max(off, 0), min(end, m.Size)
	i := sort.Search(len(m.Regions), func(i int) bool { return m.Regions[i].End() > off })
	for ; i < len(m.Regions) && m.Regions[i].Off < end; i++ {
		u := m.Regions[i].Used
		j := sort.Search(len(u), func(j int) bool { return u[j].End() > off })
		if j < len(u) && u[j].Off < end {
			return true
		}
	}
	return false
}

// UsedIn returns the used extents of [off, off+n), clipped to it and merged
// across regions: what a scanner copies of a chunk it stores. The bytes
// between them are free, and may be stored as zeros.
func (m *Map) UsedIn(off, n int64) []Extent {
	if n <= 0 {
		return nil
	}
	end := off + n
	if end < off {
		end = math.MaxInt64
	}
	off, end = max(off, 0), min(end, m.Size)
	var out []Extent
	i := sort.Search(len(m.Regions), func(i int) bool { return m.Regions[i].End() > off })
	for ; i < len(m.Regions) && m.Regions[i].Off < end; i++ {
		u := m.Regions[i].Used
		j := sort.Search(len(u), func(j int) bool { return u[j].End() > off })
		for ; j < len(u) && u[j].Off < end; j++ {
			e := Extent{max(u[j].Off, off), 0}
			e.Len = min(u[j].End(), end) - e.Off
			if k := len(out); k > 0 && out[k-1].End() == e.Off {
				out[k-1].Len += e.Len // the same used range across a region boundary
				continue
			}
			out = append(out, e)
		}
	}
	return out
}

// UsedBytes is the number of bytes the map calls used, NonZero regions
// included whole: an upper bound of what an image of the disk stores.
func (m *Map) UsedBytes() int64 {
	var n int64
	for _, r := range m.Regions {
		n += r.UsedBytes()
	}
	return n
}

// Validate checks m's invariants: regions sorted and covering [0, Size)
// exactly, each region's extents sorted, disjoint, not touching and inside
// it, and NonZero regions used throughout. Build's maps always pass; a map
// that came from elsewhere (a file, the network) should be checked before
// it is trusted.
func (m *Map) Validate() error {
	if m.Size < 0 {
		return fmt.Errorf("blockmap: map size %d is negative", m.Size)
	}
	var pos int64
	for i, r := range m.Regions {
		if r.Off != pos || r.Len <= 0 || r.End() > m.Size || r.End() < r.Off {
			return fmt.Errorf("blockmap: region %d [%d, +%d) does not follow the previous one at %d inside %d bytes", i, r.Off, r.Len, pos, m.Size)
		}
		prev := r.Off - 1 // extents may start at the region's first byte, not touch the previous one
		for j, e := range r.Used {
			if e.Len <= 0 || e.Off <= prev || e.End() > r.End() || e.End() < e.Off {
				return fmt.Errorf("blockmap: region %d (%s) extent %d [%d, +%d) is empty, unsorted, touching the previous one or outside [%d, %d)",
					i, r.Method, j, e.Off, e.Len, r.Off, r.End())
			}
			prev = e.End()
		}
		if r.NonZero && (len(r.Used) != 1 || r.Used[0] != Extent{r.Off, r.Len}) {
			return fmt.Errorf("blockmap: region %d [%d, +%d) is NonZero but not used throughout", i, r.Off, r.Len)
		}
		pos = r.End()
	}
	if pos != m.Size {
		return fmt.Errorf("blockmap: regions end at %d, the map's size is %d", pos, m.Size)
	}
	return nil
}

// normalize sorts extents, drops empty ones, clips them to [lo, hi) and
// merges those that overlap or touch, in place.
func normalize(ext []Extent, lo, hi int64) []Extent {
	out := ext[:0]
	for _, e := range ext {
		s, t := max(e.Off, lo), min(e.End(), hi)
		if s < t {
			out = append(out, Extent{s, t - s})
		}
	}
	slices.SortFunc(out, func(a, b Extent) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && e.Off <= merged[n-1].End() {
			merged[n-1].Len = max(merged[n-1].End(), e.End()) - merged[n-1].Off
			continue
		}
		merged = append(merged, e)
	}
	return merged
}

// shift moves extents by d bytes, in place.
func shift(ext []Extent, d int64) []Extent {
	for i := range ext {
		ext[i].Off += d
	}
	return ext
}

// nonZero is a region the map knows nothing finer about.
func nonZero(off, n int64, note string) Region {
	return Region{Off: off, Len: n, Method: MethodNonZero, Used: []Extent{{off, n}}, NonZero: true, Note: note}
}
