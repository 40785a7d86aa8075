package restore

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/asrlinux/asr/internal/aligned"
	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/target"
)

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

// skipVerify reports whether the verify pass does not read chunk s: free
// space (nothing was written there to check), a chunk read back as it was
// written, a kept chunk that needs no second read (see markRechecks).
func (s sum) skipVerify() bool { return s.unused || s.readBack || (s.kept && !s.recheck) }

// castagnoli is CRC-32C, which CPUs compute in hardware.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// verify reads every chunk of the restored range back past the page cache
// and compares it with what the source said it holds (but those the writer
// read back and found equal as it wrote them): zero chunks must read
// as zeros, the held-back first and last chunk as they were written, every
// other chunk must match its sum. Free space (unused
// chunks) is not read: nothing was written there to check. A chunk a delta
// restore kept was matched against its sum when it was compared and not
// written since: it is read again only next to a range this run changed
// (see writer.markRechecks for why that is enough), and must then read as it
// did (its CRC-32C where compare computed one, else its sum), which
// catches a write that ran past its range.
func verify(ctx context.Context, tgt *target.Target, info source.Info, sums []sum, workers int, bufs *aligned.Pool, out *progress.Printer) (bool, error) {
	hash := info.Hash()
	r, err := tgt.OpenReader()
	if err != nil {
		return false, err
	}
	defer r.Close()
	cs := info.ChunkSize
	total, left := info.Size, 0
	for i, s := range sums {
		if s.skipVerify() {
			total -= min(int64(cs), info.Size-int64(i)*int64(cs))
		} else {
			left++
		}
	}
	// After a restore that read its chunks back as it wrote them, only the
	// held-back first and last are left: no more workers than chunks.
	workers = max(1, min(workers, left))
	out.Start("Verifying", total)
	next := make(chan int)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		defer close(next)
		for i := range sums {
			if sums[i].skipVerify() {
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
			var buf []byte
			defer func() {
				if buf != nil {
					bufs.Put(buf)
				}
			}()
			for i := range next {
				if buf == nil {
					buf = bufs.Get()
				}
				off := int64(i) * int64(cs)
				n := int(min(int64(cs), info.Size-off))
				data, err := r.ReadAt(buf, n, off)
				if err != nil {
					cancel(err)
					return
				}
				s := sums[i]
				var ok bool
				switch {
				case s.zero:
					ok = blockmap.IsZero(data)
				case s.held != nil:
					ok = bytes.Equal(data, s.held)
				case s.kept && s.hasCRC:
					ok = crc32.Checksum(data, castagnoli) == s.crc
				default:
					ok = hash.Sum(data) == s.sha
				}
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
