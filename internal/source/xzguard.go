package source

import (
	"encoding/binary"
	"errors"
	"io"
)

const xzMagic = "\xfd7zXZ\x00"

// xzGuard passes an xz file through unchanged while following its
// structure (streams, blocks, LZMA2 chunk headers, index, padding) without
// decoding it, and fails before handing the decoder a block header whose
// dictionary exceeds max. The decoder allocates whatever dictionary a block
// header asks for (up to 4 GiB), and every block of every stream has its own
// header, so checking the first one would not do.
type xzGuard struct {
	r   io.Reader
	max int64
	err error

	st   xzState
	buf  []byte
	need int   // collect buf up to this many bytes, then step
	skip int64 // bytes to pass over first

	check    int64 // size of the current stream's block check
	blockLen int64 // bytes of the current block so far, for its padding
	idxLen   int64 // bytes of the current index so far, for its padding
	varints  int64 // index varints still to read; -1 while reading the count
	v        uint64
	vshift   uint
}

type xzState int

const (
	xzStreamHeader xzState = iota
	xzBlockOrIndex
	xzBlockHeader
	xzChunk
	xzRawChunk
	xzLZMAChunk
	xzIndexVarint
	xzFooter
	xzPadding
)

func newXZGuard(r io.Reader, max int64) *xzGuard {
	g := &xzGuard{r: r, max: max}
	g.expect(12, xzStreamHeader)
	return g
}

func (g *xzGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if n > 0 {
		if ferr := g.feed(p[:n]); ferr != nil {
			g.err = ferr
			return 0, ferr
		}
	}
	return n, err
}

func (g *xzGuard) expect(n int, st xzState) {
	g.buf, g.need, g.st = g.buf[:0], n, st
}

func (g *xzGuard) feed(p []byte) error {
	for len(p) > 0 {
		if g.skip > 0 {
			k := min(int64(len(p)), g.skip)
			g.skip -= k
			p = p[k:]
			continue
		}
		k := min(len(p), g.need-len(g.buf))
		g.buf = append(g.buf, p[:k]...)
		p = p[k:]
		if len(g.buf) == g.need {
			if err := g.step(); err != nil {
				return err
			}
		}
	}
	return nil
}

var errXZStructure = errors.New("xz: the file's structure is damaged")

// checkSizes is the size of a block's check by the stream's check type.
var checkSizes = [16]int64{0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64}

func (g *xzGuard) step() error {
	b := g.buf
	switch g.st {
	case xzStreamHeader:
		if string(b[:6]) != xzMagic || b[6] != 0 || b[7]&0xf0 != 0 {
			return errXZStructure
		}
		g.check = checkSizes[b[7]&0x0f]
		g.expect(1, xzBlockOrIndex)
	case xzBlockOrIndex:
		if b[0] == 0 {
			g.idxLen, g.varints, g.v, g.vshift = 1, -1, 0, 0
			g.expect(1, xzIndexVarint)
			return nil
		}
		g.need, g.st = (int(b[0])+1)*4, xzBlockHeader // keep the size byte
	case xzBlockHeader:
		dict, err := xzBlockDict(b)
		if err != nil {
			return err
		}
		if dict > g.max {
			return &WindowError{Format: "xz", Need: dict, Max: g.max}
		}
		g.blockLen = int64(len(b))
		g.expect(1, xzChunk)
	case xzChunk:
		g.blockLen++
		switch c := b[0]; {
		case c == 0: // end of the LZMA2 data: padding, check, next block
			g.skip = (4-g.blockLen%4)%4 + g.check
			g.expect(1, xzBlockOrIndex)
		case c == 1 || c == 2:
			g.expect(2, xzRawChunk)
		case c >= 0x80:
			n := 4
			if c >= 0xc0 {
				n = 5 // new properties
			}
			g.expect(n, xzLZMAChunk)
		default:
			return errXZStructure
		}
	case xzRawChunk:
		g.skip = int64(binary.BigEndian.Uint16(b)) + 1
		g.blockLen += 2 + g.skip
		g.expect(1, xzChunk)
	case xzLZMAChunk:
		g.skip = int64(binary.BigEndian.Uint16(b[2:])) + 1
		g.blockLen += int64(len(b)) + g.skip
		g.expect(1, xzChunk)
	case xzIndexVarint:
		g.idxLen++
		g.v |= uint64(b[0]&0x7f) << g.vshift
		if b[0]&0x80 != 0 {
			if g.vshift += 7; g.vshift > 63 {
				return errXZStructure
			}
			g.expect(1, xzIndexVarint)
			return nil
		}
		if g.varints < 0 {
			if g.v > 1<<40 {
				return errXZStructure
			}
			g.varints = 2 * int64(g.v) // unpadded and uncompressed size per block
		} else {
			g.varints--
		}
		g.v, g.vshift = 0, 0
		if g.varints > 0 {
			g.expect(1, xzIndexVarint)
			return nil
		}
		g.skip = (4-g.idxLen%4)%4 + 4 // padding, CRC32
		g.expect(12, xzFooter)
	case xzFooter:
		if string(b[10:12]) != "YZ" {
			return errXZStructure
		}
		g.expect(4, xzPadding)
	case xzPadding:
		if b[0]|b[1]|b[2]|b[3] == 0 {
			g.expect(4, xzPadding)
			return nil
		}
		g.need, g.st = 12, xzStreamHeader // the start of the next stream
	}
	return nil
}

// xzBlockDict reads the LZMA2 dictionary size from a whole block header.
func xzBlockDict(h []byte) (int64, error) {
	end := len(h) - 4 // CRC32
	if end < 2 || h[1]&0x3c != 0 {
		return 0, errXZStructure
	}
	pos := 2
	varint := func() (uint64, bool) {
		var v uint64
		for s := uint(0); pos < end && s <= 63; s += 7 {
			c := h[pos]
			pos++
			v |= uint64(c&0x7f) << s
			if c&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	for _, present := range []bool{h[1]&0x40 != 0, h[1]&0x80 != 0} {
		if present {
			if _, ok := varint(); !ok {
				return 0, errXZStructure
			}
		}
	}
	dict := int64(-1)
	for range int(h[1]&3) + 1 {
		id, ok1 := varint()
		n, ok2 := varint()
		if !ok1 || !ok2 || n > uint64(end-pos) {
			return 0, errXZStructure
		}
		props := h[pos : pos+int(n)]
		pos += int(n)
		if id == 0x21 { // LZMA2
			if len(props) != 1 || props[0] > 40 {
				return 0, errXZStructure
			}
			p := props[0]
			dict = int64(2|p&1) << (p/2 + 11)
			if p == 40 {
				dict = 1<<32 - 1
			}
		}
	}
	if dict < 0 {
		return 0, errXZStructure // asr's decoder knows LZMA2 only
	}
	return dict, nil
}
