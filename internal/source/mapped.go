package source

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/asrlinux/asr/internal/blockmap"
)

// mapped is a raw disk image file or block device whose filesystems were
// mapped when it was opened: chunks of free space are not read at all, and
// the free bytes of other chunks are delivered as zeros, as a prepared image
// made by imagescan would hold them.
type mapped struct {
	info   Info
	r      io.ReaderAt
	used   *blockmap.Map
	closer io.Closer
}

func (m *mapped) Info() Info { return m.info }

func (m *mapped) Close() error { return m.closer.Close() }

// Run reads the used chunks with ReadAt from workers goroutines, which also
// zero free bytes, detect zeros and compute digests.
func (m *mapped) Run(ctx context.Context, workers int, fn func(Chunk) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cs := int64(m.info.ChunkSize)
	next := indices(ctx, int((m.info.Size+cs-1)/cs))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, cs)
			for i := range next {
				off := int64(i) * cs
				b := buf[:min(cs, m.info.Size-off)]
				c, err := m.chunk(i, off, b)
				if err == nil {
					err = fn(c)
				}
				if err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

func (m *mapped) chunk(i int, off int64, b []byte) (Chunk, error) {
	ext := m.used.UsedIn(off, int64(len(b)))
	if len(ext) == 0 {
		return Chunk{Index: i, Zero: true, Unused: true}, nil
	}
	clear(b)
	for _, e := range ext {
		if _, err := m.r.ReadAt(b[e.Off-off:e.End()-off], e.Off); err != nil {
			return Chunk{}, fmt.Errorf("reading source at byte %d: %w", e.Off, err)
		}
	}
	if blockmap.IsZero(b) {
		return Chunk{Index: i, Zero: true}, nil
	}
	return Chunk{Index: i, Data: b, Sum: RawHash.Sum(b)}, nil
}

// indices feeds 0 to n-1 to workers until ctx ends.
func indices(ctx context.Context, n int) <-chan int {
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	return next
}

// mapSource maps the filesystems of a raw file or device; a map that finds
// no free space is not worth the per-chunk reads, and the plain stream is
// used instead (nil).
func mapSource(f io.ReaderAt, size int64) (*blockmap.Map, error) {
	used, err := blockmap.Build(f, size)
	if err != nil {
		return nil, err
	}
	if used.UsedBytes() >= size {
		return nil, nil
	}
	return used, nil
}
