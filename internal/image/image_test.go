package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

const testChunk = MinChunkSize // 64 KiB: small disks, many chunks

var testCreated = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// chunkKind says what a chunk of a synthetic disk holds.
type chunkKind int

const (
	zeros  chunkKind = iota // all zero: not stored
	random                  // incompressible: stored raw
	text                    // compressible: stored as zstd
	sparse                  // zeros but for one byte: must be stored
)

// synthDisk builds a disk of whole chunks of the given kinds followed by a
// short text tail of tail bytes.
func synthDisk(kinds []chunkKind, cs, tail int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	var d []byte
	fill := func(kind chunkKind, n int) {
		b := make([]byte, n)
		switch kind {
		case random:
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
		case text:
			var s strings.Builder
			for s.Len() < n {
				fmt.Fprintf(&s, "line %d of a log file: worker %d finished job %d\n", s.Len(), rng.IntN(8), rng.IntN(1000))
			}
			copy(b, s.String())
		case sparse:
			b[n-1] = 1
		}
		d = append(d, b...)
	}
	for _, k := range kinds {
		fill(k, cs)
	}
	if tail > 0 {
		fill(text, tail)
	}
	return d
}

// mixedKinds is the standard test disk: every kind of chunk, zero chunks at
// the start, in the middle and before the tail.
var mixedKinds = []chunkKind{zeros, text, random, zeros, zeros, text, sparse, random, zeros}

const mixedTail = 10000 // not a multiple of 4096

func scanOpts(workers int) ScanOptions {
	return ScanOptions{ChunkSize: testChunk, Workers: workers, Created: testCreated, Name: "disk.img", Tool: "asr test"}
}

// scanFile scans src into a new file under t.TempDir() and returns its path.
func scanFile(t *testing.T, src io.Reader, opts ScanOptions) (string, *Manifest, Digest) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.asr")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, d, err := Scan(context.Background(), src, f, opts)
	if err != nil {
		t.Fatalf("Scan = %v, want nil", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, m, d
}

// openFile opens an image file with its real size.
func openFile(t *testing.T, p string) (*Image, error) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Open(f, fi.Size())
}

