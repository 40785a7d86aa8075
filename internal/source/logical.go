package source

import (
	"fmt"
	"io"
	"sync"

	"github.com/asrlinux/asr/internal/image"
)

// LogicalReader reads a prepared image's logical disk at any offset by
// fetching, decoding and checking the chunks it spans, one at a time. It is
// for reading metadata (partition tables, superblocks, bitmaps) out of an
// image, not for bulk data: it keeps only the last chunk it read.
type LogicalReader struct {
	m  *image.Manifest
	cr ChunkReader

	mu   sync.Mutex
	idx  int
	data []byte
}

// NewLogicalReader reads the logical disk of the image m through cr.
func NewLogicalReader(m *image.Manifest, cr ChunkReader) *LogicalReader {
	return &LogicalReader{m: m, cr: cr, idx: -1}
}

// ReadAt implements io.ReaderAt over the logical disk.
func (r *LogicalReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cs := int64(r.m.ChunkSize)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.m.LogicalSize {
			return n, io.EOF
		}
		i := int(pos / cs)
		if i != r.idx {
			d, err := r.cr.ReadChunk(i)
			if err != nil {
				return n, err
			}
			r.idx, r.data = i, d
		}
		n += copy(p[n:], r.data[pos-int64(i)*cs:])
	}
	return n, nil
}
