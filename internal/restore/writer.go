package restore

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/asrlinux/asr/internal/aligned"
	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/partition"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/target"
)

// writer puts chunks on the target and remembers what it wrote.
type writer struct {
	tgt         *target.Target
	info        source.Info
	last        int
	sums        []sum
	seen        []atomic.Bool
	mu          sync.Mutex
	deferred    map[int][]byte
	dataBytes   atomic.Int64
	zeroChunks  atomic.Int64
	unusedBytes atomic.Int64

	// A delta restore's: the chunks the target holds already (nil for a
	// full restore), and what was fetched and written.
	have                  chunkSet
	fetched, fetchedBytes atomic.Int64
	written               atomic.Int64

	// gate is held (read) by every write to the target and taken (write)
	// by stop, so that once stop returns nothing more is written: a
	// source that does not notice a signal cannot write after the first
	// chunk was blanked.
	gate    sync.RWMutex
	stopped bool

	grow      bool
	hasTable  bool                 // the first chunk holds a partition table
	tableNote string               // how the table was adjusted for the target
	grown     *partition.Partition // the partition --grow enlarged
	extra     []patch              // written beyond the image, to verify

	// rb reads each chunk back past the page cache right after it is
	// written (nil: --noverify, or a target that cannot be read past the
	// cache, which the verify pass then reads whole after the final flush).
	// The put that wrote the chunk reads it, in pieces of readPiece bytes,
	// and compares each with the source's own buffer, which it still holds:
	// no copy of the chunk is made, and each piece is compared while it is
	// still in the CPU's cache. The other workers go on decoding and writing
	// meanwhile, so reads and writes of different chunks overlap.
	rb       *target.Reader
	readBack atomic.Int64 // bytes read back and found equal as they were written
	// pieces keeps readPiece-sized aligned buffers for the read-backs,
	// one for each put reading at once.
	pieces *aligned.Pool
	// bufs gives aligned chunk buffers for data a source delivered
	// unaligned on its way to a direct write.
	bufs *aligned.Pool
	// unsynced counts bytes written since the last periodic flush; syncing
	// is held by the one put that flushes. syncErr is a flush's failure,
	// returned by every later put.
	unsynced atomic.Int64
	syncing  atomic.Bool
	syncErr  atomic.Pointer[error]

	// afterWrite, when set (tests only), runs between writing (or, for a
	// zero chunk, zeroing) chunk i and reading it back: it stands for a device that loses or changes a
	// write, which cannot be caused on demand for real.
	afterWrite func(i int)
}

// syncStep is how much is written between two flushes. The target is
// flushed as the restore goes, as bmaptool does, rather than all at the end:
// on a disk-backed target the one final flush of a whole image was half
// of the restore's time, with the CPU idle; in steps it overlaps with
// reading and decoding the next chunks, and dirty memory stays bounded.
const syncStep = 64 << 20

// patch is bytes written at off outside the image's chunks.
type patch struct {
	off  int64
	data []byte
}

// sum is what verification expects of a chunk.
type sum struct {
	zero   bool
	unused bool // free space: anything may be there
	// kept is a chunk a delta restore found matching and did not write.
	// Its sum matched on an O_DIRECT read of the target in this run;
	// it is read again only when recheck is set (see markRechecks), and
	// must then read as it did, which crc (CRC-32C, when hasCRC) shows at
	// a fraction of the hash's cost; without one, sha does.
	kept    bool
	recheck bool
	hasCRC  bool
	crc     uint32
	sha     [32]byte
	// readBack: written and read back equal right away (see
	// readBackAsWritten); the verify pass skips it.
	readBack bool
	// held is a held-back chunk (the first or the last) as it was written,
	// after the final flush: the verify pass compares it byte for byte,
	// which costs less than hashing it again (its sum was checked, or,
	// for a first chunk whose partition table was adjusted, computed).
	held []byte
}

func newWriter(tgt *target.Target, info source.Info, grow bool, bufs *aligned.Pool) *writer {
	n := int((info.Size + int64(info.ChunkSize) - 1) / int64(info.ChunkSize))
	w := &writer{tgt: tgt, info: info, last: n - 1, sums: make([]sum, n), seen: make([]atomic.Bool, n), deferred: map[int][]byte{}, grow: grow,
		bufs: bufs}
	return w
}

