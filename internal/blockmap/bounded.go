package blockmap

// maxExtents bounds the extents a tree-walking mapper (XFS, btrfs, F2FS)
// holds for one filesystem: 16 bytes each, 16 MiB in all. A filesystem
// whose free space is more fragmented than that is mapped more coarsely.
const maxExtents = 1 << 20

// boundedExtents collects used extents with a memory bound: past limit
// extents it merges the ones separated by the smallest gaps, calling those
// gaps used. That only ever calls free bytes used, which is the safe side.
type boundedExtents struct {
	ext   []Extent
	limit int
	gap   int64 // gaps up to this many units are already merged
}

func newBoundedExtents(limit int) *boundedExtents {
	return &boundedExtents{limit: max(limit, 16)}
}

// add appends e, merging it with the last extent when they touch or
// overlap (the common case of extents in ascending order).
func (b *boundedExtents) add(e Extent) {
	if e.Len <= 0 {
		return
	}
	if n := len(b.ext); n > 0 {
		last := &b.ext[n-1]
		if e.Off <= last.End()+b.gap && e.End() >= last.Off {
			s := min(last.Off, e.Off)
			last.Len = max(last.End(), e.End()) - s
			last.Off = s
			return
		}
	}
	b.ext = append(b.ext, e)
	if len(b.ext) > b.limit {
		b.coarsen()
	}
}

// coarsen sorts and merges the extents, doubling the gap it bridges until
// at most half the limit remain.
func (b *boundedExtents) coarsen() {
	b.ext = normalize(b.ext, 0, 1<<62)
	for len(b.ext) > b.limit/2 {
		b.gap = max(1, 2*b.gap)
		out := b.ext[:0]
		for _, e := range b.ext {
			if n := len(out); n > 0 && e.Off <= out[n-1].End()+b.gap {
				out[n-1].Len = max(out[n-1].End(), e.End()) - out[n-1].Off
				continue
			}
			out = append(out, e)
		}
		b.ext = out
	}
}

// extents returns the extents, sorted and merged, scaled from units to
// bytes by unit.
func (b *boundedExtents) extents(unit int64) []Extent {
	out := normalize(b.ext, 0, 1<<62)
	for i := range out {
		out[i] = Extent{out[i].Off * unit, out[i].Len * unit}
	}
	return out
}
