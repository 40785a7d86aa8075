package restore

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asrlinux/asr/internal/aligned"
	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/source"
)

// A delta restore (Request.Delta) reuses what the target holds: before
// anything is fetched or written it reads the target's chunks where the
// image stores data, past the page cache, and hashes them; the chunks whose
// sum matches the manifest's are left as they are and neither fetched
// nor written. The rest of the safety story is the full restore's: every
// check runs before the first write, the first chunk is blanked first and
// written last (from memory when it matched, so an interrupted delta still
// leaves a disk that does not look valid), and verification reads back
// every written chunk; a reused chunk was verified by its sum matching
// on an O_DIRECT read in this run, and is read again (against the CRC-32C
// it had then) only next to a range the run changed: see markRechecks.
//
// Free space ends as a full restore leaves it: chunks the image stores as
// zeros read as zeros (punched or zeroed out where that is cheap; where it
// is not, the comparing pass reads them too and only those not zero yet are
// written), and filesystem free space is discarded where the device can.

// Errors of a delta restore that the caller adds its hint (a flag) to.
var (
	// ErrDeltaNeedsImage: the source has no manifest, so there is nothing
	// to compare the target's chunks with.
	ErrDeltaNeedsImage = errors.New("a delta restore needs a prepared image: its manifest holds the hash of every chunk to compare the target with")
	// ErrDeltaNeedsTarget: a new file holds nothing to reuse.
	ErrDeltaNeedsTarget = errors.New("a delta restore reuses what a target holds: a new file holds nothing")
)

// chunkSet is a set of chunk indices, a bit each (1 MiB chunks: 128 bytes
// per GiB), filled from several goroutines.
type chunkSet []atomic.Uint64

func newChunkSet(n int) chunkSet { return make(chunkSet, (n+63)/64) }

func (s chunkSet) add(i int) { s[i/64].Or(1 << (i % 64)) }

// has reports whether i is in s; a nil set holds nothing.
func (s chunkSet) has(i int) bool { return s != nil && s[i/64].Load()&(1<<(i%64)) != 0 }

// checkDelta refuses a delta restore that cannot be one, before anything
// is read from the target.
func (r *run) checkDelta(context.Context) error {
	if !r.req.Delta {
		return nil
	}
	switch {
	case r.tgt == nil:
		return r.fail(ErrDeltaNeedsTarget)
	case r.info.Manifest == nil:
		return r.fail(fmt.Errorf("source %s is a %s: %w", r.req.Source, r.info.Kind, ErrDeltaNeedsImage))
	}
	return nil
}

