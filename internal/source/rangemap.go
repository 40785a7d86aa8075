package source

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/asrlinux/asr/internal/blockmap"
)

// A plain raw disk on a web server that takes ranges is mapped where it
// lies: blockmap reads its partition table and filesystem metadata through
// range requests (rangeReaderAt), and only the chunks holding used data are
// then fetched, the free bytes inside them delivered as zeros. Nothing is
// downloaded twice and nothing is kept on the local disk, which the
// appliance (running from memory) does not have. When the file must be
// checked against a published SHA-256, every byte of it has to go through
// the hash anyway: it is then read as one stream, and the map only decides
// what is written (maskChunks).

// rangeBlock is the unit a rangeReaderAt fetches and keeps: metadata reads
// are small (a superblock, a bitmap block) and clustered, so one request
// serves many of them.
const rangeBlock = 256 << 10

// rangeCache is how many blocks a rangeReaderAt keeps: 16 MiB, whatever the
// disk.
const rangeCache = 64

// rangeReaderAt reads a transport that takes ranges at any offset, through
// a small cache of rangeBlock blocks. Every request is under the
// transport's stall watchdog; requests counts them, for the log.
type rangeReaderAt struct {
	ctx  context.Context
	t    transport
	size int64

	mu       sync.Mutex
	blocks   map[int64][]byte
	order    []int64 // cached block numbers, oldest first
	requests int
}

func newRangeReaderAt(ctx context.Context, t transport, size int64) *rangeReaderAt {
	return &rangeReaderAt{ctx: ctx, t: t, size: size, blocks: make(map[int64][]byte)}
}

func (r *rangeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading at negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.size {
			return n, io.EOF
		}
		b, err := r.block(pos / rangeBlock)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b[pos%rangeBlock:])
	}
	return n, nil
}

// block returns block i of the file, fetching it when it is not cached.
func (r *rangeReaderAt) block(i int64) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.blocks[i]; ok {
		return b, nil
	}
	start := i * rangeBlock
	end := min(start+rangeBlock, r.size)
	b := make([]byte, end-start)
	rc := r.t.open(r.ctx, start, end)
	_, err := io.ReadFull(rc, b)
	rc.Close()
	r.requests++
	if err != nil {
		return nil, fmt.Errorf("reading bytes %d to %d: %w", start, end, err)
	}
	if len(r.order) >= rangeCache {
		delete(r.blocks, r.order[0])
		r.order = r.order[1:]
	}
	r.blocks[i] = b
	r.order = append(r.order, i)
	return b, nil
}

// mapOverRanges maps the filesystems of the raw disk behind t (which takes
// ranges and knows its size) with range requests. It returns nil when the
// map finds no free space: the disk is then read as it always was.
func mapOverRanges(ctx context.Context, t transport) (*blockmap.Map, error) {
	ra := newRangeReaderAt(ctx, t, t.size())
	used, err := mapSource(ra, t.size())
	if err != nil {
		return nil, err
	}
	if used != nil {
		t.logf("Mapped the filesystems of %s with %d range requests: %d of %d bytes are used", t.name(), ra.requests, used.UsedBytes(), t.size())
	}
	return used, nil
}

// runRanges delivers the chunks of a mapped raw disk behind t: a chunk
// without used data is an unused zero chunk, never requested; runs of the
// others are fetched with one range request each (up to spanBytes), and
// their free bytes are delivered as zeros, as mapped does for a local disk.
func runRanges(ctx context.Context, t transport, info Info, used *blockmap.Map, workers int, fn func(Chunk) error) error {
	cs := int64(info.ChunkSize)
	n := int((info.Size + cs - 1) / cs)
	chunkUsed := func(i int) bool {
		off := int64(i) * cs
		return used.Used(off, min(cs, info.Size-off))
	}
	type span struct{ a, b int }
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan span)
	go func() {
		defer close(next)
		for a := 0; a < n; {
			b := a + 1
			if chunkUsed(a) {
				for b < n && int64(b-a)*cs < spanBytes && chunkUsed(b) {
					b++
				}
			}
			select {
			case next <- span{a, b}:
			case <-ctx.Done():
				return
			}
			a = b
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, cs)
			for s := range next {
				if err := fetchRawSpan(ctx, t, info, used, s.a, s.b, buf, fn); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// fetchRawSpan delivers chunks [a, b): one unused chunk, or a run of used
// ones read with one request.
func fetchRawSpan(ctx context.Context, t transport, info Info, used *blockmap.Map, a, b int, buf []byte, fn func(Chunk) error) error {
	cs := int64(info.ChunkSize)
	start := int64(a) * cs
	end := min(int64(b)*cs, info.Size)
	if !used.Used(start, min(cs, info.Size-start)) {
		return fn(Chunk{Index: a, Zero: true, Unused: true})
	}
	rc := t.open(ctx, start, end)
	defer rc.Close()
	for i := a; i < b; i++ {
		off := int64(i) * cs
		data := buf[:min(cs, info.Size-off)]
		if _, err := io.ReadFull(rc, data); err != nil {
			return fmt.Errorf("source %s: reading chunk %d: %w", t.name(), i, err)
		}
		if err := fn(maskChunk(used, Chunk{Index: i, Data: data}, off)); err != nil {
			return err
		}
	}
	return nil
}

// maskChunk makes chunk c, read whole from offset off of a mapped disk,
// what imagescan would store for it: unused when no byte of it is used,
// else its free bytes zeroed, with Zero and Sum set for the result.
// c.Data may be changed in place.
func maskChunk(used *blockmap.Map, c Chunk, off int64) Chunk {
	n := int64(len(c.Data))
	ext := used.UsedIn(off, n)
	if len(ext) == 0 {
		return Chunk{Index: c.Index, Zero: true, Unused: true}
	}
	pos := off
	for _, e := range append(ext, blockmap.Extent{Off: off + n}) {
		if e.Off > pos {
			clear(c.Data[pos-off : e.Off-off])
		}
		pos = max(pos, e.End())
	}
	if blockmap.IsZero(c.Data) {
		return Chunk{Index: c.Index, Zero: true}
	}
	return Chunk{Index: c.Index, Data: c.Data, Sum: RawHash.Sum(c.Data)}
}

// maskChunks wraps fn so that each chunk of a stream (read whole, for its
// checksum) reaches it as maskChunk makes it.
func maskChunks(used *blockmap.Map, cs int, fn func(Chunk) error) func(Chunk) error {
	return func(c Chunk) error {
		if c.Zero {
			off := int64(c.Index) * int64(cs)
			if !used.Used(off, int64(cs)) {
				c.Unused = true
			}
			return fn(c)
		}
		return fn(maskChunk(used, c, int64(c.Index)*int64(cs)))
	}
}