// mustOpen opens an image file that must be good.
func mustOpen(t *testing.T, p string) *Image {
	t.Helper()
	im, err := openFile(t, p)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", p, err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

func TestRoundTrip(t *testing.T) {
	disk := synthDisk(mixedKinds, testChunk, mixedTail, 1)
	var progress []int64
	opts := scanOpts(3)
	opts.Progress = func(done int64) { progress = append(progress, done) }
	p, sm, sd := scanFile(t, bytes.NewReader(disk), opts)
	im := mustOpen(t, p)
	m := im.Manifest

	if im.Digest != sd {
		t.Errorf("Open digest = %s, Scan returned %s", im.Digest, sd)
	}
	if !bytes.Equal(MarshalManifest(m), MarshalManifest(sm)) {
		t.Errorf("Open manifest = %+v, Scan returned %+v", m, sm)
	}
	if want := Digest(sha256.Sum256(MarshalManifest(m))); im.Digest != want {
		t.Errorf("Open digest = %s, want SHA-256 of the manifest %s", im.Digest, want)
	}
	if m.LogicalSize != int64(len(disk)) || m.ChunkSize != testChunk {
		t.Errorf("manifest logical size %d, chunk size %d; want %d, %d", m.LogicalSize, m.ChunkSize, len(disk), testChunk)
	}
	if !m.Created.Equal(testCreated) || m.Name != "disk.img" || m.Tool != "asr test" {
		t.Errorf("manifest created %v, name %q, tool %q; want %v, %q, %q", m.Created, m.Name, m.Tool, testCreated, "disk.img", "asr test")
	}
	if m.DataOffset%4096 != 0 {
		t.Errorf("data offset %d, want a multiple of 4096", m.DataOffset)
	}

	kinds := append(append([]chunkKind(nil), mixedKinds...), text)
	if len(m.Chunks) != len(kinds) {
		t.Fatalf("manifest has %d chunks, want %d", len(m.Chunks), len(kinds))
	}
	wantCodec := map[chunkKind]Codec{zeros: CodecZero, random: CodecRaw, text: CodecZstd, sparse: CodecZstd}
	var want Stats
	want.Chunks = len(kinds)
	for i, c := range m.Chunks {
		orig := disk[i*testChunk : min((i+1)*testChunk, len(disk))]
		if got := m.ChunkLen(i); got != len(orig) {
			t.Errorf("ChunkLen(%d) = %d, want %d", i, got, len(orig))
		}
		if c.Codec != wantCodec[kinds[i]] {
			t.Errorf("chunk %d codec = %s, want %s", i, c.Codec, wantCodec[kinds[i]])
		}
		if c.Codec == CodecZero {
			want.ZeroChunks++
			if c.Offset != 0 || c.Length != 0 || c.Sum != ([32]byte{}) {
				t.Errorf("zero chunk %d = %+v, want nothing stored", i, c)
			}
		} else {
			want.StoredChunks++
			want.StoredBytes += int64(c.Length)
			want.UsedBytes += int64(len(orig))
			if c.Sum != HashBLAKE3.Sum(orig) {
				t.Errorf("chunk %d sum = %x, want the BLAKE3 of its bytes", i, c.Sum)
			}
		}
		// A dst full of garbage shows that zero chunks are really zeroed.
		dst := bytes.Repeat([]byte{0xAA}, testChunk)
		got, _, err := im.ReadChunk(i, dst, nil)
		if err != nil {
			t.Errorf("ReadChunk(%d) = %v, want nil", i, err)
			continue
		}
		if !bytes.Equal(got, orig) {
			t.Errorf("ReadChunk(%d) = %d bytes differing from the original %d bytes", i, len(got), len(orig))
		}
	}
	if want.ZeroChunks != 4 || want.StoredChunks != 6 {
		t.Fatalf("test disk has %d zero and %d stored chunks, want 4 and 6", want.ZeroChunks, want.StoredChunks)
	}
	if got := m.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}

	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != m.FileSize() || fi.Size() != m.DataOffset+want.StoredBytes {
		t.Errorf("file is %d bytes; FileSize() = %d, data offset + stored bytes = %d", fi.Size(), m.FileSize(), m.DataOffset+want.StoredBytes)
	}
	// Zero chunks take no room: the file is smaller than the stored chunks'
	// uncompressed bytes plus the header area.
	if fi.Size() >= m.DataOffset+want.UsedBytes {
		t.Errorf("file is %d bytes, want less than %d: compressible chunks not compressed", fi.Size(), m.DataOffset+want.UsedBytes)
	}

	// Progress is reported in order and ends at the logical size.
	for i := 1; i < len(progress); i++ {
		if progress[i] <= progress[i-1] {
			t.Errorf("progress %v: want strictly increasing", progress)
			break
		}
	}
	if len(progress) == 0 || progress[len(progress)-1] != int64(len(disk)) {
		t.Errorf("progress %v: want it to end at %d", progress, len(disk))
	}

	// Scan leaves no spool file behind.
	ents, err := os.ReadDir(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("Scan left %v in the output directory, want only %s", names, filepath.Base(p))
	}
}

// TestRoundTripSizes scans disks whose sizes fall on and around chunk and
// page boundaries.
func TestRoundTripSizes(t *testing.T) {
	for _, size := range []int{1, 4095, 4096, 4097, testChunk - 1, testChunk, testChunk + 1, 2*testChunk + 4096} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			disk := synthDisk(nil, testChunk, size, uint64(size))
			p, _, _ := scanFile(t, bytes.NewReader(disk), scanOpts(2))
			im := mustOpen(t, p)
			if im.Manifest.LogicalSize != int64(size) {
				t.Errorf("logical size = %d, want %d", im.Manifest.LogicalSize, size)
			}
			var got []byte
			for i := range im.Manifest.Chunks {
				b, _, err := im.ReadChunk(i, nil, nil)
				if err != nil {
					t.Fatalf("ReadChunk(%d) = %v, want nil", i, err)
				}
				got = append(got, b...)
			}
			if !bytes.Equal(got, disk) {
				t.Errorf("read back %d bytes differing from the %d-byte disk", len(got), len(disk))
			}
		})
	}
}

