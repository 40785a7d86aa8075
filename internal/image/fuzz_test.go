package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/zeebo/blake3"
)

func FuzzParseHeader(f *testing.F) {
	good := Header{Version: Version, ManifestLen: 4000, ManifestDigest: sha256.Sum256([]byte("manifest"))}
	f.Add(MarshalHeader(good))
	f.Add(MarshalHeader(Header{Version: 2, ManifestLen: 4000}))
	f.Add(MarshalHeader(Header{Version: Version, Flags: 4, ManifestLen: 4000}))
	f.Add(MarshalHeader(Header{Version: Version, Flags: FlagBLAKE3 | FlagUnused, ManifestLen: 4000}))
	f.Add(MarshalHeader(Header{Version: Version, Flags: FlagUnused, ManifestLen: 4000}))
	f.Add(MarshalHeader(Header{Version: Version, ManifestLen: fixedManifest}))
	f.Add(MarshalHeader(Header{Version: Version, ManifestLen: maxManifestLen}))
	f.Add(MarshalHeader(Header{Version: Version, ManifestLen: ^uint64(0)}))
	f.Add(MarshalHeader(good)[:HeaderSize-1])
	f.Add(append(MarshalHeader(good), "trailing manifest bytes"...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkHeader(t, b)
		// The fuzzer cannot find a CRC32C by itself: also try the input
		// with its magic and CRC made right, to get past those checks.
		if len(b) >= HeaderSize {
			c := bytes.Clone(b[:HeaderSize])
			copy(c, Magic)
			binary.LittleEndian.PutUint32(c[56:], crc32.Checksum(c[:56], crcTable))
			checkHeader(t, c)
		}
	})
}

func checkHeader(t *testing.T, b []byte) {
	h, err := ParseHeader(b)
	if err != nil {
		if !isFormatError(err) {
			t.Errorf("ParseHeader(%x) = %v, want one of the package's sentinel errors", b, err)
		}
		return
	}
	if h.Version != Version || h.Flags&^knownFlags != 0 || h.ManifestLen < fixedManifest || h.ManifestLen > maxManifestLen {
		t.Errorf("ParseHeader(%x) accepted %+v", b, h)
	}
	if got := MarshalHeader(h); !bytes.Equal(got, b[:HeaderSize]) {
		t.Errorf("MarshalHeader(ParseHeader(%x)) = %x, want the same 64 bytes", b[:HeaderSize], got)
	}
}

func isFormatError(err error) bool {
	return errors.Is(err, ErrNotImage) || errors.Is(err, ErrVersion) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated)
}

// fuzzImage scans a small disk with every codec (a repetitive chunk, a zero
// one, one that is zero but for a byte, a short random tail) and returns the
// image's bytes as Scan wrote them and laid out without the padding before
// the chunk data, which keeps the fuzzer's inputs small.
func fuzzImage(f *testing.F) (scanned, compact []byte) {
	var disk []byte
	disk = append(disk, bytes.Repeat([]byte("asr fuzz seed\n"), testChunk/14+1)[:testChunk]...)
	disk = append(disk, make([]byte, 2*testChunk)...)
	disk[len(disk)-1] = 1
	tail := make([]byte, 100)
	for i := range tail {
		tail[i] = byte(i * 131 % 251)
	}
	disk = append(disk, tail...)

	p := filepath.Join(f.TempDir(), "seed.asr")
	out, err := os.Create(p)
	if err != nil {
		f.Fatal(err)
	}
	defer out.Close()
	m, _, err := Scan(context.Background(), bytes.NewReader(disk), out, scanOpts(1))
	if err != nil {
		f.Fatalf("Scan = %v", err)
	}
	scanned, err = os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	codecs := map[Codec]bool{}
	for _, c := range m.Chunks {
		codecs[c.Codec] = true
	}
	if len(codecs) != 3 {
		f.Fatalf("seed image has codecs %v, want all three", codecs)
	}

	c := *m
	c.Chunks = append([]Chunk(nil), m.Chunks...)
	c.DataOffset = int64(HeaderSize + len(MarshalManifest(m)))
	var data []byte
	for i, ch := range c.Chunks {
		if ch.Codec.Stored() {
			c.Chunks[i].Offset = c.DataOffset + int64(len(data))
			data = append(data, scanned[ch.Offset:ch.Offset+int64(ch.Length)]...)
		}
	}
	mb := MarshalManifest(&c)
	compact = MarshalHeader(Header{Version: Version, Flags: FlagBLAKE3, ManifestLen: uint64(len(mb)), ManifestDigest: sha256.Sum256(mb)})
	compact = append(append(compact, mb...), data...)
	im, err := Open(bytes.NewReader(compact), int64(len(compact)))
	if err != nil {
		f.Fatalf("Open(compact seed image) = %v, want nil", err)
	}
	defer im.Close()
	for i := range im.Manifest.Chunks {
		got, _, err := im.ReadChunk(i, nil, nil)
		if want := disk[i*testChunk : min((i+1)*testChunk, len(disk))]; err != nil || !bytes.Equal(got, want) {
			f.Fatalf("ReadChunk(%d) of the compact seed image = %d bytes, %v; want the disk's %d bytes", i, len(got), err, len(want))
		}
	}
	return scanned, compact
}

