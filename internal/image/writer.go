package image

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/asrlinux/asr/internal/blockmap"
)

// ScanOptions control how Scan builds an image.
type ScanOptions struct {
	ChunkSize int       // 0 means DefaultChunkSize; imagescan passes ScanChunkSize
	Workers   int       // compressing goroutines; 0 means one per CPU
	Created   time.Time // recorded creation time; callers choose it so output can be reproducible
	Name      string    // what was scanned, for `asr info`
	Tool      string    // the writing program's version
	// Progress, if set, is called from one goroutine with the number of
	// source bytes consumed so far.
	Progress func(done int64)
	// Map, if set, says which bytes of the source its filesystems use. A
	// chunk with no used byte is recorded as CodecUnused and not stored;
	// the unused bytes of other chunks are stored as zeros, so free space
	// full of old data costs nothing. Nil keeps every byte. When src is
	// also an io.ReaderAt, the disk is Map.Size bytes and chunks of free
	// space are not even read.
	Map *blockmap.Map
	// Level is how hard chunks are compressed; the zero value is
	// LevelDefault.
	Level Level
	// SHA256 makes the chunk sums SHA-256, readable by asr versions that
	// predate BLAKE3 images; the default is BLAKE3 (see Hash).
	SHA256 bool
}

// Scan reads a raw disk from src to its end and writes a prepared image to
// out. Chunks are compressed on all workers; the output is the same for the
// same input and options. Because the manifest precedes the chunk data but
// is known only at the end (a compressed source has no size until it is read),
// chunk data is first spooled to a temporary file beside out and then copied
// in with copy_file_range.
func Scan(ctx context.Context, src io.Reader, out *os.File, opts ScanOptions) (*Manifest, Digest, error) {
	zl, err := opts.Level.zstd()
	if err != nil {
		return nil, Digest{}, err
	}
	return scan(ctx, src, out, opts, zl)
}

// scan is Scan at zstd level zl.
func scan(ctx context.Context, src io.Reader, out *os.File, opts ScanOptions, zl zstd.EncoderLevel) (*Manifest, Digest, error) {
	cs := opts.ChunkSize
	if cs == 0 {
		cs = DefaultChunkSize
	}
	if cs < MinChunkSize || cs > MaxChunkSize || cs%4096 != 0 {
		return nil, Digest{}, fmt.Errorf("chunk size %d: must be a multiple of 4096 from %d to %d", cs, MinChunkSize, MaxChunkSize)
	}
	if len(opts.Name) > maxNameLen || len(opts.Tool) > maxNameLen {
		return nil, Digest{}, fmt.Errorf("image name and tool version must be at most %d bytes", maxNameLen)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zl),
		zstd.WithEncoderCRC(false), // chunks carry SHA-256 already
		// EncodeAll borrows one of this many encoder states: one per worker,
		// or the workers queue for a single one. The output does not depend
		// on it.
		zstd.WithEncoderConcurrency(workers),
		zstd.WithZeroFrames(true))
	if err != nil {
		return nil, Digest{}, fmt.Errorf("zstd encoder: %w", err)
	}
	defer enc.Close()

	spool, err := os.CreateTemp(filepath.Dir(out.Name()), "."+filepath.Base(out.Name())+".spool-")
	if err != nil {
		return nil, Digest{}, fmt.Errorf("creating spool file: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()

	m := &Manifest{ChunkSize: uint32(cs), Created: opts.Created.UTC(), Name: opts.Name, Tool: opts.Tool, Hash: HashBLAKE3}
	if opts.SHA256 {
		m.Hash = HashSHA256
	}
	if err := scanChunks(ctx, src, spool, enc, m, workers, opts.Map, opts.Progress); err != nil {
		return nil, Digest{}, err
	}
	if m.LogicalSize == 0 {
		return nil, Digest{}, errors.New("source is empty: nothing to scan")
	}

	// Lay out the file now that the chunk table is known. The data starts on
	// a 4 KiB boundary so stored chunks can be read with aligned I/O.
	mlen := len(MarshalManifest(m))
	m.DataOffset = (int64(HeaderSize+mlen) + 4095) &^ 4095
	for i := range m.Chunks {
		if m.Chunks[i].Codec.Stored() {
			m.Chunks[i].Offset += m.DataOffset
		}
	}
	mb := MarshalManifest(m)
	d := Digest(sha256.Sum256(mb))
	h := Header{Version: Version, ManifestLen: uint64(len(mb)), ManifestDigest: d}
	if m.HasUnused() {
		h.Flags |= FlagUnused
	}
	if m.Hash == HashBLAKE3 {
		h.Flags |= FlagBLAKE3
	}
	head := append(MarshalHeader(h), mb...)
	head = append(head, make([]byte, int(m.DataOffset)-len(head))...)
	if err := out.Truncate(0); err != nil {
		return nil, Digest{}, fmt.Errorf("truncating %s: %w", out.Name(), err)
	}
	if _, err := out.WriteAt(head, 0); err != nil {
		return nil, Digest{}, fmt.Errorf("writing manifest: %w", err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, Digest{}, err
	}
	if _, err := out.Seek(m.DataOffset, io.SeekStart); err != nil {
		return nil, Digest{}, err
	}
	if _, err := io.Copy(out, spool); err != nil {
		return nil, Digest{}, fmt.Errorf("copying chunk data into %s: %w", out.Name(), err)
	}
	if err := out.Sync(); err != nil {
		return nil, Digest{}, fmt.Errorf("syncing %s: %w", out.Name(), err)
	}
	return m, d, nil
}

type scanJob struct {
	index int
	buf   []byte // uncompressed; returned to the pool by the writer
	out   []byte // stored bytes (nil for a zero chunk)
	entry Chunk
	done  chan struct{}
}

// scanChunks reads src in chunk-size pieces, hands them to workers and writes
// the stored bytes to spool in chunk order, filling m.Chunks and m.LogicalSize.
// Offsets are relative to the start of the data area.
//
// Three stages run at once: readChunks (one goroutine) reads chunks into
// buffers from a pool, workers compress them (encodeChunk), and
// spoolChunks, here, writes them in order and returns the buffers.
func scanChunks(ctx context.Context, src io.Reader, spool io.Writer, enc *zstd.Encoder, m *Manifest, workers int, used *blockmap.Map, progress func(int64)) error {
	cs := int(m.ChunkSize)
	// At most 2*workers chunks are in memory: bounded whatever the disk size.
	pool := make(chan []byte, 2*workers)
	for range cap(pool) {
		pool <- make([]byte, cs)
	}
	work := make(chan *scanJob)
	order := make(chan *scanJob, cap(pool))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range work {
				encodeChunk(enc, m.Hash, j, used, int64(j.index)*int64(cs))
				close(j.done)
			}
		})
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(work)
		readErr <- readChunks(ctx, src, used, cs, pool, order, work)
	}()
	done, werr := spoolChunks(order, pool, spool, m, progress, cancel)
	wg.Wait()
	if err := <-readErr; err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	m.LogicalSize = done
	// A short chunk anywhere but the end would break offset arithmetic; the
	// reader only ever returns one at EOF, so this holds by construction.
	return nil
}