// TestAllZeroDisk: nothing is stored, yet every chunk reads back.
func TestAllZeroDisk(t *testing.T) {
	disk := make([]byte, 3*testChunk+100)
	p, _, _ := scanFile(t, bytes.NewReader(disk), scanOpts(2))
	im := mustOpen(t, p)
	if s := im.Manifest.Stats(); s.StoredChunks != 0 || s.ZeroChunks != 4 || s.StoredBytes != 0 {
		t.Errorf("Stats() = %+v, want 4 zero chunks and nothing stored", s)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != im.Manifest.DataOffset {
		t.Errorf("all-zero image is %d bytes, want %d (the header area only)", fi.Size(), im.Manifest.DataOffset)
	}
	for i := range im.Manifest.Chunks {
		b, _, err := im.ReadChunk(i, nil, nil)
		if err != nil || len(b) != im.Manifest.ChunkLen(i) || !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("ReadChunk(%d) = %d bytes, %v; want %d zeros", i, len(b), err, im.Manifest.ChunkLen(i))
		}
	}
}

func TestDeterministic(t *testing.T) {
	disk := synthDisk(mixedKinds, testChunk, mixedTail, 2)
	p1, _, d1 := scanFile(t, bytes.NewReader(disk), scanOpts(1))
	want, err := os.ReadFile(p1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		src     io.Reader
		workers int
	}{
		{"same options again", bytes.NewReader(disk), 1},
		{"4 workers", bytes.NewReader(disk), 4},
		{"16 workers", bytes.NewReader(disk), 16},
		{"short reads", iotest.HalfReader(bytes.NewReader(disk)), 4},
		{"one byte reads", iotest.OneByteReader(bytes.NewReader(disk)), 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, _, d := scanFile(t, tt.src, scanOpts(tt.workers))
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if d != d1 {
				t.Errorf("digest = %s, want %s as with 1 worker", d, d1)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("image is %d bytes differing from the %d bytes scanned with 1 worker", len(got), len(want))
			}
		})
	}
	// The creation time is part of the image.
	opts := scanOpts(1)
	opts.Created = testCreated.Add(time.Second)
	_, _, d := scanFile(t, bytes.NewReader(disk), opts)
	if d == d1 {
		t.Errorf("digest with another creation time = %s, want a different one", d)
	}
}

// TestScanOverwrites scans into a file that already holds a longer image:
// nothing of the old one may remain.
func TestScanOverwrites(t *testing.T) {
	big := synthDisk([]chunkKind{random, random, random}, testChunk, 0, 3)
	small := synthDisk([]chunkKind{text}, testChunk, 100, 4)
	p, _, _ := scanFile(t, bytes.NewReader(big), scanOpts(1))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, _, err := Scan(context.Background(), bytes.NewReader(small), f, scanOpts(1))
	if err != nil {
		t.Fatalf("Scan = %v, want nil", err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != m.FileSize() {
		t.Errorf("rescanned file is %d bytes, want %d", fi.Size(), m.FileSize())
	}
}

func TestScanChunkSize(t *testing.T) {
	disk := synthDisk([]chunkKind{text}, testChunk, 0, 5)
	for _, tt := range []struct {
		size int
		ok   bool
	}{
		{0, true}, // the default
		{MinChunkSize, true},
		{MinChunkSize + 4096, true},
		{1 << 20, true},
		{MaxChunkSize, true},
		{-4096, false},
		{4096, false},
		{MinChunkSize - 4096, false},
		{MinChunkSize + 1, false},
		{MinChunkSize + 512, false},
		{MaxChunkSize + 4096, false},
		{1 << 30, false},
	} {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "out.asr"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			opts := scanOpts(1)
			opts.ChunkSize = tt.size
			m, _, err := Scan(context.Background(), bytes.NewReader(disk), f, opts)
			if tt.ok {
				want := tt.size
				if want == 0 {
					want = DefaultChunkSize
				}
				if err != nil || int(m.ChunkSize) != want {
					t.Errorf("Scan(chunk size %d) = %v, want chunk size %d and no error", tt.size, err, want)
				}
				return
			}
			if err == nil {
				t.Errorf("Scan(chunk size %d) = nil error, want one", tt.size)
			}
		})
	}
}

