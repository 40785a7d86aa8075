// Package image reads and writes asr prepared images.
//
// A prepared image is one file: a 64-byte header, a manifest, then the stored
// chunks in order. The manifest lists every chunk of the logical disk with its
// codec, where its stored bytes are and the SHA-256 of its uncompressed bytes,
// so any chunk can be fetched, decoded and checked on its own: from a local
// file, an HTTP range request or a multicast packet group. The SHA-256 of the
// manifest names the image. FORMAT.md at the top of the repository is the
// specification; this package is its reference implementation.
//
// The package knows nothing of devices, networks or progress output.
package image

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Magic opens every prepared image.
const Magic = "ASRIMG\r\n"

// Version is the format version this package writes. Readers refuse others.
const Version = 1

// FlagUnused in the header says the manifest may hold chunks of CodecUnused.
// Readers that predate the codec refuse the flag ("written by a newer asr")
// rather than mistake such an image for a corrupt one; images without unused
// chunks leave it clear and stay readable by them.
const FlagUnused uint32 = 1 << 0

// FlagBLAKE3 in the header says the chunk sums are BLAKE3-256, not
// SHA-256 (see Hash). Readers that predate it refuse such an image as
// written by a newer asr. The flag is in the header, which signatures sign
// and the manifest's digest does not cover: a flag flipped on an unsigned
// image makes every chunk fail its check, and cannot make one pass.
const FlagBLAKE3 uint32 = 1 << 1

// knownFlags are the header flags this package understands.
const knownFlags = FlagUnused | FlagBLAKE3

// HeaderSize is the fixed size of the header.
const HeaderSize = 64

// DefaultChunkSize is the chunk size of raw (unprepared) sources, a unit of
// transfer and verification only, of Scan when told none, and of imagescan
// for a disk of unknown size (a compressed stream) or of less than 256 MiB.
const DefaultChunkSize = 1 << 20

// PreferredChunkSize is imagescan's chunk size for disks of 1 GiB and more.
const PreferredChunkSize = 8 << 20

// ScanChunkSize is the chunk size imagescan gives a disk of size bytes (0:
// unknown) unless told otherwise: 8 MiB for disks of 1 GiB and more, less
// for smaller ones (at least 128 chunks, and at least DefaultChunkSize), and
// more (up to MaxChunkSize) for a disk too large for MaxChunks of them.
//
// Each chunk is an independent zstd frame, so the chunk size is also the
// compression window. With 1 MiB chunks the images of bench/fsmap.sh's
// disks (1 GiB, 30% used) were 8-16% larger than partclone | zstd -T0,
// whose one stream has a window of 2 MiB and more; the whole gap was the
// window: zstd -3 over the same used bytes cut into independent 1 MiB
// frames gave asr's size to 0.1%, and one stream with a 1 MiB window was
// 6% larger than with 2 MiB. 8 MiB chunks made every filesystem's image
// smaller than partclone's; 4 MiB left FAT32 and NTFS 0.3-1% larger. A
// small disk keeps enough chunks to restore on every worker and to keep
// delta restores and progress fine-grained; its images are small anyway.
func ScanChunkSize(size int64) int {
	const minChunks = 128
	cs := DefaultChunkSize
	for cs < PreferredChunkSize && size >= int64(2*cs)*minChunks {
		cs *= 2
	}
	for size > int64(MaxChunks)*int64(cs) && cs < MaxChunkSize {
		cs *= 2
	}
	return cs
}

// Limits on the chunk size: a chunk must be a whole number of 4 KiB pages so
// it can be written and read back with O_DIRECT, and small enough that a few
// dozen of them in flight stay far below the appliance's memory budget.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 16 << 20
)