// fixHeader returns b with a good header for a manifest of the length its
// header claims (or of the rest of b, when that is shorter), so that the
// fuzzer's changes reach ParseManifest through the digest check.
func fixHeader(b []byte) []byte {
	if len(b) < HeaderSize {
		return nil
	}
	c := bytes.Clone(b)
	n := binary.LittleEndian.Uint64(c[16:])
	if rest := uint64(len(c) - HeaderSize); n > rest || n < fixedManifest {
		n = rest
	}
	h := Header{Version: Version, ManifestLen: n, ManifestDigest: sha256.Sum256(c[HeaderSize : HeaderSize+int(n)])}
	copy(c, MarshalHeader(h))
	return c
}

func FuzzReadManifest(f *testing.F) {
	scanned, compact := fuzzImage(f)
	mlen := int(binary.LittleEndian.Uint64(compact[16:]))
	f.Add(compact)
	f.Add(compact[:len(compact)-1])
	f.Add(compact[:HeaderSize+mlen])
	f.Add(compact[:HeaderSize+mlen/2])
	f.Add(compact[:HeaderSize])
	f.Add(scanned)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkImage(t, b)
		if c := fixHeader(b); c != nil {
			checkImage(t, c)
		}
	})
}

// allocLimit is what reading the manifest of an input of n bytes, once as
// a stream and once with Open, may allocate: a small multiple of what
// arrived, never what a header claims.
func allocLimit(n int) uint64 { return 1<<20 + 8*uint64(n) }

func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func checkImage(t *testing.T, b []byte) {
	r := bytes.NewReader(b)
	var (
		m    *Manifest
		d    Digest
		err  error
		im   *Image
		oerr error
	)
	if n := allocated(func() {
		m, d, err = ReadManifest(r)
		im, oerr = Open(bytes.NewReader(b), int64(len(b)))
	}); n > allocLimit(len(b)) {
		t.Errorf("ReadManifest and Open of %d bytes allocated %d bytes, want at most %d", len(b), n, allocLimit(len(b)))
	}
	if im != nil {
		defer im.Close()
	}
	if err != nil {
		if !isFormatError(err) {
			t.Errorf("ReadManifest(%d bytes) = %v, want one of the package's sentinel errors", len(b), err)
		}
	} else {
		checkManifest(t, b, m, d, len(b)-r.Len())
	}

	if err != nil && oerr == nil {
		t.Fatalf("ReadManifest(%d bytes) = %v, but Open = nil error", len(b), err)
	}
	if oerr != nil {
		if !isFormatError(oerr) {
			t.Errorf("Open(%d bytes) = %v, want one of the package's sentinel errors", len(b), oerr)
		}
		return
	}
	if im.Digest != d {
		t.Errorf("Open digest %s, ReadManifest digest %s", im.Digest, d)
	}
	if fs := im.Manifest.FileSize(); fs > int64(len(b)) {
		t.Errorf("Open(%d bytes) accepted a manifest needing %d", len(b), fs)
	}
	// Read the stored chunks (the zero ones only cost time).
	var dst, scratch []byte
	for i, c := range im.Manifest.Chunks {
		if !c.Codec.Stored() {
			continue
		}
		dst, scratch, err = im.ReadChunk(i, dst, scratch)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("ReadChunk(%d) of a whole image = %v, want nil or %v", i, err, ErrCorrupt)
			}
			continue
		}
		sum := sha256.Sum256(dst)
		if im.Manifest.Hash == HashBLAKE3 {
			sum = blake3.Sum256(dst)
		}
		if len(dst) != im.Manifest.ChunkLen(i) || sum != c.Sum {
			t.Errorf("ReadChunk(%d) = %d bytes not matching the manifest's length %d and sum", i, len(dst), im.Manifest.ChunkLen(i))
		}
	}
}

// checkManifest checks what ReadManifest accepted from b, of which it read
// the first n bytes.
func checkManifest(t *testing.T, b []byte, m *Manifest, d Digest, n int) {
	mlen := int(binary.LittleEndian.Uint64(b[16:]))
	if n != HeaderSize+mlen {
		t.Errorf("ReadManifest read %d bytes, want %d (header and manifest)", n, HeaderSize+mlen)
		return
	}
	mb := b[HeaderSize:n]
	if want := Digest(sha256.Sum256(mb)); d != want {
		t.Errorf("ReadManifest digest = %s, want %s", d, want)
	}
	if m.LogicalSize <= 0 || m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize%4096 != 0 {
		t.Errorf("ReadManifest accepted logical size %d, chunk size %d", m.LogicalSize, m.ChunkSize)
		return
	}
	var sum int64
	for i := range m.Chunks {
		l := m.ChunkLen(i)
		if l <= 0 || l > int(m.ChunkSize) {
			t.Errorf("ChunkLen(%d) = %d, want 1 to %d", i, l, m.ChunkSize)
		}
		sum += int64(l)
	}
	if sum != m.LogicalSize {
		t.Errorf("chunk lengths add up to %d, want the logical size %d", sum, m.LogicalSize)
	}
	if m.FileSize() < m.DataOffset || m.DataOffset < int64(n) {
		t.Errorf("manifest data offset %d, file size %d: want the data after the manifest's end %d", m.DataOffset, m.FileSize(), n)
	}
	// Every field decoded as written, and the reserved bytes of the chunk
	// entries are zero as FORMAT.md requires: re-encoding gives the same
	// bytes.
	if got := MarshalManifest(m); !bytes.Equal(got, mb) {
		t.Errorf("MarshalManifest(ReadManifest(b)) differs from the manifest read:\n got %x\nwant %x", got, mb)
	}
}
