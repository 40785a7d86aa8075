package blockmap

import (
	"bytes"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

// maxReadAt fails a test that reads more than maxRead bytes at once.
type maxReadAt struct {
	t *testing.T
	r *bytes.Reader
}

func (m maxReadAt) ReadAt(b []byte, off int64) (int, error) {
	if len(b) > maxRead {
		m.t.Errorf("read of %d bytes at %d, want at most %d: the bitmap is not streamed", len(b), off, maxRead)
	}
	return m.r.ReadAt(b, off)
}

// TestStreamBitmap reads a 2.5 MiB bitmap stored in three runs of odd
// sizes, both bit orders: the same extents and count as decoding it whole,
// and no read larger than maxRead.
func TestStreamBitmap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	bm := make([]byte, 5<<19+13)
	for i := 0; i < len(bm); {
		// Runs of all-free, all-used and mixed bytes.
		n := 1 + rng.IntN(300)
		v := [3]byte{0, 0xFF, byte(rng.Uint32())}[rng.IntN(3)]
		for ; n > 0 && i < len(bm); n, i = n-1, i+1 {
			bm[i] = v
		}
	}
	nbits := uint64(len(bm))*8 - 5
	// Scatter the bitmap over the disk: runs of 1 MiB+7, 3 bytes, the rest.
	disk := make([]byte, 4<<20)
	runs := []Extent{{100, 1<<20 + 7}, {2<<20 + 1, 3}, {0, 0}}
	runs[2] = Extent{int64(len(disk)) - int64(len(bm)) + runs[0].Len + runs[1].Len - 1000, int64(len(bm)) - runs[0].Len - runs[1].Len}
	pos := 0
	for _, e := range runs {
		copy(disk[e.Off:e.End()], bm[pos:])
		pos += int(e.Len)
	}
	runs[2].Len += 1000 // storage past the bitmap's end is not read into it
	for _, msb := range []bool{false, true} {
		want := bytes.Clone(bm)
		if msb {
			for i, x := range want {
				want[i] = bits.Reverse8(x)
			}
		}
		wantExt := appendBitRuns(nil, want, nbits, 0)
		got, set, err := streamBitmap(maxReadAt{t, bytes.NewReader(disk)}, runs, nbits, msb, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, wantExt) {
			t.Errorf("streamBitmap(msbFirst=%v) = %d extents, want %d", msb, len(got), len(wantExt))
		}
		if w := countBits(want, nbits); set != w {
			t.Errorf("streamBitmap(msbFirst=%v) counts %d set bits, want %d", msb, set, w)
		}
	}
	if _, _, err := streamBitmap(bytes.NewReader(disk), runs[:2], nbits, false, nil); err == nil {
		t.Errorf("streamBitmap with too little storage = no error, want a fallback")
	}
}
