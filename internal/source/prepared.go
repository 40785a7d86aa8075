package source

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/asrlinux/asr/internal/aligned"
	"github.com/asrlinux/asr/internal/image"
)

// prepared is a prepared image read by random access.
type prepared struct {
	im   *image.Image
	info Info
	f    *os.File
	have func(int) bool // chunks the target holds already (delta): not read
}

// OpenPrepared opens a prepared image file and checks its header, manifest
// digest and length.
func OpenPrepared(path string, f *os.File, size int64) (Source, error) {
	im, err := image.Open(f, size)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	m := im.Manifest
	info := Info{
		Kind: "prepared image", Path: path, Size: m.LogicalSize, ChunkSize: int(m.ChunkSize),
		Manifest: m, Digest: im.Digest, Header: im.Header,
	}
	if size >= 0 {
		info.Signatures, info.SignaturesErr = image.ReadSignatures(f, size, m)
	}
	return &prepared{im: im, f: f, info: info}, nil
}

func (p *prepared) Info() Info { return p.info }

func (p *prepared) Close() error {
	p.im.Close()
	return p.f.Close()
}

// Skip leaves out of Run the stored chunks the target holds already.
func (p *prepared) Skip(have func(int) bool) { p.have = have }

func (p *prepared) Run(ctx context.Context, workers int, fn func(Chunk) error) error {
	return RunImage(ctx, workers, p.im.Manifest, p.have, p.im.ReadChunk, fn)
}

// RunImage delivers the chunks of a manifest, reading each stored chunk with
// read (which decodes and checks it), on workers goroutines. Zero chunks are
// delivered without reading anything; stored chunks for which have reports
// true (nil: none) are neither read nor delivered.
func RunImage(ctx context.Context, workers int, m *image.Manifest, have func(int) bool,
	read func(i int, dst, scratch []byte) ([]byte, []byte, error), fn func(Chunk) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := indices(ctx, len(m.Chunks))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var dst, scratch []byte
			for i := range next {
				if m.Chunks[i].Codec.Stored() && !wanted(have, i) {
					continue
				}
				c := NotStored(m, i)
				if m.Chunks[i].Codec.Stored() {
					c = Chunk{Index: i}
					dst, scratch = chunkBuf(dst, m), chunkBuf(scratch, m)
					var err error
					dst, scratch, err = read(i, dst, scratch)
					if err != nil {
						cancel(err)
						return
					}
					c.Data, c.Sum = dst, m.Chunks[i].Sum
				}
				if err := fn(c); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// chunkBuf returns b, or when b has no memory yet a buffer for a chunk of m:
// decoded into, it is memory the target writes with O_DIRECT as it is,
// without a copy; read into, it holds any stored chunk (a stored chunk is no
// larger than a chunk: it would have been kept raw). Grown as larger chunks
// came, a buffer was allocated and faulted in again and again, two thirds
// of a restore's page faults. A worker takes its buffers with its first
// stored chunk, not before: a delta restore that fetches one chunk left
// every other worker's 16 MiB allocated and cleared for nothing.
func chunkBuf(b []byte, m *image.Manifest) []byte {
	if cap(b) == 0 {
		return aligned.Make(int(m.ChunkSize))[:0]
	}
	return b
}

// ReadChunk reads, decodes and checks chunk i.
func (p *prepared) ReadChunk(i int) ([]byte, error) {
	data, _, err := p.im.ReadChunk(i, nil, nil)
	return data, err
}
