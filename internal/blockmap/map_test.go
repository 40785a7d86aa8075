package blockmap

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// sampleMap is a 100-byte disk: a table, a filesystem with two used ranges,
// and a NonZero tail.
func sampleMap() *Map {
	return &Map{Size: 100, Regions: []Region{
		{Off: 0, Len: 10, Method: MethodPartitionTable, Used: []Extent{{0, 10}}},
		{Off: 10, Len: 60, Method: MethodExt4, Used: []Extent{{10, 5}, {30, 10}}},
		nonZero(70, 30, "not in any partition"),
	}}
}

func TestMapUsed(t *testing.T) {
	m := sampleMap()
	for _, tt := range []struct {
		off, n int64
		want   bool
	}{
		{0, 1, true},
		{9, 1, true},
		{10, 5, true},
		{14, 1, true},
		{15, 15, false}, // the free range between the two used ones
		{15, 16, true},
		{29, 2, true},
		{40, 30, false},
		{40, 31, true}, // reaches the NonZero tail
		{99, 1, true},
		{100, 10, false}, // past the end
		{-5, 5, false},
		{-5, 6, true},
		{20, 0, false},
		{20, -1, false},
		{15, math.MaxInt64, true}, // overflowing end
	} {
		if got := m.Used(tt.off, tt.n); got != tt.want {
			t.Errorf("Used(%d, %d) = %v, want %v", tt.off, tt.n, got, tt.want)
		}
	}
	for _, tt := range []struct {
		off, n int64
		want   []Extent
	}{
		{0, 100, []Extent{{0, 15}, {30, 10}, {70, 30}}}, // the table and the filesystem's first range touch
		{12, 20, []Extent{{12, 3}, {30, 2}}},
		{15, 15, nil},
		{95, math.MaxInt64, []Extent{{95, 5}}},
		{-10, 5, nil},
	} {
		if got := m.UsedIn(tt.off, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("UsedIn(%d, %d) = %v, want %v", tt.off, tt.n, got, tt.want)
		}
	}
	if got, want := m.UsedBytes(), int64(10+15+30); got != want {
		t.Errorf("UsedBytes() = %d, want %d", got, want)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
	empty := &Map{}
	if empty.Used(0, 10) || empty.UsedBytes() != 0 || empty.Validate() != nil {
		t.Errorf("an empty map: Used(0, 10) = %v, UsedBytes() = %d, Validate() = %v; want false, 0, nil",
			empty.Used(0, 10), empty.UsedBytes(), empty.Validate())
	}
}

// TestMapUsedRandom compares Used with a byte-by-byte answer on random maps.
func TestMapUsedRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		size := int64(1 + rng.IntN(300))
		used := make([]bool, size)
		m := &Map{Size: size}
		for off := int64(0); off < size; {
			n := min(size-off, int64(1+rng.IntN(60)))
			r := Region{Off: off, Len: n, Method: MethodExt4}
			if rng.IntN(4) == 0 {
				r = nonZero(off, n, "")
			} else {
				for i := off; i < off+n; i++ {
					used[i] = rng.IntN(3) == 0
					if used[i] {
						r.Used = append(r.Used, Extent{i, 1})
					}
				}
				r.Used = normalize(r.Used, off, off+n)
			}
			for i := off; r.NonZero && i < off+n; i++ {
				used[i] = true
			}
			m.Regions = append(m.Regions, r)
			off += n
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("random map: %v", err)
		}
		for range 50 {
			off := int64(rng.IntN(int(size)+10)) - 5
			n := int64(rng.IntN(40))
			want := false
			for i := max(off, 0); i < min(off+n, size); i++ {
				want = want || used[i]
			}
			if got := m.Used(off, n); got != want {
				t.Fatalf("Used(%d, %d) = %v, want %v on %+v", off, n, got, want, m.Regions)
			}
			var wantIn []Extent
			for i := max(off, 0); i < min(off+n, size); i++ {
				if used[i] {
					wantIn = append(wantIn, Extent{i, 1})
				}
			}
			wantIn = normalize(wantIn, 0, size)
			if got := m.UsedIn(off, n); !slices.Equal(got, wantIn) {
				t.Fatalf("UsedIn(%d, %d) = %v, want %v on %+v", off, n, got, wantIn, m.Regions)
			}
		}
	}
}