// compare reads the target's chunks where the image stores data and keeps
// those that match (and, where zeroing is not cheap, the zero chunks that
// are zero already) in r.have. It writes nothing: a signal or a read error
// here leaves the target as it was.
func (r *run) compare(ctx context.Context) error {
	if !r.req.Delta {
		return nil
	}
	start := time.Now()
	m := r.info.Manifest
	// Where zeroing costs writes, a read tells which zero chunks need none.
	readZeros := !r.tgt.ZeroesCheap()
	look := func(i int) bool {
		c := m.Chunks[i].Codec
		return c.Stored() || (readZeros && c == image.CodecZero)
	}
	var total int64
	for i := range m.Chunks {
		if look(i) {
			total += int64(m.ChunkLen(i))
		}
	}
	rd, err := r.tgt.OpenReader()
	if err != nil {
		return r.fail(err)
	}
	defer rd.Close()
	r.have = newChunkSet(len(m.Chunks))
	// Only a read past the page cache verifies what the device holds:
	// otherwise every kept chunk is read again after the writes.
	r.compareDirect = rd.Direct
	// 4 bytes a chunk, for verification (see verify): dropped once the
	// writer holds them. Only a kept chunk that will be read again needs
	// one; which those are is known once every chunk was compared (see
	// markRechecks), so it is computed for each chunk that may be one
	// whatever the comparison finds: next to the first chunk (always
	// rewritten) or to a chunk the image does not store (zeroed or
	// discarded), or the last (the GPT backup may move past it); for all
	// when this pass cannot read past the page cache. A kept chunk next
	// only to a stored chunk that did not match is read again against its
	// sum instead: a few chunks, where computing the CRC-32C of every
	// chunk on the target cost more.
	r.crcs, r.crcd = make([]uint32, len(m.Chunks)), newChunkSet(len(m.Chunks))
	last := len(m.Chunks) - 1
	changes := func(j int) bool { return j == 0 || (j > 0 && j <= last && !m.Chunks[j].Codec.Stored()) }
	wantCRC := func(i int) bool { return !rd.Direct || i == last || changes(i-1) || changes(i+1) }
	r.out.Start("Comparing", total)
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range m.Chunks {
			if !look(i) {
				continue
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	bufs := r.chunkBufs() // made here: the workers share it
	var wg sync.WaitGroup
	var reused atomic.Int64
	for range r.workers {
		wg.Go(func() {
			buf := bufs.Get()
			defer bufs.Put(buf)
			for i := range next {
				n := m.ChunkLen(i)
				data, err := rd.ReadAt(buf, n, int64(i)*int64(r.info.ChunkSize))
				if err != nil {
					cancel(fmt.Errorf("comparing %s with the image: %w", r.name, err))
					return
				}
				c := m.Chunks[i]
				if c.Codec.Stored() && m.Hash.Sum(data) == c.Sum {
					if wantCRC(i) {
						r.crcs[i] = crc32.Checksum(data, castagnoli)
						r.crcd.add(i)
					}
					r.have.add(i)
					reused.Add(1)
					if i == 0 {
						// Blanked by the erase and written back last.
						r.head = aligned.Clone(data)
					}
				} else if c.Codec == image.CodecZero && blockmap.IsZero(data) {
					r.have.add(i)
				}
				r.out.Add(int64(n))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		if parent.Err() != nil {
			return parent.Err() // a signal: the caller says so
		}
		return r.fail(err)
	}
	r.out.Finish()
	r.reused = int(reused.Load())
	r.compareTime = time.Since(start)
	if s, ok := r.src.(source.Skipper); ok {
		// Chunks the target holds are not fetched: have never changes
		// from here on.
		s.Skip(func(i int) bool { return r.have.has(i) })
	}
	stored := m.Stats().StoredChunks
	r.out.Info("Comparing: %d of %d stored chunks on %s match the image and are reused; %d to fetch",
		r.reused, stored, r.name, stored-r.reused)
	return nil
}

// eraseDelta blanks the first chunk (from here on the target does not look
// like a good disk) and brings the chunks the image does not store to what
// a full restore leaves there; the chunks that matched are not touched.
func (r *run) eraseDelta(context.Context) error {
	r.res = &Result{Target: r.name, Size: r.info.Size}
	r.out.StepNamed("Erasing", "Blanking the first chunk of "+r.req.Target+" and discarding free space")
	m := r.info.Manifest
	cs := int64(r.info.ChunkSize)
	if err := r.tgt.ZeroRange(0, int64(m.ChunkLen(0))); err != nil {
		return fmt.Errorf("blanking the first chunk of %s: %w", r.req.Target, err)
	}
	// Runs of chunks of one kind (zeros, free space), each a call or two.
	for a := 0; a < len(m.Chunks); {
		codec := m.Chunks[a].Codec
		if codec.Stored() {
			a++
			continue
		}
		b := a + 1
		for b < len(m.Chunks) && m.Chunks[b].Codec == codec {
			b++
		}
		off, end := int64(a)*cs, min(int64(b)*cs, r.info.Size)
		switch {
		case codec == image.CodecUnused:
			// Anything may be there: discard where the device can, as
			// a full restore's erase does, and leave it otherwise.
			r.tgt.Discard(off, end-off)
		case r.tgt.ZeroesCheap() && r.tgt.Discard(off, end-off):
		default:
			if err := r.zeroNotZero(a, b); err != nil {
				return err
			}
		}
		a = b
	}
	r.out.Done()
	return nil
}

// zeroNotZero zeroes the zero chunks in [a, b) that compare did not find
// zero already, a run of them at a time.
func (r *run) zeroNotZero(a, b int) error {
	cs := int64(r.info.ChunkSize)
	for i := a; i < b; {
		if r.have.has(i) {
			i++
			continue
		}
		j := i + 1
		for j < b && !r.have.has(j) {
			j++
		}
		off, end := int64(i)*cs, min(int64(j)*cs, r.info.Size)
		if err := r.tgt.ZeroRange(off, end-off); err != nil {
			return err
		}
		i = j
	}
	return nil
}
