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
//
// A cancelled context (a signal) is honoured at every step: before the
// erase the run ends with nothing written; after it the writers are
// stopped and the first chunk is blanked, so the disk is visibly not good.
//
// The engine does not parse flags or print errors: the caller does, and
// adds its own hint (a CLI flag, a kernel parameter) to the errors below.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"time"

	"github.com/asrlinux/asr/internal/aligned"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/target"
)

// Errors a caller tells apart to add its hint: the engine names no flag.
var (
	// ErrCancelled is returned when the person declined the erase prompt.
	ErrCancelled = errors.New("restore cancelled: nothing was written")
	// ErrIncomplete wraps failures after writing began.
	ErrIncomplete = errors.New("the target is incomplete")
	// ErrInterrupted wraps a run stopped by its context (a signal). Before
	// the erase it comes alone; after, together with ErrIncomplete.
	ErrInterrupted = errors.New("interrupted")
	// ErrNoConfirm: the target would be overwritten, and Confirm is nil
	// (nobody can be asked) and NoPrompt is not set.
	ErrNoConfirm = errors.New("there is no terminal to confirm on")
	// ErrNotErase: Run was called for a block restore without Erase
	// (restore without erasing is the file copy of internal/filerestore).
	ErrNotErase = errors.New("a block restore erases its target: Request.Erase must be set")
)

// GrowError is why Grow did not grow: nothing to grow into, or the
// filesystem could not be grown. The caller names its option.
type GrowError struct{ Err error }

func (e *GrowError) Error() string { return e.Err.Error() }
func (e *GrowError) Unwrap() error { return e.Err }

// Request is one restore.
type Request struct {
	Source string // path or URL, as given
	Target string // block device or existing file; empty when File is set
	File   string // a new image file to create instead of a target

	Erase    bool
	NoVerify bool
	NoPrompt bool
	Workers  int // 0: a sensible number for the machine
	// Delta reuses what the target holds: its chunks that match the
	// image's are neither fetched nor written (see delta.go). It needs a
	// prepared image and an existing target.
	Delta bool
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
	// It is asked only when something would be overwritten (a device, an
	// existing non-empty file), never for a new file.
	Confirm func(question string) (bool, error)
	Out     *progress.Printer

	// afterWrite (tests only) runs between writing a chunk and reading it
	// back: see writer.afterWrite.
	afterWrite func(i int)
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
	// ReadBackBytes is the part of VerifiedBytes read back past the page
	// cache right after it was written, during Elapsed, and compared with
	// the checked bytes written; VerifyTime is the pass over the rest
	// (zero chunks, the first and last chunk, a delta's kept chunks next
	// to a write).
	ReadBackBytes int64
	// KeptBytes is the part of VerifiedBytes a delta restore kept and
	// verified by comparing it (its sum, on an O_DIRECT read of the
	// target before anything was written), far from every write of the
	// run and so not read a second time (see writer.markRechecks).
	KeptBytes int64
	// Unchecked says why nothing published checked the source's bytes (a
	// raw download without a checksum): Verified then means the disk
	// matches what was downloaded, no more. Empty when they were checked.
	Unchecked string
	// Table says how the partition table was adjusted for a larger
	// target ("GPT backup moved to the end of the disk"); empty if not.
	Table string
	// Grown is what Grow did; empty without it.
	Grown string

	// A delta restore's figures: stored chunks the target held already
	// (Reused), taken from the source (Fetched, FetchedBytes as stored in
	// the image: what a web server sends), and written to the target
	// (Written: the fetched ones, and the first chunk, written last
	// even when it was reused). CompareTime is the hashing pass.
	Delta                    bool
	Reused, Fetched, Written int
	FetchedBytes             int64
	CompareTime              time.Duration
}

// run is one restore's state, passed from step to step.
type run struct {
	req     Request
	out     *progress.Printer
	name    string // the target as the person named it (Target or File)
	workers int

	tgt     *target.Target
	src     source.Source
	info    source.Info
	created bool // tgt is a file this run created: remove it on failure
	w       *writer
	res     *Result
	// bufs keeps chunk buffers from phase to phase (see aligned.Pool).
	bufs *aligned.Pool

	// A delta restore's: the chunks the target holds already, the target's
	// first chunk when it matched, how many stored chunks matched.
	have        chunkSet
	crcs        []uint32
	crcd        chunkSet // the chunks crcs holds a CRC-32C of
	head        []byte
	reused      int
	compareTime time.Duration
	// compareDirect: compare read the target with O_DIRECT.
	compareDirect bool
}

