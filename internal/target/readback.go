package target

import (
	"fmt"
	"io"
	"os"
	"unsafe"

	"github.com/asrlinux/asr/internal/aligned"
	"golang.org/x/sys/unix"
)

func uintptrOf(r *[2]uint64) uintptr { return uintptr(unsafe.Pointer(r)) }

// Reader reads the target back for verification, past the page cache: with
// O_DIRECT where the filesystem or device allows it, otherwise after
// flushing and dropping the cached pages (tmpfs, some FUSE filesystems).
type Reader struct {
	f      *os.File
	Direct bool
}

// OpenReader opens the target for reading back what was written. Callers
// must Sync first.
func (t *Target) OpenReader() (*Reader, error) {
	f, err := os.OpenFile(t.Path, os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == nil {
		return &Reader{f: f, Direct: true}, nil
	}
	f, err = os.OpenFile(t.Path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s to verify: %w", t.Path, err)
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	if t.Kind == Block {
		_, _, _ = unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKFLSBUF, 0)
	}
	return &Reader{f: f}, nil
}

// Close closes the reader.
func (r *Reader) Close() error { return r.f.Close() }

// NewBuffer returns a buffer of at least n bytes aligned for O_DIRECT.
func NewBuffer(n int) []byte { return aligned.Make(n) }

// ReadAt fills buf[:n] from off. buf must come from NewBuffer and off must be
// 4 KiB aligned; n may be unaligned at the end of the target.
func (r *Reader) ReadAt(buf []byte, n int, off int64) ([]byte, error) {
	want := (n + 4095) &^ 4095
	if want > len(buf) {
		return nil, fmt.Errorf("read-back buffer of %d bytes too small for %d", len(buf), want)
	}
	got := 0
	for got < n {
		k, err := r.f.ReadAt(buf[got:want], off+int64(got))
		got += k
		if err == io.EOF && got >= n {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading back byte %d: %w", off+int64(got), err)
		}
		if k == 0 {
			return nil, fmt.Errorf("reading back byte %d: %w", off+int64(got), io.ErrUnexpectedEOF)
		}
	}
	return buf[:n], nil
}
