package blockmap

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// lvmVG is what the map needs of a volume group's metadata: its extent
// size, its physical volumes and its logical volumes' segments. Sizes are
// in bytes, positions in extents, as the metadata gives them.
type lvmVG struct {
	name       string
	extentSize int64 // bytes
	pvs        map[string]*lvmPV
	lvs        []*lvmLV
}

// lvmPV is a physical volume as its group's metadata lists it.
type lvmPV struct {
	name    string // the metadata's key: "pv0"
	id      string // the UUID without its dashes
	peStart int64  // bytes from the start of the volume
	peCount int64
	devSize int64 // bytes; 0 when not given
}

// lvmLV is a logical volume. whole, when set, says why it is kept whole
// rather than mapped by its filesystem.
type lvmLV struct {
	name  string
	segs  []lvmSeg
	whole string
}

// lvmSeg is a segment: extents [start, start+count) of its volume.
type lvmSeg struct {
	start, count int64
	typ          string
	stripeSize   int64 // bytes; for stripe counts above one
	areas        []lvmArea
}

// lvmArea is where one stripe of a segment lies: extents [pe, pe+len) of
// a physical volume (pv names the metadata's key) or of another volume; pe
// is -1 for a volume a segment of another type names.
type lvmArea struct {
	pv string
	pe int64
}

// maxLVMExtents bounds every extent number and count, so that products
// with an extent size (at most 2^32 sectors) cannot overflow.
const maxLVMExtents = 1 << 40

// parseVG reads a volume group from its metadata text.
func parseVG(text []byte) (*lvmVG, error) {
	root, err := parseCfg(text)
	if err != nil {
		return nil, err
	}
	if c, _ := root.str("contents"); c != "Text Format Volume Group" {
		return nil, fmt.Errorf("contents %q, want \"Text Format Volume Group\"", c)
	}
	if v, _ := root.int("version"); v != 1 {
		return nil, fmt.Errorf("format version %d, want 1", v)
	}
	var sec *cfgNode
	for _, c := range root.children {
		if c.section {
			if sec != nil {
				return nil, fmt.Errorf("two volume groups, %q and %q", sec.key, c.key)
			}
			sec = c
		}
	}
	if sec == nil {
		return nil, fmt.Errorf("no volume group section")
	}
	vg := &lvmVG{name: sec.key, pvs: map[string]*lvmPV{}}
	es, ok := sec.int("extent_size")
	if !ok || es <= 0 || es > 1<<32 {
		return nil, fmt.Errorf("volume group %s: extent size %d sectors", vg.name, es)
	}
	vg.extentSize = es * 512
	pvs := sec.sectionNamed("physical_volumes")
	if pvs == nil {
		return nil, fmt.Errorf("volume group %s lists no physical volumes", vg.name)
	}
	for _, c := range pvs.children {
		pv, err := parsePV(c)
		if err != nil {
			return nil, fmt.Errorf("volume group %s: %w", vg.name, err)
		}
		vg.pvs[pv.name] = pv
	}
	if lvs := sec.sectionNamed("logical_volumes"); lvs != nil {
		for _, c := range lvs.children {
			lv, err := parseLV(c)
			if err != nil {
				return nil, fmt.Errorf("volume group %s: %w", vg.name, err)
			}
			vg.lvs = append(vg.lvs, lv)
		}
	}
	vg.markWhole()
	return vg, nil
}

func parsePV(c *cfgNode) (*lvmPV, error) {
	if !c.section {
		return nil, fmt.Errorf("physical volume %q is not a section", c.key)
	}
	pv := &lvmPV{name: c.key}
	id, ok := c.str("id")
	if !ok {
		return nil, fmt.Errorf("physical volume %s has no id", c.key)
	}
	pv.id = strings.ReplaceAll(id, "-", "")
	start, ok1 := c.int("pe_start")
	count, ok2 := c.int("pe_count")
	if !ok1 || !ok2 || start < 0 || start > maxLVMExtents || count < 0 || count > maxLVMExtents {
		return nil, fmt.Errorf("physical volume %s: pe_start %d, pe_count %d", c.key, start, count)
	}
	pv.peStart, pv.peCount = start*512, count
	if ds, ok := c.int("dev_size"); ok && ds > 0 && ds <= maxLVMExtents*1024 {
		pv.devSize = ds * 512
	}
	return pv, nil
}

