package image

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/asrlinux/asr/internal/blockmap"
)

// TestScanWithMap scans a disk of random chunks (old data everywhere) with a
// map that calls only some bytes used: chunks with no used byte must become
// unused and not be stored, free bytes inside used chunks must read back as
// zeros, and the header must carry the flag that makes older readers refuse.
func TestScanWithMap(t *testing.T) {
	kinds := []chunkKind{random, random, random, random, random, random}
	disk := synthDisk(kinds, testChunk, 0, 7)
	cs := int64(testChunk)
	used := []blockmap.Extent{
		{Off: 0, Len: 4096},         // chunk 0: one used block, the rest free
		{Off: 2*cs + 8192, Len: cs}, // spans chunks 2 and 3
		{Off: 5 * cs, Len: cs},      // chunk 5 whole
	}
	m := &blockmap.Map{Size: int64(len(disk)), Regions: []blockmap.Region{{Off: 0, Len: int64(len(disk)), Method: blockmap.MethodExt4, Used: used}}}
	if err := m.Validate(); err != nil {
		t.Fatalf("test map is invalid: %v", err)
	}
	opts := scanOpts(3)
	opts.Map = m
	p, man, _ := scanFile(t, bytes.NewReader(disk), opts)

	want := []Codec{CodecZstd, CodecUnused, CodecZstd, CodecZstd, CodecUnused, CodecRaw}
	for i, c := range man.Chunks {
		if c.Codec != want[i] {
			t.Errorf("chunk %d codec = %s, want %s", i, c.Codec, want[i])
		}
	}
	if s := man.Stats(); s.UnusedChunks != 2 || s.StoredChunks != 4 {
		t.Errorf("Stats() = %+v, want 2 unused and 4 stored chunks", s)
	}
	im := mustOpen(t, p)
	h, err := ParseHeader(mustRead(t, p)[:HeaderSize])
	if err != nil || h.Flags&FlagUnused == 0 {
		t.Errorf("header flags = %#x (%v), want FlagUnused set", h.Flags, err)
	}
	// What the image holds: the used bytes as they were, zeros elsewhere.
	expect := make([]byte, len(disk))
	for _, e := range used {
		copy(expect[e.Off:e.End()], disk[e.Off:e.End()])
	}
	for i := range man.Chunks {
		got, _, err := im.ReadChunk(i, nil, nil)
		if err != nil {
			t.Fatalf("ReadChunk(%d) = %v", i, err)
		}
		off := int64(i) * cs
		if !bytes.Equal(got, expect[off:off+int64(len(got))]) {
			t.Errorf("chunk %d does not hold the used bytes and zeros elsewhere", i)
		}
	}

	// Without the flag, an image with unused chunks is corrupt.
	b := mustRead(t, p)
	h.Flags = 0
	copy(b, MarshalHeader(h))
	if _, err := Open(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open(unused chunks, no flag) = %v, want %v", err, ErrCorrupt)
	}
}

// TestScanWithoutUnusedHasNoFlag: a map that calls everything used gives an
// image without the flag, readable by asr versions that predate it.
func TestScanWithoutUnusedHasNoFlag(t *testing.T) {
	disk := synthDisk(mixedKinds, testChunk, mixedTail, 3)
	n := int64(len(disk))
	opts := scanOpts(2)
	opts.Map = &blockmap.Map{Size: n, Regions: []blockmap.Region{{Off: 0, Len: n, Method: blockmap.MethodNonZero, NonZero: true, Used: []blockmap.Extent{{Off: 0, Len: n}}}}}
	p, _, d1 := scanFile(t, bytes.NewReader(disk), opts)
	_, _, d2 := scanFile(t, bytes.NewReader(disk), scanOpts(2))
	if d1 != d2 {
		t.Errorf("digest with an all-used map = %s, without a map %s: want equal", d1, d2)
	}
	if h, _ := ParseHeader(mustRead(t, p)[:HeaderSize]); h.Flags != FlagBLAKE3 {
		t.Errorf("header flags = %#x, want only FlagBLAKE3", h.Flags)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// trapReader reads a disk by offset only, and fails any read of the bytes
// it was told must not be read.
type trapReader struct {
	r   *bytes.Reader
	bad []blockmap.Extent
}

func (t *trapReader) Read([]byte) (int, error) { return 0, errors.New("read in order, want ReadAt") }

func (t *trapReader) ReadAt(p []byte, off int64) (int, error) {
	for _, e := range t.bad {
		if off < e.End() && e.Off < off+int64(len(p)) {
			return 0, fmt.Errorf("read of free space at byte %d", off)
		}
	}
	return t.r.ReadAt(p, off)
}

// TestScanSkipsFreeSpace: with a map and random access, chunks of free
// space are never read.
func TestScanSkipsFreeSpace(t *testing.T) {
	disk := synthDisk([]chunkKind{text, random, text, random}, testChunk, 0, 5)
	cs := int64(testChunk)
	m := &blockmap.Map{Size: int64(len(disk)), Regions: []blockmap.Region{{Off: 0, Len: int64(len(disk)), Method: blockmap.MethodExt4,
		Used: []blockmap.Extent{{Off: 0, Len: cs}, {Off: 2 * cs, Len: cs}}}}}
	opts := scanOpts(2)
	opts.Map = m
	src := &trapReader{r: bytes.NewReader(disk), bad: []blockmap.Extent{{Off: cs, Len: cs}, {Off: 3 * cs, Len: cs}}}
	_, man, _ := scanFile(t, src, opts)
	if s := man.Stats(); s.UnusedChunks != 2 || man.LogicalSize != int64(len(disk)) {
		t.Errorf("Stats() = %+v, size %d; want 2 unused chunks of a %d-byte disk", s, man.LogicalSize, len(disk))
	}
}