func TestScanEmptySource(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "out.asr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := Scan(context.Background(), bytes.NewReader(nil), f, scanOpts(1)); err == nil {
		t.Errorf("Scan(empty source) = nil error, want one")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("Scan(empty source) left %d files in the output directory, want only the output", len(ents))
	}
}

func TestScanSourceError(t *testing.T) {
	boom := errors.New("disk on fire")
	disk := synthDisk(mixedKinds, testChunk, 0, 6)
	src := io.MultiReader(bytes.NewReader(disk), iotest.ErrReader(boom))
	f, err := os.Create(filepath.Join(t.TempDir(), "out.asr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := Scan(context.Background(), src, f, scanOpts(4)); !errors.Is(err, boom) {
		t.Errorf("Scan(source failing after %d bytes) = %v, want %v", len(disk), err, boom)
	}
}

// endless is a source that never ends.
type endless struct{}

func (endless) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(i)
	}
	return len(b), nil
}

func TestScanCancel(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out.asr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := scanOpts(4)
	opts.Progress = func(done int64) {
		if done >= 8*testChunk {
			cancel()
		}
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := Scan(ctx, endless{}, f, opts)
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Scan(endless source, cancelled) = %v, want %v", err, context.Canceled)
		}
	case <-time.After(time.Minute):
		t.Fatalf("Scan(endless source) still running a minute after its context was cancelled")
	}
}

// TestScanLongName scans with a Name longer than the reader accepts: Scan
// must either refuse it or write an image that opens.
func TestScanLongName(t *testing.T) {
	disk := synthDisk([]chunkKind{text}, testChunk, 0, 7)
	for _, n := range []int{4096, 4097, 70000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			opts := scanOpts(1)
			opts.Name = strings.Repeat("n", n)
			p := filepath.Join(t.TempDir(), "out.asr")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, _, err := Scan(context.Background(), bytes.NewReader(disk), f, opts); err != nil {
				return // refused: fine
			}
			if _, err := openFile(t, p); err != nil {
				t.Errorf("Scan(Name of %d bytes) succeeded, but Open of the image it wrote = %v, want nil", n, err)
			}
		})
	}
}

// testImage scans the standard mixed disk once and returns the image bytes
// and the disk.
func testImage(t *testing.T) (img, disk []byte, m *Manifest) {
	t.Helper()
	disk = synthDisk(mixedKinds, testChunk, mixedTail, 8)
	p, m, _ := scanFile(t, bytes.NewReader(disk), scanOpts(2))
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return img, disk, m
}

// writeImage writes image bytes to a new file and returns its path.
func writeImage(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.asr")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCorruptChunk(t *testing.T) {
	img, disk, m := testImage(t)
	for i, c := range m.Chunks {
		if !c.Codec.Stored() {
			continue
		}
		for _, at := range []int64{0, int64(c.Length) / 2, int64(c.Length) - 1} {
			t.Run(fmt.Sprintf("chunk %d %s byte %d", i, c.Codec, at), func(t *testing.T) {
				b := bytes.Clone(img)
				b[c.Offset+at] ^= 0x04
				im := mustOpen(t, writeImage(t, b))
				for j := range m.Chunks {
					got, _, err := im.ReadChunk(j, nil, nil)
					if j == i {
						if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("chunk %d ", i)) {
							t.Errorf("ReadChunk(%d) of a chunk with a flipped bit = %v, want %v naming chunk %d", j, err, ErrCorrupt, i)
						}
						if got != nil {
							t.Errorf("ReadChunk(%d) of a chunk with a flipped bit returned %d bytes, want none", j, len(got))
						}
						continue
					}
					orig := disk[j*testChunk : min((j+1)*testChunk, len(disk))]
					if err != nil || !bytes.Equal(got, orig) {
						t.Errorf("ReadChunk(%d) beside a corrupt chunk %d = %d bytes, %v; want the original %d bytes", j, i, len(got), err, len(orig))
					}
				}
			})
		}
	}
}