// readPiece is how much of a chunk is read back at a time. Each read is a
// syscall, a wait and a wake-up; at 1 MiB those cost a verified restore
// more than the cache warmth of a small piece saved (2 GiB restore onto a
// loop device, 9 interleaved runs: 1.18 core-s in asr at 1 MiB, 1.11 at
// 4 MiB, 1.09 at 8 MiB). 4 MiB keeps most of that gain at half a chunk
// of memory per worker (a loop device or a disk splits the request anyway).
const readPiece = 4 << 20

// readBackAsWritten makes the writer read every chunk it writes back past
// the page cache and compare it with the bytes it wrote: those were checked
// against the image's sum by the source, so equal bytes are verified
// without a second hashing pass. Zero chunks, which the erase or a zeroing
// left on the target, are read back as they come too and must read as
// zeros. It reports false (and changes nothing) where the target cannot be
// read past the cache (no O_DIRECT): there the verify pass reads it all
// after the final flush and after dropping the cache.
func (w *writer) readBackAsWritten(workers int) (bool, error) {
	r, err := w.tgt.OpenReader()
	if err != nil {
		return false, err
	}
	if !r.Direct {
		r.Close()
		return false, nil
	}
	w.rb = r
	w.pieces = aligned.NewPool(readPiece, workers+1)
	return true, nil
}

// check reads chunk i, just written at off, back past the page cache and
// compares it with data, what was written; want names what data is in the
// error ("read back right after writing differ from what was written").
// A nil data stands for zeros: the chunk must read as zeros.
func (w *writer) check(i int, data []byte, n int, off int64) error {
	buf := w.pieces.Get()
	defer w.pieces.Put(buf)
	for p := 0; p < n; p += readPiece {
		k := min(readPiece, n-p)
		got, err := w.rb.ReadAt(buf, k, off+int64(p))
		if err != nil {
			return fmt.Errorf("verification: %s: %w", w.tgt.Path, err)
		}
		if data == nil {
			if !blockmap.IsZero(got) {
				return fmt.Errorf("verification failed: %s bytes %d to %d (chunk %d), zeros in the image, do not read as zeros after the erase: the device does not hold what it was given", w.tgt.Path, off, off+int64(n), i)
			}
			continue
		}
		if !bytes.Equal(got, data[p:p+k]) {
			return fmt.Errorf("verification failed: %s bytes %d to %d read back right after writing differ from what was written (chunk %d): the device does not hold what it was given", w.tgt.Path, off, off+int64(n), i)
		}
	}
	w.sums[i].readBack = true
	w.readBack.Add(int64(n))
	return nil
}

// close stops the writer and releases the reader.
func (w *writer) close() {
	w.stop()
	if w.rb != nil {
		w.rb.Close()
		w.rb = nil
	}
}

func (w *writer) chunkLen(i int) int {
	off := int64(i) * int64(w.info.ChunkSize)
	return int(min(int64(w.info.ChunkSize), w.info.Size-off))
}

// reuse makes w a delta restore's writer: the stored chunks in have are on
// the target already and expect their manifest digests; head, when set,
// is the target's first chunk, which matched and is written back last. The
// chunks the image does not store were dealt with by eraseDelta. It
// returns the bytes that will not come from the source.
//
// crcs are the CRC-32C of the matching chunks in crcd as compare read
// them: what verification expects of those left as they were (the others
// are read again, if at all, against their sum). The first chunk is
// written, so it is verified by its sum like every written chunk.
func (w *writer) reuse(have chunkSet, crcs []uint32, crcd chunkSet, head []byte) int64 {
	w.have = have
	m := w.info.Manifest
	var n int64
	for i, c := range m.Chunks {
		if c.Codec.Stored() && have.has(i) {
			w.sums[i] = sum{sha: c.Sum, kept: i != 0 || head == nil, crc: crcs[i], hasCRC: crcd.has(i)}
			n += int64(w.chunkLen(i))
		}
	}
	if head != nil {
		w.deferred[0] = head
	}
	return n
}