func TestMapValidate(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(m *Map)
		want   string
	}{
		{"gap between regions", func(m *Map) { m.Regions[1].Off++; m.Regions[1].Len-- }, "does not follow"},
		{"short of the size", func(m *Map) { m.Size++ }, "regions end at 100"},
		{"past the size", func(m *Map) { m.Size-- }, "does not follow"},
		{"empty region", func(m *Map) { m.Regions = slices.Insert(m.Regions, 1, Region{Off: 10}) }, "does not follow"},
		{"extent outside its region", func(m *Map) { m.Regions[1].Used[0].Off = 5 }, "outside"},
		{"unsorted extents", func(m *Map) { m.Regions[1].Used[0], m.Regions[1].Used[1] = m.Regions[1].Used[1], m.Regions[1].Used[0] }, "unsorted"},
		{"touching extents", func(m *Map) { m.Regions[1].Used[0].Len = 20 }, "touching"},
		{"empty extent", func(m *Map) { m.Regions[1].Used[0].Len = 0 }, "empty"},
		{"NonZero not used", func(m *Map) { m.Regions[2].Used = nil }, "NonZero"},
		{"negative size", func(m *Map) { m.Size, m.Regions = -1, nil }, "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := sampleMap()
			tt.mutate(m)
			if err := m.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	for _, tt := range []struct {
		in     []Extent
		lo, hi int64
		want   []Extent
	}{
		{nil, 0, 10, nil},
		{[]Extent{{5, 2}, {0, 2}, {1, 3}}, 0, 10, []Extent{{0, 4}, {5, 2}}},
		{[]Extent{{0, 2}, {2, 2}}, 0, 10, []Extent{{0, 4}}}, // touching: merged
		{[]Extent{{-5, 10}, {8, 10}, {20, 1}, {3, 0}}, 0, 10, []Extent{{0, 5}, {8, 2}}},
		{[]Extent{{0, 100}, {10, 5}}, 0, 50, []Extent{{0, 50}}},
	} {
		if got := normalize(slices.Clone(tt.in), tt.lo, tt.hi); !slices.Equal(got, tt.want) {
			t.Errorf("normalize(%v, %d, %d) = %v, want %v", tt.in, tt.lo, tt.hi, got, tt.want)
		}
	}
}

// TestBitRuns compares appendBitRuns and countBits with a bit-by-bit answer,
// for lengths around word boundaries and bitmaps of runs and of noise.
func TestBitRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []uint64{0, 1, 7, 8, 63, 64, 65, 127, 128, 129, 1000, 8192} {
		for trial := range 20 {
			b := make([]byte, (n+7)/8+8)
			switch trial % 4 {
			case 0: // noise
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
			case 1: // long runs
				on := false
				for i := uint64(0); i < uint64(len(b))*8; i++ {
					if rng.IntN(50) == 0 {
						on = !on
					}
					if on {
						b[i/8] |= 1 << (i % 8)
					}
				}
			case 2: // all ones
				for i := range b {
					b[i] = 0xFF
				}
			}
			var want []Extent
			var count uint64
			for i := range n {
				if b[i/8]&(1<<(i%8)) != 0 {
					count++
					want = append(want, Extent{100 + int64(i), 1})
				}
			}
			want = normalize(want, 0, math.MaxInt64)
			if got := appendBitRuns(nil, b, n, 100); !slices.Equal(got, want) {
				t.Fatalf("appendBitRuns(%x, %d) = %v, want %v", b, n, got, want)
			}
			if got := countBits(b, n); got != count {
				t.Fatalf("countBits(%x, %d) = %d, want %d", b, n, got, count)
			}
		}
	}
	// A run that continues one already in dst is merged with it.
	got := appendBitRuns([]Extent{{90, 10}}, []byte{0x03}, 8, 100)
	if want := []Extent{{90, 12}}; !slices.Equal(got, want) {
		t.Errorf("appendBitRuns after a touching extent = %v, want %v", got, want)
	}
}

func TestHasSuper(t *testing.T) {
	sparse := &extSuper{roCompat: extRoCompatSparseSuper}
	var got []uint64
	for g := range uint64(400) {
		if sparse.hasSuper(g) {
			got = append(got, g)
		}
	}
	if want := []uint64{0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343}; !slices.Equal(got, want) {
		t.Errorf("sparse_super backups in groups %v, want %v", got, want)
	}
	two := &extSuper{compat: extCompatSparseSuper2, backupBGs: [2]uint64{1, 37}}
	for g, want := range map[uint64]bool{0: true, 1: true, 3: false, 37: true, 38: false} {
		if got := two.hasSuper(g); got != want {
			t.Errorf("sparse_super2 hasSuper(%d) = %v, want %v", g, got, want)
		}
	}
	if all := (&extSuper{}); !all.hasSuper(6) {
		t.Errorf("without sparse_super, group 6 has no backup, want one in every group")
	}
}