func TestCorruptManifest(t *testing.T) {
	img, _, m := testImage(t)
	mlen := len(MarshalManifest(m))
	for off := HeaderSize; off < HeaderSize+mlen; off++ {
		for bit := range 8 {
			img[off] ^= 1 << bit
			if _, err := Open(bytes.NewReader(img), int64(len(img))); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open(image with bit %d of manifest byte %d flipped) = %v, want %v", bit, off-HeaderSize, err, ErrCorrupt)
			}
			img[off] ^= 1 << bit
		}
	}
}

func TestCorruptHeader(t *testing.T) {
	img, _, _ := testImage(t)
	// Bytes 60 to 63 are covered by TestHeaderReservedBytes.
	for off := range 60 {
		for bit := range 8 {
			img[off] ^= 1 << bit
			want := ErrCorrupt // the header CRC catches it
			if off < len(Magic) {
				want = ErrNotImage
			}
			if _, err := Open(bytes.NewReader(img), int64(len(img))); !errors.Is(err, want) {
				t.Errorf("Open(image with bit %d of header byte %d flipped) = %v, want %v", bit, off, err, want)
			}
			img[off] ^= 1 << bit
		}
	}
}

// TestHeaderReservedBytes flips bits in the last four bytes of the header,
// after its CRC. A damaged header must not open as a good one: the bytes must
// either be checked or be covered by the CRC.
func TestHeaderReservedBytes(t *testing.T) {
	img, _, _ := testImage(t)
	for off := 60; off < HeaderSize; off++ {
		b := bytes.Clone(img)
		b[off] ^= 0x01
		if _, err := Open(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("Open(image with a bit of header byte %d flipped) = nil error, want one", off)
		}
		if h, err := ParseHeader(b[:HeaderSize]); err == nil && !bytes.Equal(MarshalHeader(h), b[:HeaderSize]) {
			t.Errorf("ParseHeader(header with byte %d = %#x) accepted a header that MarshalHeader does not reproduce", off, b[off])
		}
	}
}

func TestWrongMagic(t *testing.T) {
	img, _, _ := testImage(t)
	for _, magic := range []string{"ASRIMG\n\n", "asrimg\r\n", "\x00\x00\x00\x00\x00\x00\x00\x00", "PK\x03\x04\x14\x00\x00\x00"} {
		b := bytes.Clone(img)
		copy(b, magic)
		if _, err := Open(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrNotImage) {
			t.Errorf("Open(image with magic %q) = %v, want %v", magic, err, ErrNotImage)
		}
	}
	// A raw disk handed over by mistake.
	disk := synthDisk(mixedKinds, testChunk, 0, 9)
	if _, err := Open(bytes.NewReader(disk), int64(len(disk))); !errors.Is(err, ErrNotImage) {
		t.Errorf("Open(raw disk) = %v, want %v", err, ErrNotImage)
	}
}

func TestNewerHeader(t *testing.T) {
	img, _, _ := testImage(t)
	h, err := ParseHeader(img[:HeaderSize])
	if err != nil {
		t.Fatalf("ParseHeader(good image) = %v", err)
	}
	for _, tt := range []struct {
		name string
		h    Header
	}{
		{"version 2", Header{Version: 2, ManifestLen: h.ManifestLen, ManifestDigest: h.ManifestDigest}},
		{"version 0", Header{Version: 0, ManifestLen: h.ManifestLen, ManifestDigest: h.ManifestDigest}},
		{"unknown flag", Header{Version: Version, Flags: 4, ManifestLen: h.ManifestLen, ManifestDigest: h.ManifestDigest}},
	} {
		b := bytes.Clone(img)
		copy(b, MarshalHeader(tt.h))
		if _, err := Open(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrVersion) {
			t.Errorf("Open(image with %s) = %v, want %v", tt.name, err, ErrVersion)
		}
	}
}