// Run performs a restore: validate, confirm, erase, write, verify.
func Run(ctx context.Context, req Request) (res *Result, err error) {
	if !req.Erase && req.File == "" {
		return nil, ErrNotErase
	}
	if req.Grow && req.GrowFS == nil {
		return nil, errors.New("restore: Grow needs GrowFS")
	}
	r := &run{req: req, out: req.Out, name: req.Target, workers: req.Workers}
	if req.File != "" {
		r.name = req.File
	}
	if r.workers <= 0 {
		// I/O-bound work wants a deeper queue than the core count alone.
		r.workers = max(4, runtime.NumCPU())
	}
	defer r.close()
	defer func() {
		if f, ok := r.src.(source.Finisher); ok {
			// Before the source's Close: it still has its connection
			// to say how it ended.
			f.Finished(err)
		}
	}()

	// Nothing is written before every one of these has passed.
	// compare (delta) only reads the target, after the person agreed.
	for _, check := range []func(context.Context) error{r.checkTarget, r.openSource, r.checkSizes, r.checkDelta, r.confirm, r.compare} {
		if err := check(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, r.interruptedBeforeErase(ctx)
			}
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, r.interruptedBeforeErase(ctx)
		}
	}

	// From here on the target changes: a failure leaves it visibly bad.
	erase := r.erase
	if req.Delta {
		erase = r.eraseDelta
	}
	for _, step := range []func(context.Context) error{erase, r.write, r.verify} {
		if err := step(ctx); err != nil {
			return nil, r.failAfterErase(ctx, err)
		}
		if ctx.Err() != nil {
			return nil, r.failAfterErase(ctx, ctx.Err())
		}
	}
	return r.res, grow(ctx, req, r.w, r.res, r.out)
}

// close releases the source and the target, in that order.
func (r *run) close() {
	if r.src != nil {
		r.src.Close()
	}
	if r.w != nil {
		r.w.close()
	}
	if r.tgt != nil {
		r.tgt.Close()
	}
}

// fail prints err on the current step's line and returns it.
func (r *run) fail(err error) error {
	r.out.Fail(err)
	return err
}

// interruptedBeforeErase is a signal's answer while nothing was written.
func (r *run) interruptedBeforeErase(ctx context.Context) error {
	return r.fail(fmt.Errorf("%w (%v) before erasing: nothing was written to %s", ErrInterrupted, context.Cause(ctx), r.name))
}

// failAfterErase stops the writers and makes the target visibly not a good
// disk: a file this run created is removed; anything else gets its first
// chunk blanked (the engine writes it last, but verification or a signal
// may come after it was written).
func (r *run) failAfterErase(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%v) after erasing began", ErrInterrupted, context.Cause(ctx))
	}
	r.out.Fail(err)
	if r.w != nil {
		r.w.stop()
	}
	if r.tgt == nil {
		return err // the new file could not be created: nothing was written
	}
	if r.created {
		r.tgt.Close()
		r.tgt = nil
		if rerr := os.Remove(r.req.File); rerr != nil {
			return fmt.Errorf("%w: %w (and removing %s failed: %v)", ErrIncomplete, err, r.req.File, rerr)
		}
		return fmt.Errorf("%w: %w (the new file %s was removed)", ErrIncomplete, err, r.req.File)
	}
	n := min(int64(r.info.ChunkSize), r.info.Size, r.tgt.Size)
	if zerr := r.tgt.ZeroRange(0, n); zerr != nil {
		return fmt.Errorf("%w: %w (and blanking its first chunk failed: %v: do not boot it)", ErrIncomplete, err, zerr)
	}
	if serr := r.tgt.Sync(); serr != nil {
		return fmt.Errorf("%w: %w (and flushing its blanked first chunk failed: %v: do not boot it)", ErrIncomplete, err, serr)
	}
	return fmt.Errorf("%w: %w (its first chunk has been blanked so it will not pass as a good disk; run the restore again)", ErrIncomplete, err)
}

// checkTarget opens the target, or checks that the new file can be made.
func (r *run) checkTarget(context.Context) error {
	r.out.Step("Validating target")
	if r.req.File != "" {
		if err := target.CheckNew(r.req.File, r.req.Erase); err != nil {
			return r.fail(err)
		}
	} else {
		tgt, err := target.Open(r.req.Target)
		if err != nil {
			return r.fail(err)
		}
		r.tgt = tgt
	}
	r.out.Done()
	return nil
}