// markRechecks marks the kept chunks that the verify pass reads again: those
// next to a range this run changed (a written chunk, a chunk zeroed or
// discarded, the held-back first chunk, or bytes written past the image's
// end for the last one). It returns the bytes of the kept chunks that are
// not read again: verified by the comparison alone.
//
// Why this is as safe as a full restore's verification: a kept chunk's
// sum matched what an O_DIRECT read of the target returned in this run,
// so it held the image's bytes then; what can change it afterwards is a
// write of this run landing on it (every one of them is aimed at other
// chunks: their offsets come from chunk indices) or the device losing what
// it held. A full restore verifies a chunk by reading it back once, right
// after writing it, and does not read it again after the writes that
// follow: it takes the same exposure for every chunk it writes. What a
// write that misses its range does is run past an end of it, onto the
// chunk next door: those are read again (and must match their CRC-32C),
// which a full restore does not do. A kept chunk far from every write is
// not read twice, as a full restore's written chunk is not.
//
// all marks every kept chunk: when the comparison could not read past the
// page cache, it did not show what the device holds.
func (w *writer) markRechecks(all bool) (keptOnly int64) {
	changed := func(j int) bool {
		if j < 0 || j > w.last {
			return false
		}
		s := w.sums[j]
		// A zero chunk in have was found zero and left as it was;
		// every other chunk but a kept one was written, zeroed or
		// discarded.
		return !s.kept && !(s.zero && w.have.has(j))
	}
	for i := range w.sums {
		s := &w.sums[i]
		if !s.kept {
			continue
		}
		s.recheck = all || changed(i-1) || changed(i+1) || (i == w.last && len(w.extra) > 0)
		if !s.recheck {
			keptOnly += int64(w.chunkLen(i))
		}
	}
	return keptOnly
}

// reused reports whether chunk i is a stored chunk the target holds.
func (w *writer) reused(i int) bool {
	return w.have != nil && w.info.Manifest.Chunks[i].Codec.Stored() && w.have.has(i)
}

// errStopped is what a write gets after stop.
var errStopped = fmt.Errorf("%w: the writers were stopped", ErrInterrupted)

// stop waits for writes in flight and refuses every later one.
func (w *writer) stop() {
	w.gate.Lock()
	w.stopped = true
	w.gate.Unlock()
}

// put writes one chunk; it is called from many goroutines.
func (w *writer) put(c source.Chunk) (int, error) {
	w.gate.RLock()
	defer w.gate.RUnlock()
	if w.stopped {
		return 0, errStopped
	}
	if c.Index < 0 || c.Index > w.last {
		return 0, fmt.Errorf("source delivered chunk %d of %d", c.Index, w.last+1)
	}
	if w.reused(c.Index) {
		// A source that cannot skip delivered a chunk the target holds:
		// it is not written.
		return 0, nil
	}
	if w.seen[c.Index].Swap(true) {
		return 0, fmt.Errorf("source delivered chunk %d twice", c.Index)
	}
	n := w.chunkLen(c.Index)
	off := int64(c.Index) * int64(w.info.ChunkSize)
	if c.Unused {
		// Free space is left as the erase left it, as partclone leaves it:
		// no filesystem reads it, and writing it would cost as much as
		// copying the disk whole.
		w.sums[c.Index] = sum{unused: true}
		w.unusedBytes.Add(int64(n))
		return n, nil
	}
	if c.Zero {
		w.sums[c.Index] = sum{zero: true}
		w.zeroChunks.Add(1)
		if !w.tgt.Erased && w.have == nil { // a delta's erase zeroed it
			if err := w.tgt.ZeroRange(off, int64(n)); err != nil {
				return 0, err
			}
		}
		if w.afterWrite != nil {
			w.afterWrite(c.Index)
		}
		if w.rb != nil {
			// Read now, alongside the writes, rather than in the verify
			// pass after them: nothing writes this range again.
			if err := w.check(c.Index, nil, n, off); err != nil {
				return 0, err
			}
		}
		return n, nil
	}
	if len(c.Data) != n {
		return 0, fmt.Errorf("chunk %d is %d bytes, want %d", c.Index, len(c.Data), n)
	}
	w.sums[c.Index] = sum{sha: c.Sum}
	w.dataBytes.Add(int64(n))
	if w.have != nil {
		w.fetched.Add(1)
		w.fetchedBytes.Add(int64(w.info.Manifest.Chunks[c.Index].Length))
	}
	if c.Index == 0 || c.Index == w.last {
		w.mu.Lock()
		// Aligned, so it goes out past the cache without another copy,
		// and on huge pages, so keeping it costs no page faults.
		w.deferred[c.Index] = aligned.Clone(c.Data)
		w.mu.Unlock()
		return n, nil
	}
	if err := w.write(c.Index, c.Data, off); err != nil {
		return 0, err
	}
	w.written.Add(1)
	return n, nil
}

