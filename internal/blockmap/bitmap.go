package blockmap

import (
	"fmt"
	"io"
	"math/bits"
	"sort"
)

// streamBitmap reads an allocation bitmap of nbits bits stored in the byte
// ranges runs of r (in order, as many bytes as the bitmap needs at least),
// at most maxRead bytes at a time: the bitmap of a large volume (512 MiB
// for 16 TiB of 4 KiB clusters) is never held whole. It appends the runs of
// set bits to dst as extents of allocation units from 0, and returns how
// many bits are set. msbFirst numbers the bits of a byte from its top, as
// HFS+ does; NTFS and exFAT number them from the bottom, as ext does.
func streamBitmap(r io.ReaderAt, runs []Extent, nbits uint64, msbFirst bool, dst []Extent) ([]Extent, uint64, error) {
	need := int64((nbits + 7) / 8)
	buf := make([]byte, min(need, maxRead))
	var done int64 // bytes of the bitmap handled
	var set uint64
	for _, run := range runs {
		for pos := run.Off; pos < run.End() && done < need; {
			n := min(run.End()-pos, need-done, maxRead)
			b := buf[:n]
			if err := readFull(r, b, pos); err != nil {
				return nil, 0, fmt.Errorf("reading the allocation bitmap at byte %d: %w", pos, err)
			}
			if msbFirst {
				for i, x := range b {
					b[i] = bits.Reverse8(x)
				}
			}
			nb := min(uint64(n)*8, nbits-uint64(done)*8)
			dst = appendBitRuns(dst, b, nb, done*8)
			set += countBits(b, nb)
			pos += n
			done += n
		}
	}
	if done < need {
		return nil, 0, fallback("allocation bitmap: its %d bytes of storage hold less than the %d it needs", done, need)
	}
	return dst, set, nil
}

// scaleExtents turns extents of units of size unit from byte base into byte
// extents, in place.
func scaleExtents(ext []Extent, unit, base int64) []Extent {
	for i := range ext {
		ext[i] = Extent{base + ext[i].Off*unit, ext[i].Len * unit}
	}
	return ext
}

// firstFree returns the first unit in [e.Off, e.End()) that sorted,
// merged used extents do not hold, or -1: a piece of metadata that an
// allocation bitmap must mark used.
func firstFree(used []Extent, e Extent) int64 {
	pos := e.Off
	i := sort.Search(len(used), func(i int) bool { return used[i].End() > pos })
	for _, u := range used[i:] {
		if u.Off > pos {
			return pos
		}
		pos = u.End()
		if pos >= e.End() {
			return -1
		}
	}
	if pos < e.End() {
		return pos
	}
	return -1
}