func parseLV(c *cfgNode) (*lvmLV, error) {
	if !c.section {
		return nil, fmt.Errorf("logical volume %q is not a section", c.key)
	}
	lv := &lvmLV{name: c.key}
	if !slices.Contains(c.strs("status"), "VISIBLE") {
		lv.whole = hiddenPart
	}
	for _, s := range c.children {
		if !s.section {
			continue
		}
		seg, err := parseSeg(s)
		if err != nil {
			return nil, fmt.Errorf("logical volume %s: %w", lv.name, err)
		}
		lv.segs = append(lv.segs, seg)
	}
	sort.Slice(lv.segs, func(i, j int) bool { return lv.segs[i].start < lv.segs[j].start })
	var next int64
	for _, s := range lv.segs {
		if s.start != next {
			return nil, fmt.Errorf("logical volume %s: segment at extent %d, want %d", lv.name, s.start, next)
		}
		next += s.count
		if next > maxLVMExtents {
			return nil, fmt.Errorf("logical volume %s: more than %d extents", lv.name, int64(maxLVMExtents))
		}
	}
	return lv, nil
}

// parseSeg reads a segment. The areas of a striped segment (linear is one
// stripe) are pairs of a volume name and an extent; other types keep every
// string they hold as an area, so that the volumes they name (pools,
// images, origins) are known to be parts of something else.
func parseSeg(s *cfgNode) (lvmSeg, error) {
	seg := lvmSeg{}
	var ok1, ok2, ok3 bool
	seg.start, ok1 = s.int("start_extent")
	seg.count, ok2 = s.int("extent_count")
	seg.typ, ok3 = s.str("type")
	if !ok1 || !ok2 || !ok3 || seg.start < 0 || seg.start > maxLVMExtents || seg.count <= 0 || seg.count > maxLVMExtents {
		return seg, fmt.Errorf("segment %s: start %d, count %d, type %q", s.key, seg.start, seg.count, seg.typ)
	}
	if seg.typ != "striped" {
		// A name followed by a number is an area on a physical volume
		// (a pvmove's or an old mirror's legs); a name alone, a volume.
		for _, c := range s.children {
			for i, v := range c.vals {
				switch {
				case v.isNum:
				case i+1 < len(c.vals) && c.vals[i+1].isNum && c.vals[i+1].num >= 0 && c.vals[i+1].num <= maxLVMExtents:
					seg.areas = append(seg.areas, lvmArea{pv: v.str, pe: c.vals[i+1].num})
				default:
					seg.areas = append(seg.areas, lvmArea{pv: v.str, pe: -1})
				}
			}
		}
		return seg, nil
	}
	n, ok := s.int("stripe_count")
	st := s.child("stripes")
	if !ok || n < 1 || st == nil || int64(len(st.vals)) != 2*n {
		return seg, fmt.Errorf("segment %s: %d stripes, %d stripe values", s.key, n, len(st.valsOrNil()))
	}
	if seg.count%n != 0 {
		return seg, fmt.Errorf("segment %s: %d extents do not split into %d stripes", s.key, seg.count, n)
	}
	for i := 0; i < len(st.vals); i += 2 {
		name, pe := st.vals[i], st.vals[i+1]
		if name.isNum || !pe.isNum || pe.num < 0 || pe.num > maxLVMExtents {
			return seg, fmt.Errorf("segment %s: stripe %d is not a volume and an extent", s.key, i/2)
		}
		seg.areas = append(seg.areas, lvmArea{pv: name.str, pe: pe.num})
	}
	if n > 1 {
		ss, ok := s.int("stripe_size")
		if !ok || ss <= 0 || ss > 1<<32 {
			return seg, fmt.Errorf("segment %s: stripe size %d sectors", s.key, ss)
		}
		seg.stripeSize = ss * 512
	}
	return seg, nil
}

func (n *cfgNode) valsOrNil() []cfgValue {
	if n == nil {
		return nil
	}
	return n.vals
}

// hiddenPart is why a volume without VISIBLE is kept whole, until
// markWhole finds the volume it is a part of and says which.
const hiddenPart = "a hidden part of another volume"

// markWhole decides which volumes are kept whole: those with a segment
// that is not striped (thin pools and volumes, RAID, mirrors, snapshots,
// caches...), every volume such a segment names, and every volume a stripe
// of which lies on another volume rather than on a physical volume.
func (vg *lvmVG) markWhole() {
	byName := map[string]*lvmLV{}
	for _, lv := range vg.lvs {
		byName[lv.name] = lv
	}
	for _, lv := range vg.lvs {
		for _, s := range lv.segs {
			if s.typ != "striped" {
				if lv.whole == "" {
					lv.whole = "a " + s.typ + " volume"
				}
				for _, a := range s.areas {
					if o := byName[a.pv]; o != nil && o != lv && (o.whole == "" || o.whole == hiddenPart) {
						o.whole = "used by " + s.typ + " volume " + lv.name
					}
				}
				continue
			}
			for _, a := range s.areas {
				if vg.pvs[a.pv] != nil {
					continue
				}
				if o := byName[a.pv]; o != nil && o.whole == "" {
					o.whole = "a part of volume " + lv.name
				}
				if lv.whole == "" {
					lv.whole = "lies on volume " + a.pv + ", not on a physical volume"
				}
			}
		}
	}
}