// readChunks reads src chunk by chunk into buffers from pool, and sends each
// job both to order (for spoolChunks) and to work (for the workers). It
// returns at the end of src, nil, or on the first error.
func readChunks(ctx context.Context, src io.Reader, used *blockmap.Map, cs int, pool chan []byte, order, work chan<- *scanJob) error {
	// With a map and random access, read by offset, skipping free space.
	var ra io.ReaderAt
	if used != nil {
		ra, _ = src.(io.ReaderAt)
	}
	for i := 0; ; i++ {
		var buf []byte
		select {
		case buf = <-pool:
		case <-ctx.Done():
			return ctx.Err()
		}
		off := int64(i) * int64(cs)
		var n int
		var err error
		if ra != nil {
			if off >= used.Size {
				return nil
			}
			n = int(min(int64(cs), used.Size-off))
			if err := readUsed(ra, used, buf[:n], off); err != nil {
				return fmt.Errorf("reading source at byte %d: %w", off, err)
			}
		} else {
			n, err = io.ReadFull(src, buf[:cs])
		}
		if n > 0 {
			j := &scanJob{index: i, buf: buf[:n], done: make(chan struct{})}
			order <- j
			work <- j
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading source at byte %d: %w", off, err)
		}
	}
}

// readUsed fills buf with the chunk at off, unless the map says it is all
// free space: such a chunk is not read at all. The map covers the source,
// so its end inside buf is an error.
func readUsed(ra io.ReaderAt, used *blockmap.Map, buf []byte, off int64) error {
	if len(used.UsedIn(off, int64(len(buf)))) == 0 {
		return nil
	}
	_, err := ra.ReadAt(buf, off)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// spoolChunks takes the jobs in chunk order as their workers finish them,
// writes their stored bytes to spool, appends their entries to m.Chunks and
// returns their buffers to pool. After a write error it only drains,
// cancelling the reader. It returns the bytes of source scanned.
func spoolChunks(order <-chan *scanJob, pool chan<- []byte, spool io.Writer, m *Manifest, progress func(int64), cancel func()) (int64, error) {
	var werr error
	var pos, done int64
	for j := range order {
		<-j.done
		if werr == nil && len(m.Chunks) == MaxChunks {
			werr = fmt.Errorf("the source is larger than %d chunks of %d bytes, the most an image may have: use a chunk size of at least %d", MaxChunks, m.ChunkSize, 2*m.ChunkSize)
			cancel()
		}
		if werr == nil {
			if j.out != nil {
				j.entry.Offset = pos
				if _, err := spool.Write(j.out); err != nil {
					werr = fmt.Errorf("writing spool: %w", err)
					cancel()
				}
				pos += int64(len(j.out))
			}
			m.Chunks = append(m.Chunks, j.entry)
			done += int64(len(j.buf))
			if progress != nil {
				progress(done)
			}
		}
		pool <- j.buf[:cap(j.buf)]
	}
	return done, werr
}

// encodeChunk fills j's manifest entry and stored bytes; off is where the
// chunk starts on the disk.
func encodeChunk(enc *zstd.Encoder, hash Hash, j *scanJob, used *blockmap.Map, off int64) {
	if used != nil {
		ext := used.UsedIn(off, int64(len(j.buf)))
		if len(ext) == 0 {
			j.entry = Chunk{Codec: CodecUnused}
			return
		}
		// Free space between the used extents is stored as zeros.
		pos := off
		for _, e := range ext {
			clear(j.buf[pos-off : e.Off-off])
			pos = e.End()
		}
		clear(j.buf[pos-off:])
	}
	if blockmap.IsZero(j.buf) {
		j.entry = Chunk{Codec: CodecZero}
		return
	}
	j.entry.Sum = hash.Sum(j.buf)
	z := enc.EncodeAll(j.buf, make([]byte, 0, len(j.buf)))
	if len(z) < len(j.buf) {
		j.out, j.entry.Codec = z, CodecZstd
	} else {
		j.out, j.entry.Codec = j.buf, CodecRaw
	}
	j.entry.Length = uint32(len(j.out))
}