func TestParseHeader(t *testing.T) {
	good := Header{Version: Version, ManifestLen: 1000, ManifestDigest: [32]byte{1, 2, 3}}
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"good", MarshalHeader(good), nil},
		{"longer input", append(MarshalHeader(good), 1, 2, 3), nil},
		{"empty", nil, ErrTruncated},
		{"63 bytes", MarshalHeader(good)[:63], ErrTruncated},
		{"manifest too short", MarshalHeader(Header{Version: Version, ManifestLen: fixedManifest - 1}), ErrCorrupt},
		{"manifest shortest", MarshalHeader(Header{Version: Version, ManifestLen: fixedManifest}), nil},
		{"manifest longest", MarshalHeader(Header{Version: Version, ManifestLen: 256 << 20}), nil},
		{"manifest too long", MarshalHeader(Header{Version: Version, ManifestLen: 256<<20 + 1}), ErrCorrupt},
		{"manifest length 2^64-1", MarshalHeader(Header{Version: Version, ManifestLen: ^uint64(0)}), ErrCorrupt},
	} {
		h, err := ParseHeader(tt.b)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("ParseHeader(%s) = %v, want %v", tt.name, err, tt.want)
			continue
		}
		if err == nil && !bytes.Equal(MarshalHeader(h), tt.b[:HeaderSize]) {
			t.Errorf("MarshalHeader(ParseHeader(%s)) = %x, want %x", tt.name, MarshalHeader(h), tt.b[:HeaderSize])
		}
	}
}

func TestTruncated(t *testing.T) {
	img, _, m := testImage(t)
	mlen := len(MarshalManifest(m))
	last := m.Chunks[len(m.Chunks)-1]
	if !last.Codec.Stored() {
		t.Fatalf("test image's last chunk is %s, want a stored one", last.Codec)
	}
	for _, tt := range []struct {
		name string
		n    int
	}{
		{"empty", 0},
		{"in the magic", 5},
		{"in the header", HeaderSize - 1},
		{"after the header", HeaderSize},
		{"in the manifest", HeaderSize + mlen/2},
		{"one byte short of the manifest", HeaderSize + mlen - 1},
		{"in the first stored chunk", int(m.DataOffset) + 10},
		{"in the last chunk", len(img) - 1},
		{"before the last chunk", int(last.Offset)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := img[:tt.n]
			if _, err := openFile(t, writeImage(t, b)); !errors.Is(err, ErrTruncated) {
				t.Errorf("Open(image cut to %d of %d bytes) = %v, want %v", tt.n, len(img), err, ErrTruncated)
			}
		})
	}

	// With the size unknown, Open cannot tell; reading the lost chunk can.
	b := img[:len(img)-1]
	im, err := Open(bytes.NewReader(b), -1)
	if err != nil {
		t.Fatalf("Open(cut image, size -1) = %v, want nil", err)
	}
	defer im.Close()
	i := len(m.Chunks) - 1
	if _, _, err := im.ReadChunk(i, nil, nil); !errors.Is(err, ErrTruncated) {
		t.Errorf("ReadChunk(%d) of a cut image = %v, want %v", i, err, ErrTruncated)
	}
	if _, _, err := im.ReadChunk(1, nil, nil); err != nil {
		t.Errorf("ReadChunk(1) of a cut image = %v, want nil: that chunk is whole", err)
	}
}

