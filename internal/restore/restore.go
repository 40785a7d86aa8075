// Package restore is the engine behind `asr restore`: it validates a source
// and a target, erases the target, writes every chunk, and verifies the
// result by reading the target back.
//
// The order is the safety story. Every check runs before the first write.
// Erasing zeroes the head of the target first, so from then on it no longer
// looks like the disk it was. Chunks are written as they come, in parallel,
// except the first and last chunk of the image (partition table, superblock,
// GPT backup header), which are written only after everything else is on the
// device; so an interrupted restore leaves a disk that does not look valid.
// The engine does not parse flags or print errors: the caller does.
package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/partition"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/target"
)

// ErrCancelled is returned when the person declined the erase prompt.
var ErrCancelled = errors.New("restore cancelled: nothing was written")

// ErrIncomplete wraps failures after writing began.
var ErrIncomplete = errors.New("the target is incomplete")

// Request is one restore.
type Request struct {
	Source string // path or URL, as given
	Target string // block device or existing file; empty when File is set
	File   string // a new image file to create instead of a target

	Erase    bool
	NoVerify bool
	NoPrompt bool
	Workers  int // 0: a sensible number for the machine
	// Grow enlarges the last partition of a whole-disk image (or, for an
	// image of one volume, its filesystem) to fill a larger target.
	Grow bool
	// GrowFS grows the filesystem in [off, off+size) of the target to fill
	// it, after verification; it says what it did. Required with Grow.
	GrowFS func(ctx context.Context, target string, off, size int64) (string, error)

	// OpenSource opens Source. It is a parameter so network sources plug in
	// without the engine knowing about them. maxSize is the target's size
	// (0: no limit, for a new file): a source that learns its size only by
	// reading itself (compressed, or streamed without a length) stops there.
	OpenSource func(name string, maxSize int64) (source.Source, error)
	// Confirm asks a person a yes/no question; nil means nobody can answer.
	Confirm func(question string) (bool, error)
	Out     *progress.Printer
}

// Result is what a restore did.
type Result struct {
	Target     string
	Size       int64 // logical bytes restored
	DataBytes  int64 // bytes of non-zero chunks written
	Chunks     int
	ZeroChunks int
	// UnusedBytes is free space in the image's filesystems: neither
	// written nor verified.
	UnusedBytes   int64
	Elapsed       time.Duration // erase and write, to the final flush
	Verified      bool
	VerifyTime    time.Duration
	VerifyDirect  bool  // verification bypassed the page cache with O_DIRECT
	VerifiedBytes int64 // bytes read back and compared: all but UnusedBytes
	// Unchecked says why nothing published checked the source's bytes (a
	// raw download without a checksum): Verified then means the disk
	// matches what was downloaded, no more. Empty when they were checked.
	Unchecked string
	// Table says how the partition table was adjusted for a larger
	// target ("GPT backup moved to the end of the disk"); empty if not.
	Table string
	// Grown is what --grow did; empty without it.
	Grown string
}

