package image

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// decodeManifest reads a manifest of n bytes from r and checks it as
// ParseManifest documents. It reads the fixed fields first and refuses a
// chunk count out of range before reading any entry, then decodes the
// entries as they arrive: memory follows the bytes received (no copy of the
// raw manifest is kept), never what a header claims.
func decodeManifest(r io.Reader, n uint64) (*Manifest, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: manifest: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	if n < fixedManifest {
		return nil, bad("%d bytes is too short", n)
	}
	br := bufio.NewReaderSize(io.LimitReader(r, int64(n)), 64<<10)
	read := func(b []byte) error {
		if _, err := io.ReadFull(br, b); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%w: manifest cut short", ErrTruncated)
			}
			return fmt.Errorf("reading manifest: %w", err)
		}
		return nil
	}
	var fixed [32]byte
	if err := read(fixed[:]); err != nil {
		return nil, err
	}
	m := &Manifest{}
	size := binary.LittleEndian.Uint64(fixed[0:])
	m.ChunkSize = binary.LittleEndian.Uint32(fixed[8:])
	count := binary.LittleEndian.Uint32(fixed[12:])
	m.Created = time.Unix(int64(binary.LittleEndian.Uint64(fixed[16:])), 0).UTC()
	dataOff := binary.LittleEndian.Uint64(fixed[24:])
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize%4096 != 0 {
		return nil, bad("chunk size %d out of range", m.ChunkSize)
	}
	if size == 0 || size > 1<<56 {
		return nil, bad("logical size %d out of range", size)
	}
	m.LogicalSize = int64(size)
	if want := (size + uint64(m.ChunkSize) - 1) / uint64(m.ChunkSize); uint64(count) != want {
		return nil, bad("%d chunks for %d bytes, want %d", count, size, want)
	}
	if count > MaxChunks {
		return nil, fmt.Errorf("%w: the image has %d chunks of %d bytes, more than the %d this asr reads (%d GiB at this chunk size): scan the disk again with a larger chunk size",
			ErrCorrupt, count, m.ChunkSize, MaxChunks, uint64(MaxChunks)*uint64(m.ChunkSize)>>30)
	}
	p := uint64(32)
	str := func() (string, error) {
		var l [2]byte
		if n < p+2 {
			return "", bad("short string")
		}
		if err := read(l[:]); err != nil {
			return "", err
		}
		k := uint64(binary.LittleEndian.Uint16(l[:]))
		p += 2
		if k > maxNameLen || n < p+k {
			return "", bad("string of %d bytes out of range", k)
		}
		b := make([]byte, k)
		if err := read(b); err != nil {
			return "", err
		}
		p += k
		return string(b), nil
	}
	var err error
	if m.Name, err = str(); err != nil {
		return nil, err
	}
	if m.Tool, err = str(); err != nil {
		return nil, err
	}
	if rest := n - p; rest != uint64(count)*entrySize {
		return nil, bad("chunk table is %d bytes, want %d", rest, uint64(count)*entrySize)
	}
	minData := uint64(HeaderSize) + n
	if dataOff < minData || dataOff > 1<<60 {
		return nil, bad("data offset %d before end of manifest %d", dataOff, minData)
	}
	m.DataOffset = int64(dataOff)
	// Grown as entries arrive, not sized from count: a header may lie.
	m.Chunks = make([]Chunk, 0, min(count, 1024))
	next := dataOff
	var e [entrySize]byte
	for i := range int(count) {
		if err := read(e[:]); err != nil {
			return nil, err
		}
		c := Chunk{
			Offset: int64(binary.LittleEndian.Uint64(e[0:])),
			Length: binary.LittleEndian.Uint32(e[8:]),
			Codec:  Codec(e[12]),
		}
		copy(c.Sum[:], e[16:48])
		if e[13] != 0 || e[14] != 0 || e[15] != 0 {
			return nil, bad("chunk %d has non-zero reserved bytes", i)
		}
		switch c.Codec {
		case CodecZero, CodecUnused:
			if c.Offset != 0 || c.Length != 0 || c.Sum != ([32]byte{}) {
				return nil, bad("%s chunk %d has stored bytes or a digest", c.Codec, i)
			}
		case CodecRaw, CodecZstd:
			if uint64(c.Offset) != next {
				return nil, bad("chunk %d at offset %d, want %d", i, c.Offset, next)
			}
			// A chunk is stored compressed only when that saves space.
			if c.Length == 0 || int(c.Length) > m.ChunkLen(i) {
				return nil, bad("chunk %d stored length %d out of range", i, c.Length)
			}
			if c.Codec == CodecRaw && int(c.Length) != m.ChunkLen(i) {
				return nil, bad("raw chunk %d is %d bytes, want %d", i, c.Length, m.ChunkLen(i))
			}
			next += uint64(c.Length)
		default:
			return nil, bad("chunk %d has unknown codec %d", i, c.Codec)
		}
		if len(m.Chunks) == cap(m.Chunks) {
			// Doubling, until a quarter of the entries have come: then
			// the table's final size, so growing it leaves little garbage
			// and nothing is allocated beyond 4x the bytes received.
			n := 2 * cap(m.Chunks)
			if n >= int(count)/2 {
				n = int(count)
			}
			m.Chunks = append(make([]Chunk, 0, n), m.Chunks...)
		}
		m.Chunks = append(m.Chunks, c)
	}
	return m, nil
}