// MaxChunks is the most chunks an image may have. A reader holds every
// chunk's entry (48 bytes, and as much again while the table grows) and a
// restore 35 bytes more per chunk to verify it: 2^19 chunks keep that near
// 70 MiB, so that with its chunks in flight a restore stays within its
// 256 MiB. It is 4 TiB at imagescan's default 8 MiB chunks and 8 TiB at
// the largest; a larger disk needs larger chunks (imagescan picks them).
const MaxChunks = 1 << 19

// Limits that protect readers from hostile headers: a manifest is 48 bytes per
// chunk, so 256 MiB covers a 5 TiB disk at 1 MiB chunks.
const (
	maxManifestLen = 256 << 20
	maxNameLen     = 4096 // bytes of Name and of Tool
	entrySize      = 48
	fixedManifest  = 8 + 4 + 4 + 8 + 8 + 2 + 2
)

// Codec says how a chunk is stored.
type Codec uint8

const (
	// CodecZero: the chunk is all zeros and is not stored.
	CodecZero Codec = 0
	// CodecRaw: the chunk is stored as it is (it did not compress).
	CodecRaw Codec = 1
	// CodecZstd: the chunk is one zstd frame.
	CodecZstd Codec = 2
	// CodecUnused: no byte of the chunk is used by the filesystems that
	// hold it (free space); it is not stored and its contents do not
	// matter. A restore leaves it as the erase left it and a verification
	// skips it. Readers decode it as zeros.
	CodecUnused Codec = 3
)

func (c Codec) String() string {
	switch c {
	case CodecZero:
		return "zero"
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	case CodecUnused:
		return "unused"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// Stored reports whether chunks of this codec have bytes in the file.
func (c Codec) Stored() bool { return c == CodecRaw || c == CodecZstd }

// Sentinel errors, so callers can tell a damaged image from a failing disk.
var (
	ErrNotImage  = errors.New("not an asr prepared image (bad magic)")
	ErrVersion   = errors.New("unsupported image format version")
	ErrCorrupt   = errors.New("image is corrupt")
	ErrTruncated = errors.New("image is truncated")
)

// Header is the fixed start of the file.
type Header struct {
	Version        uint32
	Flags          uint32
	ManifestLen    uint64
	ManifestDigest [32]byte
}

// Digest is the SHA-256 of a manifest: the image's identity.
type Digest [32]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Chunk is one manifest entry.
type Chunk struct {
	Offset int64 // where its stored bytes start in the file; 0 if not stored
	Length uint32
	Codec  Codec
	Sum    [32]byte // Manifest.Hash of the uncompressed bytes; all zero for CodecZero
}

// Manifest describes the logical disk and where each chunk of it is stored.
type Manifest struct {
	LogicalSize int64
	ChunkSize   uint32
	Created     time.Time
	DataOffset  int64  // where the first stored chunk starts
	Name        string // what was scanned, for people reading `asr info`
	Tool        string // the asr version that wrote the image
	Chunks      []Chunk
	// Hash is what the chunk sums are made with. It is not in the
	// manifest's bytes but in the header's flags (FlagBLAKE3), set from
	// them when the two are read together.
	Hash Hash
}

// ChunkLen returns the uncompressed length of chunk i: ChunkSize, except for a
// shorter last chunk.
func (m *Manifest) ChunkLen(i int) int {
	start := int64(i) * int64(m.ChunkSize)
	if rest := m.LogicalSize - start; rest < int64(m.ChunkSize) {
		return int(rest)
	}
	return int(m.ChunkSize)
}

// FileSize is the length a complete image file has.
func (m *Manifest) FileSize() int64 {
	end := m.DataOffset
	for _, c := range m.Chunks {
		if c.Codec.Stored() {
			if e := c.Offset + int64(c.Length); e > end {
				end = e
			}
		}
	}
	return end
}

// HasUnused reports whether any chunk is CodecUnused: the image was mapped
// by its filesystems, and its header must carry FlagUnused.
func (m *Manifest) HasUnused() bool {
	for _, c := range m.Chunks {
		if c.Codec == CodecUnused {
			return true
		}
	}
	return false
}

// Stats sums up the manifest for people and benchmarks.
type Stats struct {
	Chunks       int
	StoredChunks int
	ZeroChunks   int
	UnusedChunks int   // free space, not stored
	StoredBytes  int64 // bytes of chunk data in the file
	UsedBytes    int64 // uncompressed bytes of the stored chunks
}

// Stats counts chunks by kind and sums their sizes.
func (m *Manifest) Stats() Stats {
	s := Stats{Chunks: len(m.Chunks)}
	for i, c := range m.Chunks {
		switch {
		case c.Codec.Stored():
			s.StoredChunks++
			s.StoredBytes += int64(c.Length)
			s.UsedBytes += int64(m.ChunkLen(i))
		case c.Codec == CodecUnused:
			s.UnusedChunks++
		default:
			s.ZeroChunks++
		}
	}
	return s
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// MarshalHeader encodes h into its 64 bytes.
func MarshalHeader(h Header) []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], h.Version)
	binary.LittleEndian.PutUint32(b[12:], h.Flags)
	binary.LittleEndian.PutUint64(b[16:], h.ManifestLen)
	copy(b[24:56], h.ManifestDigest[:])
	binary.LittleEndian.PutUint32(b[56:], crc32.Checksum(b[:56], crcTable))
	return b
}