// Run performs a restore: validate, confirm, erase, write, verify.
func Run(ctx context.Context, req Request) (res *Result, err error) {
	out := req.Out
	if !req.Erase && req.File == "" {
		return nil, errors.New("a block restore needs --erase (restore without it is the file copy of internal/filerestore)")
	}
	workers := req.Workers
	if workers <= 0 {
		// I/O-bound work wants a deeper queue than the core count alone.
		workers = max(4, runtime.NumCPU())
	}

	out.Step("Validating target")
	var tgt *target.Target
	if req.File != "" {
		if err := target.CheckNew(req.File, req.Erase); err != nil {
			out.Fail(err)
			return nil, err
		}
	} else {
		if tgt, err = target.Open(req.Target); err != nil {
			out.Fail(err)
			return nil, err
		}
		defer tgt.Close()
	}
	out.Done()

	out.Step("Validating source")
	var maxSize int64
	if tgt != nil {
		maxSize = tgt.Size
	}
	src, err := req.OpenSource(req.Source, maxSize)
	if err != nil {
		out.Fail(err)
		return nil, err
	}
	defer src.Close()
	if f, ok := src.(source.Finisher); ok {
		// Deferred after Close, so it runs before it: the source still
		// has its connection to say how it ended.
		defer func() { f.Finished(err) }()
	}
	info := src.Info()
	// Each worker holds about three chunks (stored, decoded, read back):
	// keep them within 96 MiB whatever the core count and chunk size, so
	// a restore stays far below the appliance's 256 MiB budget.
	workers = min(workers, max(2, (96<<20)/(3*max(info.ChunkSize, 1))))
	if tgt != nil && info.Path != "" {
		if bad, why := tgt.Overlaps(info.Path); bad {
			err := fmt.Errorf("source %s and target %s: %s", req.Source, req.Target, why)
			out.Fail(err)
			return nil, err
		}
	}
	out.Done()

	if info.Manifest != nil {
		out.Step("Retrieving scan information")
		out.Done()
	}

	out.Step("Validating sizes")
	if tgt != nil && tgt.Size < info.Size {
		err := fmt.Errorf("target %s is too small: %s (%d bytes), the source needs %s (%d bytes)",
			req.Target, HumanBytes(tgt.Size), tgt.Size, HumanBytes(info.Size), info.Size)
		out.Fail(err)
		return nil, err
	}
	if req.Grow && (tgt == nil || tgt.Size == info.Size) {
		err := fmt.Errorf("--grow: the target is exactly the image's size (%s): there is nothing to grow into", HumanBytes(info.Size))
		out.Fail(err)
		return nil, err
	}
	if req.Grow && req.GrowFS == nil {
		return nil, errors.New("restore: Grow needs GrowFS")
	}
	out.Done()

	name := req.Target
	if req.File != "" {
		name = req.File
	}
	if !req.NoPrompt {
		if req.Confirm == nil {
			return nil, fmt.Errorf("not erasing %s: there is no terminal to confirm on; add --noprompt to erase without asking", name)
		}
		ok, err := req.Confirm(fmt.Sprintf("Erase contents of %s? [ny]: ", name))
		if err != nil {
			return nil, fmt.Errorf("reading the answer: %w", err)
		}
		if !ok {
			return nil, ErrCancelled
		}
	}

	// Every check has passed: from here on the target changes.
	start := time.Now()
	if req.File != "" {
		out.StepNamed("Creating", "Creating "+req.File)
		if tgt, err = target.Create(req.File, info.Size); err != nil {
			out.Fail(err)
			return nil, err
		}
		defer tgt.Close()
	} else {
		out.StepNamed("Erasing", "Erasing target device "+req.Target)
		if err := tgt.Erase(info.Size, int64(info.ChunkSize)); err != nil {
			err = fmt.Errorf("erasing %s: %w", req.Target, err)
			out.Fail(err)
			return nil, err
		}
	}
	out.Done()

	w := newWriter(tgt, info, req.Grow)
	out.Start("Restoring", info.Size)
	err = src.Run(ctx, workers, func(c source.Chunk) error {
		n, err := w.put(c)
		out.Add(int64(n))
		return err
	})
	if err == nil {
		err = w.finish()
	}
	if err != nil {
		out.Fail(err)
		return nil, fmt.Errorf("%w: %w (its first chunk was left blank, so it will not pass as a good disk; run the restore again)", ErrIncomplete, err)
	}
	out.Finish()
	if n, ok := src.(source.Noter); ok && n.Note() != "" {
		out.Info("Source check: %s", n.Note())
	}
	res = &Result{
		Target: name, Size: info.Size, DataBytes: w.dataBytes.Load(),
		Chunks: len(w.sums), ZeroChunks: int(w.zeroChunks.Load()), Elapsed: time.Since(start),
		UnusedBytes: w.unusedBytes.Load(), Table: w.tableNote,
	}
	if u, ok := src.(source.Unchecked); ok {
		res.Unchecked = u.Unchecked()
	}
	if w.tableNote != "" {
		out.Info("Partition table: %s", w.tableNote)
	}

	if req.NoVerify {
		out.Info("Verification skipped (--noverify): nothing was read back from %s", name)
		return res, grow(ctx, req, w, res, out)
	}
	vstart := time.Now()
	direct, err := verify(ctx, tgt, info, w.sums, workers, out)
	if err == nil {
		err = verifyExtra(tgt, w.extra)
	}
	if err != nil {
		// A disk that failed verification must not boot as if it were good.
		if zerr := tgt.ZeroRange(0, int64(min(int64(info.ChunkSize), info.Size))); zerr == nil {
			_ = tgt.Sync()
			return nil, fmt.Errorf("%w (its first chunk has been blanked so it will not pass as a good disk)", err)
		}
		return nil, err
	}
	res.Verified, res.VerifyTime, res.VerifyDirect = true, time.Since(vstart), direct
	res.VerifiedBytes = info.Size - res.UnusedBytes
	return res, grow(ctx, req, w, res, out)
}

// grow runs --grow's filesystem step on what the writer enlarged: the last
// partition, or the whole target for an image of one volume.
func grow(ctx context.Context, req Request, w *writer, res *Result, out *progress.Printer) error {
	if !req.Grow {
		return nil
	}
	off, size := int64(0), w.tgt.Size
	what := "the volume"
	if w.grown != nil {
		off, size = w.grown.Start, w.grown.Size
		what = fmt.Sprintf("partition %d", w.grown.Number)
	} else if w.hasTable {
		why := "no partition of it can be grown"
		if w.tableNote != "" {
			why = w.tableNote
		}
		return fmt.Errorf("--grow: the disk was restored, but nothing was grown: its partition table was %s", why)
	}
	out.Step("Growing " + what)
	msg, err := req.GrowFS(ctx, req.Target, off, size)
	if err != nil {
		done := "restored and verified"
		if !res.Verified {
			done = "restored (not verified: --noverify)"
		}
		err = fmt.Errorf("--grow: %s was %s, but its filesystem was not grown: %w", what, done, err)
		out.Fail(err)
		return err
	}
	out.Done()
	res.Grown = fmt.Sprintf("%s to %s: %s", what, HumanBytes(size), msg)
	out.Info("Grew %s", res.Grown)
	return nil
}

