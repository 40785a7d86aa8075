package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/progress"
)

// A compressed raw disk reads only in order, but mapping its filesystems
// needs reads at any offset: the partition table, then each superblock, then
// the group descriptors it points to, then the bitmaps they point to (and an
// LVM volume adds levels). Passes over the stream would repeat the whole
// decompression once per level, and xz decodes at tens of MB/s; so the disk
// is decompressed once into a spool, a sparse temporary file, and mapped and
// read from there. Measuring the size needed that pass anyway.
//
// The spool has no name: it is made with O_TMPFILE (or unlinked the moment
// it is created, where the filesystem lacks O_TMPFILE), so it disappears
// when the process closes it or ends, however it ends: an error, a signal,
// even SIGKILL. Nothing is ever left behind to clean up.

// SpoolError says why no spool could be made (no room, a directory held in
// memory): the caller goes on without mapping, as before.
type SpoolError struct {
	Dir string
	Why string
}

func (e *SpoolError) Error() string {
	return fmt.Sprintf("no temporary copy of the disk in %s: %s", e.Dir, e.Why)
}

// spoolReserve is what a spool leaves free on its filesystem, at least:
// running the machine's disk full to map an image is not worth it.
const spoolReserve = 512 << 20

// spoolBlock is the unit of hole detection: an all-zero block is not
// written, so the spool takes no room for the disk's zeros.
const spoolBlock = 64 << 10

// spool copies r, a decompressed disk, into a new unnamed file in dir and
// returns it with the disk's length. Past limit bytes (0: no limit) it stops
// with a *TooBigError naming name; when the file would leave less than
// spoolReserve free, or dir is in memory (tmpfs), with a *SpoolError.
// progress, if set, hears the bytes read so far, every few MiB.
func spool(ctx context.Context, dir string, r io.Reader, name string, limit int64, progress func(int64)) (f *os.File, n int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, 0, &SpoolError{Dir: dir, Why: err.Error()}
	}
	if st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		// A copy in memory would cost the machine as much RAM as the disk.
		return nil, 0, &SpoolError{Dir: dir, Why: "it is held in memory (tmpfs)"}
	}
	if f, err = createUnnamed(dir); err != nil {
		return nil, 0, &SpoolError{Dir: dir, Why: err.Error()}
	}
	defer func() {
		if err != nil {
			f.Close()
			f = nil
		}
	}()
	buf := make([]byte, 1<<20)
	var written, checked int64 // bytes written; written when free space was last checked
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, context.Cause(ctx)
		}
		k, rerr := fill(r, buf)
		if limit > 0 && n+int64(k) > limit {
			return nil, 0, &TooBigError{Source: name, Limit: limit}
		}
		w, err := writeNonZero(f, buf[:k], n)
		if err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return nil, 0, &SpoolError{Dir: dir, Why: "the filesystem is full"}
			}
			return nil, 0, fmt.Errorf("writing the temporary copy of the disk in %s: %w", dir, err)
		}
		n += int64(k)
		written += w
		if written-checked >= 64<<20 {
			if err := checkRoom(dir); err != nil {
				return nil, 0, err
			}
			checked = written
		}
		if progress != nil && k > 0 {
			progress(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil { // a damaged or truncated stream says so here
			return nil, 0, rerr
		}
	}
	if err := f.Truncate(n); err != nil { // the holes at the end
		return nil, 0, fmt.Errorf("sizing the temporary copy of the disk in %s: %w", dir, err)
	}
	return f, n, nil
}

// fill reads into b until it is full or r ends: it returns io.EOF only for
// the end of the stream (b may hold data then), and every other error as it
// is. Unlike io.ReadFull, a decoder's own io.ErrUnexpectedEOF (a truncated
// stream) is not mistaken for the end of a short last block.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeNonZero writes the non-zero spoolBlocks of b at off, in runs, and
// returns how many bytes it wrote.
func writeNonZero(f *os.File, b []byte, off int64) (int64, error) {
	var written int64
	run := -1 // start of the current run of non-zero blocks
	flush := func(end int) error {
		if run < 0 {
			return nil
		}
		_, err := f.WriteAt(b[run:end], off+int64(run))
		written += int64(end - run)
		run = -1
		return err
	}
	for i := 0; i < len(b); i += spoolBlock {
		j := min(i+spoolBlock, len(b))
		if blockmap.IsZero(b[i:j]) {
			if err := flush(i); err != nil {
				return written, err
			}
		} else if run < 0 {
			run = i
		}
	}
	return written, flush(len(b))
}

// checkRoom fails when dir's filesystem has less than spoolReserve free.
func checkRoom(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return &SpoolError{Dir: dir, Why: err.Error()}
	}
	if free := int64(st.Bavail) * st.Bsize; free < spoolReserve {
		return &SpoolError{Dir: dir, Why: fmt.Sprintf("only %s would be left free (asr leaves %s)", progress.HumanBytes(free), progress.HumanBytes(spoolReserve))}
	}
	return nil
}

// createUnnamed makes a file in dir that has no name: it is gone once
// closed, whatever ends the process.
func createUnnamed(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return f, nil
	}
	// No O_TMPFILE here (an older filesystem, FUSE): a name for as long as
	// it takes to remove it again.
	f, err = os.CreateTemp(dir, ".asr-spool-")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// spooled opens the disk (called name) in the spool f of size bytes as a source: mapped by
// its filesystems when they leave free space, else read whole. Closing it
// closes f, which frees the spool.
func spooled(info Info, name string, f *os.File, size int64) (Source, error) {
	info.Size = size
	used, err := mapSource(f, size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("source %s: mapping its filesystems: %w", name, err)
	}
	if used != nil {
		return &mapped{info: info, r: f, used: used, closer: f}, nil
	}
	return &raw{info: info, open: func() (io.ReadCloser, error) { return sectionOf(f, size), nil }, closer: f}, nil
}

// Spool decompresses a compressed Stream (one whose At is nil) into an
// unnamed sparse file in dir, so that its filesystems can be mapped: At and
// Size then read that file, the Stream reads it from the start, and Close
// frees it. progress hears how many bytes of the compressed file have been
// read. On a *SpoolError (no room in dir, dir in memory) the Stream has been
// read partly and is of no more use: open the source again.
func (s *Stream) Spool(ctx context.Context, dir string, progress func(consumed int64)) error {
	if s.At != nil {
		return nil
	}
	var p func(int64)
	if progress != nil {
		p = func(int64) { progress(s.Consumed()) }
	}
	f, n, err := spool(ctx, dir, s.ReadCloser, s.name, 0, p)
	if err != nil {
		return err
	}
	if n == 0 {
		f.Close()
		return fmt.Errorf("source %s decompresses to nothing", s.name)
	}
	s.ReadCloser.Close() // the compressed file: the spool holds the disk now
	s.ReadCloser = closeBoth{sectionOf(f, n), f}
	s.At, s.Size = io.NewSectionReader(f, 0, n), n
	return nil
}
