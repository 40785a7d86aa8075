package image

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// ReadManifest reads the header and manifest from the start of a stream and
// checks the manifest's digest. It reads exactly HeaderSize plus the manifest
// length, so the caller can go on reading chunk data from r.
func ReadManifest(r io.Reader) (*Manifest, Digest, error) {
	m, d, _, err := ReadHeaderManifest(r)
	return m, d, err
}

// ReadHeaderManifest is ReadManifest that also returns the header's 64 bytes:
// what a signature signs.
func ReadHeaderManifest(r io.Reader) (*Manifest, Digest, []byte, error) {
	hb := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, hb); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, Digest{}, nil, fmt.Errorf("%w: shorter than its %d-byte header", ErrTruncated, HeaderSize)
		}
		return nil, Digest{}, nil, fmt.Errorf("reading header: %w", err)
	}
	h, err := ParseHeader(hb)
	if err != nil {
		return nil, Digest{}, nil, err
	}
	// Decoded as it arrives, while its digest is computed: a hostile
	// length in range must not make us allocate it before the bytes come,
	// and no copy of the raw manifest is kept beside the decoded one.
	hash := sha256.New()
	body := &io.LimitedReader{R: io.TeeReader(r, hash), N: int64(h.ManifestLen)}
	m, err := decodeManifest(body, h.ManifestLen)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return nil, Digest{}, nil, err
	}
	// Whatever the decoder left of the manifest's length is hashed too (not
	// kept): the digest covers every byte the header counts, and a manifest
	// altered after it was written says so by its digest, which names the
	// problem better than the field it broke.
	if _, derr := io.Copy(io.Discard, body); derr != nil {
		if err == nil {
			err = fmt.Errorf("reading manifest: %w", derr)
		}
		return nil, Digest{}, nil, err
	}
	if body.N != 0 {
		return nil, Digest{}, nil, fmt.Errorf("%w: manifest cut short", ErrTruncated)
	}
	var d Digest
	copy(d[:], hash.Sum(nil))
	if d != Digest(h.ManifestDigest) {
		return nil, Digest{}, nil, fmt.Errorf("%w: manifest digest %s, header says %x", ErrCorrupt, d, h.ManifestDigest)
	}
	if err != nil {
		return nil, Digest{}, nil, err
	}
	if h.Flags&FlagUnused == 0 && m.HasUnused() {
		return nil, Digest{}, nil, fmt.Errorf("%w: manifest has unused chunks but the header lacks their flag", ErrCorrupt)
	}
	if h.Flags&FlagBLAKE3 != 0 {
		m.Hash = HashBLAKE3
	}
	return m, d, hb, nil
}

// Image is a prepared image opened for random access.
type Image struct {
	Manifest *Manifest
	Digest   Digest
	// Header is the file's first HeaderSize bytes, checked: the message an
	// image's signatures sign.
	Header []byte
	r      io.ReaderAt
	dec    *Decoder
}

// Open reads and checks the header and manifest of an image of size bytes.
// size may be -1 when unknown; otherwise a file shorter than the manifest says
// is refused as truncated.
func Open(r io.ReaderAt, size int64) (*Image, error) {
	m, d, hb, err := ReadHeaderManifest(io.NewSectionReader(r, 0, 1<<62))
	if err != nil {
		return nil, err
	}
	if size >= 0 && size < m.FileSize() {
		return nil, fmt.Errorf("%w: file is %d bytes, manifest needs %d", ErrTruncated, size, m.FileSize())
	}
	dec, err := NewDecoder()
	if err != nil {
		return nil, err
	}
	return &Image{Manifest: m, Digest: d, Header: hb, r: r, dec: dec}, nil
}

// Close releases the decoder.
func (im *Image) Close() error {
	im.dec.Close()
	return nil
}

// ReadStored reads chunk i's stored bytes into buf (grown as needed).
func (im *Image) ReadStored(i int, buf []byte) ([]byte, error) {
	c := im.Manifest.Chunks[i]
	if !c.Codec.Stored() {
		return buf[:0], nil
	}
	if cap(buf) < int(c.Length) {
		buf = make([]byte, c.Length)
	}
	buf = buf[:c.Length]
	if _, err := im.r.ReadAt(buf, c.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("chunk %d: %w", i, ErrTruncated)
		}
		return nil, fmt.Errorf("reading chunk %d at offset %d: %w", i, c.Offset, err)
	}
	return buf, nil
}

// ReadChunk reads, decodes and checks chunk i, returning its uncompressed
// bytes in dst (grown as needed). scratch holds the stored bytes. A chunk
// whose digest does not match is an error that names it: nothing a caller
// writes ever comes from a chunk that failed its check.
func (im *Image) ReadChunk(i int, dst, scratch []byte) (data, scratchOut []byte, err error) {
	scratch, err = im.ReadStored(i, scratch)
	if err != nil {
		return nil, scratch, err
	}
	data, err = im.dec.DecodeChunk(im.Manifest, i, scratch, dst)
	return data, scratch, err
}

// Decoder turns stored chunks into checked uncompressed bytes. It is safe for
// concurrent use.
type Decoder struct {
	zd *zstd.Decoder
}

// NewDecoder returns a decoder for chunks.
func NewDecoder() (*Decoder, error) {
	zd, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0), // DecodeAll from every worker at once
		zstd.WithDecoderMaxMemory(MaxChunkSize),
		zstd.IgnoreChecksum(true)) // each chunk has a SHA-256; a second check is waste
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Decoder{zd: zd}, nil
}

// Close releases the decoder's goroutines.
func (d *Decoder) Close() { d.zd.Close() }

// DecodeChunk decodes chunk i of m from its stored bytes into dst and checks
// its length and SHA-256.
func (d *Decoder) DecodeChunk(m *Manifest, i int, stored, dst []byte) ([]byte, error) {
	c := m.Chunks[i]
	n := m.ChunkLen(i)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	switch c.Codec {
	case CodecZero, CodecUnused:
		dst = dst[:n]
		clear(dst)
		return dst, nil // the manifest checks nothing for zeros: they are known
	case CodecRaw:
		dst = append(dst[:0], stored...)
	case CodecZstd:
		var err error
		dst, err = d.zd.DecodeAll(stored, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %d (offset %d): %v", ErrCorrupt, i, int64(i)*int64(m.ChunkSize), err)
		}
	default:
		return nil, fmt.Errorf("%w: chunk %d has unknown codec %d", ErrCorrupt, i, c.Codec)
	}
	if len(dst) != n {
		return nil, fmt.Errorf("%w: chunk %d decodes to %d bytes, want %d", ErrCorrupt, i, len(dst), n)
	}
	if m.Hash.Sum(dst) != c.Sum {
		return nil, fmt.Errorf("%w: chunk %d (bytes %d to %d of the disk) fails its %s check",
			ErrCorrupt, i, int64(i)*int64(m.ChunkSize), int64(i)*int64(m.ChunkSize)+int64(n), m.Hash)
	}
	return dst, nil
}