// openSource opens the source, giving up on it when ctx ends: a source
// stalled in its opening must not hold up a signal.
func (r *run) openSource(ctx context.Context) error {
	r.out.Step("Validating source")
	type opened struct {
		src source.Source
		err error
	}
	ch := make(chan opened, 1)
	var maxSize int64
	if r.tgt != nil {
		maxSize = r.tgt.Size
	}
	go func() {
		src, err := r.req.OpenSource(r.req.Source, maxSize)
		ch <- opened{src, err}
	}()
	var o opened
	select {
	case o = <-ch:
	case <-ctx.Done():
		go func() { // close what the abandoned open yields, if anything
			if o := <-ch; o.src != nil {
				o.src.Close()
			}
		}()
		return ctx.Err()
	}
	if o.err != nil {
		return r.fail(o.err)
	}
	r.src, r.info = o.src, o.src.Info()
	// Each worker holds up to three chunks (stored, decoded, and an
	// aligned copy when its source's buffer is not aligned) and a 4 MiB
	// read-back piece; counted as four, which leaves room for the
	// held-back first and last chunks and the decoder's own memory: keep
	// them within 128 MiB whatever the core count and chunk size, so a
	// restore stays below the appliance's 256 MiB budget (16 MiB chunks,
	// the largest, take two workers). At 8 MiB chunks that is four
	// workers: with three, a verified restore onto a loop device left a
	// core idle a tenth of the time, every worker waiting on a read-back
	// (2 GiB, 40% used: 1.18 s against 1.01 s; peak RSS 99 against 132
	// MiB).
	r.workers = min(r.workers, max(2, (128<<20)/(4*max(r.info.ChunkSize, 1))))
	if r.tgt != nil && r.info.Path != "" {
		if bad, why := r.tgt.Overlaps(r.info.Path); bad {
			return r.fail(fmt.Errorf("source %s and target %s: %s", r.req.Source, r.req.Target, why))
		}
	}
	r.out.Done()
	if r.info.Manifest != nil {
		r.out.Step("Retrieving scan information")
		r.out.Done()
	}
	return nil
}

// checkSizes refuses a target smaller than the image, and Grow with
// nothing to grow into.
func (r *run) checkSizes(context.Context) error {
	r.out.Step("Validating sizes")
	size := r.info.Size
	if r.tgt != nil && r.tgt.Size < size {
		return r.fail(fmt.Errorf("target %s is too small: %s (%d bytes), the source needs %s (%d bytes)",
			r.req.Target, HumanBytes(r.tgt.Size), r.tgt.Size, HumanBytes(size), size))
	}
	if r.req.Grow && (r.tgt == nil || r.tgt.Size == size) {
		return r.fail(&GrowError{fmt.Errorf("the target is exactly the image's size (%s): there is nothing to grow into", HumanBytes(size))})
	}
	r.out.Done()
	return nil
}

