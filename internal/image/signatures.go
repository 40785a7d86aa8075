package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Signatures live in the image file itself, in a trailer after the last
// stored chunk, so that a signed image stays one file to copy. The trailer is
// outside the manifest: adding, replacing or removing a signature never
// changes the image's digest, and readers that predate signatures (which
// accept bytes past the last chunk of a local file) read a signed image as
// before.
//
// What is signed is the image's 64-byte header. It holds the SHA-256 of the
// manifest, which holds the SHA-256 of every chunk, so a signature over the
// header covers every byte of the logical disk; and anyone can check it with
// the minisign tool on the file's first 64 bytes (FORMAT.md says how).
//
// Layout (FORMAT.md, "Signature trailer"):
//
//	for each signature: u16 length, then that many bytes of minisign signature text
//	footer (32 bytes): magic "ASRSIGS\n", u32 version, u32 count,
//	                   u64 trailer length (footer included),
//	                   u32 CRC-32C of every trailer byte before this field, u32 reserved (0)
//
// The footer is at the very end of the file, so a reader that knows the
// file's length finds it with one read (a range request over HTTP).

// SigMagic opens the signature trailer's footer.
const SigMagic = "ASRSIGS\n"

// SigVersion is the trailer version this package writes and reads.
const SigVersion = 1

// Limits of the signature trailer: a minisign signature text is about 300
// bytes, so 4 KiB leaves room for long comments; 8 signatures cover key
// rotation with room to spare.
const (
	MaxSignatures   = 8
	MaxSignatureLen = 4096
	SigFooterSize   = 32
	// MaxTrailerLen is the longest a valid trailer can be.
	MaxTrailerLen = MaxSignatures*(2+MaxSignatureLen) + SigFooterSize
)

// ErrSignatures says the bytes after the last stored chunk are not a valid
// signature trailer.
var ErrSignatures = errors.New("bad signature trailer")

// EncodeTrailer encodes signature texts into a trailer. It refuses an empty
// list (an unsigned image has no trailer), more than MaxSignatures, and
// texts that are empty or longer than MaxSignatureLen.
func EncodeTrailer(sigs [][]byte) ([]byte, error) {
	if len(sigs) == 0 || len(sigs) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d signatures, want 1 to %d", ErrSignatures, len(sigs), MaxSignatures)
	}
	n := SigFooterSize
	for i, s := range sigs {
		if len(s) == 0 || len(s) > MaxSignatureLen {
			return nil, fmt.Errorf("%w: signature %d is %d bytes, want 1 to %d", ErrSignatures, i+1, len(s), MaxSignatureLen)
		}
		n += 2 + len(s)
	}
	b := make([]byte, 0, n)
	for _, s := range sigs {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = append(b, SigMagic...)
	b = binary.LittleEndian.AppendUint32(b, SigVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sigs)))
	b = binary.LittleEndian.AppendUint64(b, uint64(n))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	b = binary.LittleEndian.AppendUint32(b, 0)
	return b, nil
}

// TrailerLen reads a trailer's footer (the last SigFooterSize bytes of an
// image file) and returns the length of the whole trailer, so a reader knows
// how much to fetch. It checks the magic, version, count and length bounds;
// ParseTrailer checks the rest.
func TrailerLen(footer []byte) (int, error) {
	if len(footer) != SigFooterSize {
		return 0, fmt.Errorf("%w: footer is %d bytes, want %d", ErrSignatures, len(footer), SigFooterSize)
	}
	if string(footer[:8]) != SigMagic {
		return 0, fmt.Errorf("%w: the bytes after the last chunk do not end in %q", ErrSignatures, SigMagic[:7])
	}
	if v := binary.LittleEndian.Uint32(footer[8:]); v != SigVersion {
		return 0, fmt.Errorf("%w: trailer version %d (this asr reads version %d; use a newer asr)", ErrSignatures, v, SigVersion)
	}
	count := binary.LittleEndian.Uint32(footer[12:])
	if count < 1 || count > MaxSignatures {
		return 0, fmt.Errorf("%w: %d signatures, want 1 to %d", ErrSignatures, count, MaxSignatures)
	}
	n := binary.LittleEndian.Uint64(footer[16:])
	if n < SigFooterSize+3 || n > MaxTrailerLen {
		return 0, fmt.Errorf("%w: trailer length %d out of range", ErrSignatures, n)
	}
	if binary.LittleEndian.Uint32(footer[28:]) != 0 {
		return 0, fmt.Errorf("%w: reserved footer bytes are not zero", ErrSignatures)
	}
	return int(n), nil
}