// write puts one checked chunk at off: past the page cache where the target
// allows it (from an aligned copy if the source's buffer is not aligned),
// then reads it back (see readBackAsWritten). Every syncStep bytes the
// target is flushed.
func (w *writer) write(i int, data []byte, off int64) error {
	if err := w.syncErr.Load(); err != nil {
		return *err
	}
	out := data
	var b []byte
	if w.tgt.Direct() && !aligned.Is(data) {
		b = w.bufs.Get()
		// (A chunk that is not whole logical blocks, the tail of an
		// odd-sized image, is written through the cache by WriteAt.)
		out = b[:copy(b, data)]
	}
	err := w.writeRuns(out, off)
	if b != nil {
		w.bufs.Put(b)
	}
	if err != nil {
		return err
	}
	if !w.tgt.Direct() {
		w.tgt.WriteBehind(off, int64(len(data)))
	}
	if w.afterWrite != nil {
		w.afterWrite(i)
	}
	if w.rb != nil {
		// Compared with the source's buffer: the bytes its sum
		// was checked on.
		if err := w.check(i, data, len(data), off); err != nil {
			return err
		}
	}
	if w.unsynced.Add(int64(len(data))) >= syncStep && w.syncing.CompareAndSwap(false, true) {
		// One put flushes while the others go on writing.
		w.unsynced.Store(0)
		if err := w.tgt.Sync(); err != nil {
			w.syncErr.Store(&err)
			w.syncing.Store(false)
			return err
		}
		w.syncing.Store(false)
	}
	return nil
}

// zeroGap is the shortest run of zero pages inside a data chunk that
// writeRuns leaves unwritten: shorter ones are written with their
// neighbours, so that a chunk never turns into hundreds of small writes.
const zeroGap = 64 << 10

// writeRuns writes data at off. Onto a target that the erase left reading
// as zeros (a full restore, not a delta), runs of zero pages of zeroGap
// bytes or more are skipped: a filesystem's large chunks hold its used
// blocks with free ones zeroed between them (NTFS leaves runs of free
// clusters of megabytes inside an 8 MiB chunk), and writing those zeros
// would write twice the used data, where partclone writes only used
// blocks. The read-back and the verify pass still compare the whole chunk,
// so a device that did not really read as zero fails the restore.
func (w *writer) writeRuns(data []byte, off int64) error {
	if !w.tgt.Erased || w.have != nil || len(data) < 2*zeroGap {
		_, err := w.tgt.WriteAt(data, off)
		return err
	}
	const page = 4096 // a multiple of every logical block size: pieces stay aligned
	start := 0        // the first byte not yet written or skipped
	for p := 0; p < len(data); {
		if !blockmap.IsZero(data[p:min(p+page, len(data))]) {
			p += page
			continue
		}
		z := p // a run of zero pages starts at p
		for p < len(data) && blockmap.IsZero(data[p:min(p+page, len(data))]) {
			p += page
		}
		p = min(p, len(data))
		if p-z < zeroGap {
			continue
		}
		if z > start {
			if _, err := w.tgt.WriteAt(data[start:z], off+int64(start)); err != nil {
				return err
			}
		}
		start = p
	}
	if start < len(data) {
		_, err := w.tgt.WriteAt(data[start:], off+int64(start))
		return err
	}
	return nil
}

// finish checks that every chunk came, flushes, then writes the held-back
// chunks (the last, then the first) and flushes again.
func (w *writer) finish() error {
	for i := range w.seen {
		if !w.seen[i].Load() && !w.reused(i) {
			return fmt.Errorf("source ended without chunk %d", i)
		}
	}
	// Every written chunk read back equal (each put read its chunk back
	// before it returned) before the first and last are written: a device
	// that garbles writes never gets a valid-looking head.
	if err := w.tgt.Sync(); err != nil {
		return err
	}
	if err := w.adjustTable(); err != nil {
		return err
	}
	for _, i := range []int{w.last, 0} {
		if d, ok := w.deferred[i]; ok {
			if _, err := w.tgt.WriteAt(d, int64(i)*int64(w.info.ChunkSize)); err != nil {
				return err
			}
			w.written.Add(1)
			w.sums[i].held = d
			delete(w.deferred, i)
		}
	}
	return w.tgt.Sync()
}