// verifyExtra reads back what was written outside the image's range (the
// GPT backup of a larger disk) and compares it byte for byte.
func verifyExtra(tgt *target.Target, extra []patch) error {
	if len(extra) == 0 {
		return nil
	}
	r, err := tgt.OpenReader()
	if err != nil {
		return err
	}
	defer r.Close()
	for _, p := range extra {
		// Past the page cache, so from 4 KiB boundaries.
		start := p.off &^ 4095
		n := int(p.off - start + int64(len(p.data)))
		b, err := r.ReadAt(target.NewBuffer(n), n, start)
		if err != nil {
			return fmt.Errorf("verification: %s: %w", tgt.Path, err)
		}
		if !bytes.Equal(b[p.off-start:], p.data) {
			return fmt.Errorf("verification failed: %s bytes %d to %d (the moved GPT backup) differ from what was written", tgt.Path, p.off, p.off+int64(len(p.data)))
		}
	}
	return nil
}

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

	grow      bool
	hasTable  bool                 // the first chunk holds a partition table
	tableNote string               // how the table was adjusted for the target
	grown     *partition.Partition // the partition --grow enlarged
	extra     []patch              // written beyond the image, to verify
}

// patch is bytes written at off outside the image's chunks.
type patch struct {
	off  int64
	data []byte
}

// sum is what verification expects of a chunk.
type sum struct {
	zero   bool
	unused bool // free space: anything may be there
	sha    [32]byte
}

func newWriter(tgt *target.Target, info source.Info, grow bool) *writer {
	n := int((info.Size + int64(info.ChunkSize) - 1) / int64(info.ChunkSize))
	return &writer{tgt: tgt, info: info, last: n - 1, sums: make([]sum, n), seen: make([]atomic.Bool, n), deferred: map[int][]byte{}, grow: grow}
}

func (w *writer) chunkLen(i int) int {
	off := int64(i) * int64(w.info.ChunkSize)
	return int(min(int64(w.info.ChunkSize), w.info.Size-off))
}

// put writes one chunk; it is called from many goroutines.
func (w *writer) put(c source.Chunk) (int, error) {
	if c.Index < 0 || c.Index > w.last {
		return 0, fmt.Errorf("source delivered chunk %d of %d", c.Index, w.last+1)
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
		if !w.tgt.Erased {
			if err := w.tgt.ZeroRange(off, int64(n)); err != nil {
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
	if c.Index == 0 || c.Index == w.last {
		w.mu.Lock()
		w.deferred[c.Index] = append([]byte(nil), c.Data...)
		w.mu.Unlock()
		return n, nil
	}
	if _, err := w.tgt.WriteAt(c.Data, off); err != nil {
		return 0, err
	}
	return n, nil
}

// finish checks that every chunk came, flushes, then writes the held-back
// chunks (the last, then the first) and flushes again.
func (w *writer) finish() error {
	for i := range w.seen {
		if !w.seen[i].Load() {
			return fmt.Errorf("source ended without chunk %d", i)
		}
	}
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
			delete(w.deferred, i)
		}
	}
	return w.tgt.Sync()
}

// verify reads every chunk of the restored range back past the page cache
// and compares it with what the source said it holds: zero chunks must read
// as zeros, every other chunk must match its SHA-256. Free space (unused
// chunks) is not read: nothing was written there to check.
func verify(ctx context.Context, tgt *target.Target, info source.Info, sums []sum, workers int, out *progress.Printer) (bool, error) {
	r, err := tgt.OpenReader()
	if err != nil {
		return false, err
	}
	defer r.Close()
	cs := info.ChunkSize
	total := info.Size
	for i, s := range sums {
		if s.unused {
			total -= min(int64(cs), info.Size-int64(i)*int64(cs))
		}
	}
	out.Start("Verifying", total)
	next := make(chan int)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		defer close(next)
		for i := range sums {
			if sums[i].unused {
				continue
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := target.NewBuffer(cs)
			for i := range next {
				off := int64(i) * int64(cs)
				n := int(min(int64(cs), info.Size-off))
				data, err := r.ReadAt(buf, n, off)
				if err != nil {
					cancel(err)
					return
				}
				s := sums[i]
				ok := (s.zero && blockmap.IsZero(data)) || (!s.zero && sha256.Sum256(data) == s.sha)
				if !ok {
					cancel(fmt.Errorf("verification failed: %s bytes %d to %d differ from the source (chunk %d)", tgt.Path, off, off+int64(n), i))
					return
				}
				out.Add(int64(n))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		out.Fail(err)
		return false, err
	}
	out.Finish()
	return r.Direct, nil
}

// HumanBytes prints a size the way admins read them: "1.0 GiB".
func HumanBytes(n int64) string { return progress.HumanBytes(n) }