// TestReadManifestStream reads an image as a stream, as from an HTTP body or
// multicast: ReadManifest takes exactly the header and manifest, and the
// chunks that follow decode to the disk.
func TestReadManifestStream(t *testing.T) {
	img, disk, sm := testImage(t)
	r := bytes.NewReader(img)
	m, d, err := ReadManifest(r)
	if err != nil {
		t.Fatalf("ReadManifest = %v, want nil", err)
	}
	mlen := len(MarshalManifest(sm))
	if read := len(img) - r.Len(); read != HeaderSize+mlen {
		t.Errorf("ReadManifest read %d bytes, want %d (header and manifest)", read, HeaderSize+mlen)
	}
	if want := Digest(sha256.Sum256(img[HeaderSize : HeaderSize+mlen])); d != want {
		t.Errorf("ReadManifest digest = %s, want %s", d, want)
	}
	if _, err := io.CopyN(io.Discard, r, m.DataOffset-int64(HeaderSize+mlen)); err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var got []byte
	for i, c := range m.Chunks {
		stored := make([]byte, c.Length)
		if _, err := io.ReadFull(r, stored); err != nil {
			t.Fatalf("reading chunk %d from the stream: %v", i, err)
		}
		b, err := dec.DecodeChunk(m, i, stored, nil)
		if err != nil {
			t.Fatalf("DecodeChunk(%d) = %v, want nil", i, err)
		}
		got = append(got, b...)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left in the stream after the last chunk, want 0", r.Len())
	}
	if !bytes.Equal(got, disk) {
		t.Errorf("stream decodes to %d bytes differing from the %d-byte disk", len(got), len(disk))
	}

	// A stream cut short.
	for _, n := range []int{0, 10, HeaderSize, HeaderSize + mlen - 1} {
		if _, _, err := ReadManifest(bytes.NewReader(img[:n])); !errors.Is(err, ErrTruncated) {
			t.Errorf("ReadManifest(first %d bytes) = %v, want %v", n, err, ErrTruncated)
		}
	}
	// A failing stream is not reported as a truncated image.
	boom := errors.New("connection reset")
	for _, n := range []int{10, HeaderSize + 5} {
		src := io.MultiReader(bytes.NewReader(img[:n]), iotest.ErrReader(boom))
		if _, _, err := ReadManifest(src); !errors.Is(err, boom) {
			t.Errorf("ReadManifest(stream failing after %d bytes) = %v, want %v", n, err, boom)
		}
	}
}

// TestReadChunkConcurrent reads every chunk from many goroutines at once,
// as the restore workers do; run with -race.
func TestReadChunkConcurrent(t *testing.T) {
	img, disk, _ := testImage(t)
	im := mustOpen(t, writeImage(t, img))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			var dst, scratch []byte
			for k := range 3 * len(im.Manifest.Chunks) {
				i := (g + k) % len(im.Manifest.Chunks)
				var err error
				dst, scratch, err = im.ReadChunk(i, dst, scratch)
				orig := disk[i*testChunk : min((i+1)*testChunk, len(disk))]
				if err != nil || !bytes.Equal(dst, orig) {
					t.Errorf("concurrent ReadChunk(%d) = %d bytes, %v; want the original %d bytes", i, len(dst), err, len(orig))
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestCodecString(t *testing.T) {
	for c, want := range map[Codec]string{CodecZero: "zero", CodecRaw: "raw", CodecZstd: "zstd", 7: "codec(7)"} {
		if got := c.String(); got != want {
			t.Errorf("Codec(%d).String() = %q, want %q", uint8(c), got, want)
		}
	}
}

// TestManifestReservedBytes sets the reserved bytes of a chunk entry, which
// FORMAT.md says are 0, and gives the image a header that matches its
// manifest: a reader must refuse it (it checks "the manifest's fields against
// the rules above"), or the same disk could have images with different
// digests.
func TestManifestReservedBytes(t *testing.T) {
	img, _, m := testImage(t)
	mlen := len(MarshalManifest(m))
	seen := map[Codec]bool{}
	for i, c := range m.Chunks {
		if seen[c.Codec] {
			continue // one entry of each codec is enough
		}
		seen[c.Codec] = true
		for _, k := range []int{13, 15} {
			b := bytes.Clone(img)
			mb := b[HeaderSize : HeaderSize+mlen]
			mb[mlen-(len(m.Chunks)-i)*entrySize+k] = 1
			copy(b, MarshalHeader(Header{Version: Version, ManifestLen: uint64(mlen), ManifestDigest: sha256.Sum256(mb)}))
			if _, err := Open(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open(image with reserved byte %d of %s chunk %d's entry set) = %v, want %v", k, c.Codec, i, err, ErrCorrupt)
			}
		}
	}
}

// BenchmarkScan scans 32 MiB of compressible data with one worker and with
// one per CPU; compare the two to see whether compression runs in parallel.
func BenchmarkScan(b *testing.B) {
	disk := synthDisk(nil, DefaultChunkSize, 32<<20, 10)
	for _, w := range []int{1, runtime.NumCPU()} {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			b.SetBytes(int64(len(disk)))
			p := filepath.Join(b.TempDir(), "out.asr")
			for b.Loop() {
				f, err := os.Create(p)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := Scan(context.Background(), bytes.NewReader(disk), f, ScanOptions{Workers: w, Created: testCreated}); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}