// ParseTrailer decodes a whole trailer, footer included, and returns its
// signature texts (sub-slices of b). Every length is checked, and the
// CRC-32C, so a damaged trailer is refused rather than misread.
func ParseTrailer(b []byte) ([][]byte, error) {
	if len(b) < SigFooterSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than its footer", ErrSignatures, len(b))
	}
	footer := b[len(b)-SigFooterSize:]
	n, err := TrailerLen(footer)
	if err != nil {
		return nil, err
	}
	if n != len(b) {
		return nil, fmt.Errorf("%w: the footer says %d bytes, there are %d", ErrSignatures, n, len(b))
	}
	if got, want := binary.LittleEndian.Uint32(footer[24:]), crc32.Checksum(b[:len(b)-8], crcTable); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrSignatures, got, want)
	}
	count := int(binary.LittleEndian.Uint32(footer[12:]))
	body := b[:len(b)-SigFooterSize]
	sigs := make([][]byte, 0, count)
	for i := range count {
		if len(body) < 2 {
			return nil, fmt.Errorf("%w: signature %d of %d is missing", ErrSignatures, i+1, count)
		}
		l := int(binary.LittleEndian.Uint16(body))
		if l < 1 || l > MaxSignatureLen || l > len(body)-2 {
			return nil, fmt.Errorf("%w: signature %d has length %d", ErrSignatures, i+1, l)
		}
		sigs = append(sigs, body[2:2+l:2+l])
		body = body[2+l:]
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%w: %d stray bytes after the last signature", ErrSignatures, len(body))
	}
	return sigs, nil
}

// ReadSignatures reads the signature texts of an image file of size bytes
// whose manifest is m. An image with nothing after its last stored chunk is
// unsigned: no signatures and no error. Anything else after the last chunk
// must be a valid trailer.
func ReadSignatures(r io.ReaderAt, size int64, m *Manifest) ([][]byte, error) {
	end := m.FileSize()
	if size < end {
		return nil, fmt.Errorf("%w: file is %d bytes, manifest needs %d", ErrTruncated, size, end)
	}
	extra := size - end
	if extra == 0 {
		return nil, nil
	}
	if extra > MaxTrailerLen {
		return nil, fmt.Errorf("%w: %d bytes follow the last chunk, more than a signature trailer can hold", ErrSignatures, extra)
	}
	b := make([]byte, extra)
	if _, err := r.ReadAt(b, end); err != nil {
		return nil, fmt.Errorf("reading the signature trailer: %w", err)
	}
	return ParseTrailer(b)
}

// WriteSignatures replaces the signatures of the image file f, whose
// manifest is m, with sigs; no sigs removes the trailer. Only bytes after
// the last stored chunk change, so the image's digest stays the same.
//
// The new trailer is written before the file is cut to its new length, so
// an interruption leaves either the old signatures or an unreadable trailer
// (refused by readers; signing again repairs it), never a damaged image.
func WriteSignatures(f *os.File, m *Manifest, sigs [][]byte) error {
	end := m.FileSize()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < end {
		return fmt.Errorf("%s: %w: file is %d bytes, manifest needs %d", f.Name(), ErrTruncated, st.Size(), end)
	}
	var b []byte
	if len(sigs) > 0 {
		if b, err = EncodeTrailer(sigs); err != nil {
			return err
		}
		if _, err := f.WriteAt(b, end); err != nil {
			return fmt.Errorf("writing signatures to %s: %w", f.Name(), err)
		}
	}
	if err := f.Truncate(end + int64(len(b))); err != nil {
		return fmt.Errorf("writing signatures to %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing signatures to %s: %w", f.Name(), err)
	}
	return nil
}