// confirm asks before overwriting anything: a device, or an existing file
// that holds data. A new (or empty) file erases nothing, so it is not asked
// about. A signal ends the question.
func (r *run) confirm(ctx context.Context) error {
	if r.req.NoPrompt {
		return nil
	}
	if r.req.File != "" {
		if fi, err := os.Stat(r.req.File); errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Size() == 0) {
			return nil
		}
	}
	if r.req.Confirm == nil {
		return fmt.Errorf("not erasing %s: %w", r.name, ErrNoConfirm)
	}
	type answer struct {
		ok  bool
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		ok, err := r.req.Confirm(fmt.Sprintf("Erase contents of %s? [ny]: ", r.name))
		ch <- answer{ok, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			return fmt.Errorf("reading the answer: %w", a.err)
		}
		if !a.ok {
			return ErrCancelled
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// erase creates the new file, or erases the target.
func (r *run) erase(context.Context) error {
	r.res = &Result{Target: r.name, Size: r.info.Size}
	if r.req.File != "" {
		r.out.StepNamed("Creating", "Creating "+r.req.File)
		_, err := os.Lstat(r.req.File)
		existed := err == nil
		tgt, err := target.Create(r.req.File, r.info.Size)
		if err != nil {
			if !existed {
				os.Remove(r.req.File)
			}
			r.out.Fail(err)
			return err
		}
		r.tgt, r.created = tgt, !existed
	} else {
		r.out.StepNamed("Erasing", "Erasing target device "+r.req.Target)
		if err := r.tgt.Erase(r.info.Size, int64(r.info.ChunkSize)); err != nil {
			return fmt.Errorf("erasing %s: %w", r.req.Target, err)
		}
	}
	r.out.Done()
	return nil
}

// write takes every chunk from the source and puts it on the target, the
// held-back first and last chunks at the end. A signal stops it even if
// the source does not notice: the writers are stopped by the caller.
func (r *run) write(ctx context.Context) error {
	start := time.Now()
	r.w = newWriter(r.tgt, r.info, r.req.Grow, r.chunkBufs())
	r.w.afterWrite = r.req.afterWrite
	toWrite := r.info.Size
	if r.req.Delta {
		toWrite -= r.w.reuse(r.have, r.crcs, r.crcd, r.head)
		r.crcs, r.crcd = nil, nil
	}
	if !r.req.NoVerify {
		if _, err := r.w.readBackAsWritten(r.workers); err != nil {
			return err
		}
	}
	r.out.Start("Restoring", toWrite)
	done := make(chan error, 1)
	go func() {
		done <- r.src.Run(ctx, r.workers, func(c source.Chunk) error {
			n, err := r.w.put(c)
			r.out.Add(int64(n))
			return err
		})
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err == nil && ctx.Err() == nil {
		err = r.w.finish()
	}
	if err != nil {
		return err
	}
	r.out.Finish()
	if n, ok := r.src.(source.Noter); ok && n.Note() != "" {
		r.out.Info("Source check: %s", n.Note())
	}
	w, res := r.w, r.res
	res.DataBytes, res.Chunks, res.ZeroChunks = w.dataBytes.Load(), len(w.sums), int(w.zeroChunks.Load())
	res.UnusedBytes, res.Table, res.Elapsed = w.unusedBytes.Load(), w.tableNote, time.Since(start)
	if u, ok := r.src.(source.Unchecked); ok {
		res.Unchecked = u.Unchecked()
	}
	if r.req.Delta {
		res.Delta, res.Reused, res.CompareTime = true, r.reused, r.compareTime
		res.Fetched, res.FetchedBytes, res.Written = int(w.fetched.Load()), w.fetchedBytes.Load(), int(w.written.Load())
	}
	if w.tableNote != "" {
		r.out.Info("Partition table: %s", w.tableNote)
	}
	return nil
}

// chunkBufs returns the run's pool of chunk buffers, made on first use
// (once the source's chunk size is known). It keeps one for each worker:
// a compare, verify or aligned-copy worker holds one at a time. (The
// held-back first and last chunks are copies of their own, kept to the end.)
func (r *run) chunkBufs() *aligned.Pool {
	if r.bufs == nil {
		r.bufs = aligned.NewPool(r.info.ChunkSize, r.workers)
	}
	return r.bufs
}

// verify reads the target back, unless NoVerify.
func (r *run) verify(ctx context.Context) error {
	if r.req.NoVerify {
		r.out.Info("Verification skipped: nothing was read back from %s", r.name)
		return nil
	}
	start := time.Now()
	kept := r.w.markRechecks(!r.compareDirect)
	direct, err := verify(ctx, r.tgt, r.info, r.w.sums, r.workers, r.chunkBufs(), r.out)
	if err == nil {
		err = verifyExtra(r.tgt, r.w.extra)
	}
	if err != nil {
		return err
	}
	res := r.res
	res.Verified, res.VerifyTime, res.VerifyDirect = true, time.Since(start), direct
	res.VerifiedBytes = r.info.Size - res.UnusedBytes
	res.ReadBackBytes, res.KeptBytes = r.w.readBack.Load(), kept
	return nil
}

// grow runs Grow's filesystem step on what the writer enlarged: the last
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
		return &GrowError{fmt.Errorf("the disk was restored, but nothing was grown: its partition table was %s", why)}
	}
	out.Step("Growing " + what)
	msg, err := req.GrowFS(ctx, req.Target, off, size)
	if err != nil {
		done := "restored and verified"
		if !res.Verified {
			done = "restored (not verified)"
		}
		err = &GrowError{fmt.Errorf("%s was %s, but its filesystem was not grown: %w", what, done, err)}
		out.Fail(err)
		return err
	}
	out.Done()
	res.Grown = fmt.Sprintf("%s to %s: %s", what, HumanBytes(size), msg)
	out.Info("Grew %s", res.Grown)
	return nil
}

// HumanBytes prints a size the way admins read them: "1.0 GiB".
func HumanBytes(n int64) string { return progress.HumanBytes(n) }
