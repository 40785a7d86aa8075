package source

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/asrlinux/asr/internal/blockmap"
)

// raw is a raw disk read as a stream: a plain or compressed image file, or a
// block device. Its digests are computed as it is read.
type raw struct {
	info   Info
	open   func() (io.ReadCloser, error) // a fresh stream from the start
	closer io.Closer
}

func (r *raw) Info() Info { return r.info }

func (r *raw) Close() error {
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}

func (r *raw) Run(ctx context.Context, workers int, fn func(Chunk) error) error {
	rc, err := r.open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return RunStream(ctx, workers, rc, r.info.Size, r.info.ChunkSize, fn)
}

// RunStream cuts a raw stream of exactly size bytes into chunks and delivers
// them from workers goroutines, which detect zeros and compute digests in
// parallel. A stream that ends early or runs long is an error: the size was
// checked against the target before any write, so it must not change now.
func RunStream(ctx context.Context, workers int, r io.Reader, size int64, cs int, fn func(Chunk) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		i   int
		buf []byte
	}
	pool := make(chan []byte, 2*workers)
	for range cap(pool) {
		pool <- make([]byte, cs)
	}
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		for i, off := 0, int64(0); off < size; i, off = i+1, off+int64(cs) {
			var buf []byte
			select {
			case buf = <-pool:
			case <-ctx.Done():
				return
			}
			n := int(min(int64(cs), size-off))
			if _, err := io.ReadFull(r, buf[:n]); err != nil {
				cancel(fmt.Errorf("reading source at byte %d: %w (the source ended before its %d bytes)", off, err, size))
				return
			}
			select {
			case jobs <- job{i, buf[:n]}:
			case <-ctx.Done():
				return
			}
		}
		// One more byte means the source grew since it was measured.
		var one [1]byte
		if n, _ := r.Read(one[:]); n > 0 {
			cancel(fmt.Errorf("source is longer than the %d bytes measured before the restore", size))
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if ctx.Err() != nil {
					pool <- j.buf[:cap(j.buf)]
					continue
				}
				c := Chunk{Index: j.i, Zero: blockmap.IsZero(j.buf)}
				if !c.Zero {
					c.Data, c.Sum = j.buf, RawHash.Sum(j.buf)
				}
				err := fn(c)
				pool <- j.buf[:cap(j.buf)]
				if err != nil {
					cancel(err)
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}