// ParseHeader decodes and checks the 64-byte header.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: header is %d bytes, want %d", ErrTruncated, len(b), HeaderSize)
	}
	if string(b[:8]) != Magic {
		return h, ErrNotImage
	}
	if got, want := binary.LittleEndian.Uint32(b[56:]), crc32.Checksum(b[:56], crcTable); got != want {
		return h, fmt.Errorf("%w: header checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	if binary.LittleEndian.Uint32(b[60:]) != 0 {
		return h, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
	}
	h.Version = binary.LittleEndian.Uint32(b[8:])
	h.Flags = binary.LittleEndian.Uint32(b[12:])
	h.ManifestLen = binary.LittleEndian.Uint64(b[16:])
	copy(h.ManifestDigest[:], b[24:56])
	if h.Version != Version {
		return h, fmt.Errorf("%w %d (this asr reads version %d; use a newer asr)", ErrVersion, h.Version, Version)
	}
	if h.Flags&^knownFlags != 0 {
		return h, fmt.Errorf("%w: unknown header flags %#x (written by a newer asr?)", ErrVersion, h.Flags&^knownFlags)
	}
	if h.ManifestLen < fixedManifest || h.ManifestLen > maxManifestLen {
		return h, fmt.Errorf("%w: manifest length %d out of range", ErrCorrupt, h.ManifestLen)
	}
	return h, nil
}

// MarshalManifest encodes m. The encoding is canonical: equal manifests give
// equal bytes, so equal images have equal digests.
func MarshalManifest(m *Manifest) []byte {
	n := fixedManifest + len(m.Name) + len(m.Tool) + entrySize*len(m.Chunks)
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.LogicalSize))
	b = binary.LittleEndian.AppendUint32(b, m.ChunkSize)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Chunks)))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.Created.Unix()))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.DataOffset))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Name)))
	b = append(b, m.Name...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Tool)))
	b = append(b, m.Tool...)
	for _, c := range m.Chunks {
		b = binary.LittleEndian.AppendUint64(b, uint64(c.Offset))
		b = binary.LittleEndian.AppendUint32(b, c.Length)
		b = append(b, byte(c.Codec), 0, 0, 0)
		b = append(b, c.Sum[:]...)
	}
	return b
}

// ParseManifest decodes a manifest and checks that it is self-consistent:
// every field in range, chunk count matching the logical size, stored chunks
// laid out in order without overlap. It does not check the digest; Open does.
func ParseManifest(b []byte) (*Manifest, error) {
	return decodeManifest(bytes.NewReader(b), uint64(len(b)))
}
