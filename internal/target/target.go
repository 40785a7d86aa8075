// Package target opens what asr restores onto: a block device (a whole disk
// or one partition) or an existing regular file.
//
// Opening runs every safety check before the caller can write a byte: the
// target exists, is writable, is not mounted and holds no mounted partition,
// is not stacked under device-mapper or RAID, is not swap, is not the disk
// the running system lives on, and can be opened exclusively. It also knows
// how to erase, zero, write and read back past the page cache. It does not
// know about images or progress.
package target

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/asrlinux/asr/internal/aligned"

	"golang.org/x/sys/unix"
)

// ErrUnsafe marks a refusal to touch a target; the message says why.
var ErrUnsafe = errors.New("unsafe target")

// Refusals a caller adds its own way out to (a CLI flag); the package names
// no flag.
var (
	ErrDirectory  = errors.New("is a directory: give a block device or a disk image file")
	ErrExists     = errors.New("already exists")
	ErrNotRegular = errors.New("exists and is not a regular file")
)

// Kind is what a target is.
type Kind int

const (
	Block Kind = iota
	File
)

// Target is an opened, checked target.
type Target struct {
	Path string
	Kind Kind
	Size int64
	f    *os.File
	sys  System
	dev  uint64 // block: the device number; file: the device of its filesystem
	ino  uint64 // file only
	// direct is a block device opened a second time with O_DIRECT: writes
	// through it skip the page cache (no copy into it, no dirty pages to
	// flush at the end). nil for files and where the device refuses
	// O_DIRECT; noDirect is set when a direct write was refused later.
	direct   *os.File
	noDirect atomic.Bool
	lbs      int64 // the device's logical block size: direct I/O's unit
	// Erased is set once Erase has left every byte of the erased range
	// reading as zero, so zero chunks need no further work.
	Erased bool
}

// unsafeError is a refusal; it matches ErrUnsafe without repeating its text.
type unsafeError string

func (e unsafeError) Error() string        { return string(e) }
func (e unsafeError) Is(target error) bool { return target == ErrUnsafe }

func refuse(path, format string, a ...any) error {
	return unsafeError(fmt.Sprintf("target %s %s", path, fmt.Sprintf(format, a...)))
}

// Open checks path against the running system and opens it for writing.
func Open(path string) (*Target, error) { return open(path, Host()) }

func open(path string, sys System) (*Target, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("target %s does not exist", path)
		}
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		return openBlock(path, st.Rdev, sys)
	case unix.S_IFREG:
		return openFile(path, st, sys)
	case unix.S_IFDIR:
		return nil, fmt.Errorf("target %s %w", path, ErrDirectory)
	}
	return nil, fmt.Errorf("target %s is neither a block device nor a regular file", path)
}

func openBlock(path string, dev uint64, sys System) (*Target, error) {
	family := append([]uint64{dev}, sys.partitions(dev)...)

	mounts, err := sys.mounts()
	if err != nil {
		return nil, err
	}
	root := sys.RootDevice
	for _, m := range mounts {
		if m.point == "/" && root == 0 {
			root = mountDev(m)
		}
	}
	if root != 0 && (root == dev || sys.parent(root) == dev) {
		return nil, refuse(path, "holds the running system's root filesystem (%s): choose another disk", sys.kname(root))
	}
	for _, m := range mounts {
		md := mountDev(m)
		if md == dev {
			return nil, refuse(path, "is mounted at %s: unmount it first (umount %s)", m.point, m.point)
		}
		if slices.Contains(family[1:], md) {
			return nil, refuse(path, "holds partition %s, mounted at %s: unmount it first (umount %s)", sys.kname(md), m.point, m.point)
		}
	}
	for _, d := range family {
		if h := sys.holders(d); len(h) > 0 {
			return nil, refuse(path, "is in use by %s (device-mapper, LVM or RAID): stop that first", strings.Join(h, ", "))
		}
	}
	for _, s := range sys.swaps() {
		if slices.Contains(family, s) {
			return nil, refuse(path, "is in use as swap (%s): swapoff it first", sys.kname(s))
		}
	}
	if sys.readOnly(dev) {
		return nil, fmt.Errorf("target %s is read-only (check the write-protect switch or blockdev --setrw)", path)
	}
	// O_EXCL on a block device fails with EBUSY while anything else has it
	// claimed: a mount we did not see, another asr, mkfs, a partition tool.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, refuse(path, "is in use by another program (exclusive open failed): close it first")
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("target %s is not writable: run asr as root", path)
		case errors.Is(err, unix.EROFS):
			return nil, fmt.Errorf("target %s is read-only", path)
		}
		return nil, fmt.Errorf("opening target %s: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("target %s: reading its size: %w", path, err)
	}
	t := &Target{Path: path, Kind: Block, Size: size, f: f, sys: sys, dev: dev}
	t.openDirect()
	return t, nil
}

// openDirect opens the block device again with O_DIRECT for writing. The
// exclusive claim of the first open is what keeps other programs out; this
// second open (without O_EXCL) shares it. A device that refuses O_DIRECT
// (EINVAL: some virtual and FUSE-backed devices) is written through the
// page cache, as is every regular file: a file target's filesystem decides
// whether O_DIRECT works (tmpfs refused it before Linux 6.6, FUSE mostly
// does), and an image file is written once and left to that filesystem's
// own write-back (see WriteBehind).
func (t *Target) openDirect() {
	lbs, err := unix.IoctlGetInt(int(t.f.Fd()), unix.BLKSSZGET)
	if err != nil || lbs <= 0 || lbs > aligned.Align || aligned.Align%lbs != 0 {
		return
	}
	f, err := os.OpenFile(t.Path, os.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	t.direct, t.lbs = f, int64(lbs)
}

// Direct reports whether WriteAt writes past the page cache, given a
// buffer from aligned.Make and an offset and length that are whole
// logical blocks.
func (t *Target) Direct() bool { return t.direct != nil && !t.noDirect.Load() }

func openFile(path string, st unix.Stat_t, sys System) (*Target, error) {
	if loops := sys.loopBacking(path); len(loops) > 0 {
		return nil, refuse(path, "is attached to %s: detach it first (losetup -d %s)", strings.Join(loops, ", "), loops[0])
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("target %s is not writable: %v", path, errors.Unwrap(err))
		}
		return nil, fmt.Errorf("opening target %s: %w", path, err)
	}
	// A second asr on the same file would interleave two images.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, refuse(path, "is locked by another program: wait for it to finish")
	}
	return &Target{Path: path, Kind: File, Size: st.Size, f: f, sys: sys, dev: st.Dev, ino: st.Ino}, nil
}

// Close releases the target.
func (t *Target) Close() error {
	if t.direct != nil {
		t.direct.Close()
	}
	return t.f.Close()
}

// File is the open file, for positional writes.
func (t *Target) File() *os.File { return t.f }

// Overlaps reports whether the source at path shares storage with the target:
// the same file, the same device, a partition of the other, or an image file
// stored on the target device.
func (t *Target) Overlaps(path string) (bool, string) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return false, ""
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		if t.Kind == File {
			return false, ""
		}
		if st.Rdev == t.dev || t.sys.parent(st.Rdev) == t.dev || t.sys.parent(t.dev) == st.Rdev {
			return true, "source and target are the same device (or one is a partition of the other)"
		}
	case unix.S_IFREG:
		if t.Kind == File && st.Dev == t.dev && st.Ino == t.ino {
			return true, "source and target are the same file"
		}
		if t.Kind == Block && (st.Dev == t.dev || t.sys.parent(st.Dev) == t.dev) {
			return true, "the source image is stored on the target device"
		}
	}
	return false, ""
}

// Erase discards [0,n) where the device supports it and, where that is cheap,
// leaves the whole range reading as zero (setting Erased). The first head
// bytes are always zeroed, so from here on the target no longer looks like
// whatever disk it held before.
func (t *Target) Erase(n int64, head int64) error {
	if t.Discard(0, n) {
		t.Erased = true
		return nil
	}
	return t.ZeroRange(0, min(head, n))
}

// Discard gives [off, off+n) back to the device where it supports that, and
// reports whether the range now reads as zero. Nothing is written when it
// cannot be done cheaply: then the range may still hold what it held.
func (t *Target) Discard(off, n int64) bool {
	// Punching a hole reads back as zeros and gives the space back: to a
	// file's filesystem, to a thin pool, to an SSD. On a block device the
	// kernel refuses (rather than writes zeros) where it cannot do it cheaply.
	if t.punch(off, n) == nil {
		return true
	}
	if t.Kind == Block {
		// Discard is advisory: many devices lack it, and errors say nothing
		// about the data, so they are not fatal.
		_ = ioctlRange(t.f, unix.BLKDISCARD, off, n)
		if t.sys.zeroesCheap(t.dev) {
			if err := ioctlRange(t.f, unix.BLKZEROOUT, off, n); err == nil {
				return true
			}
		}
	}
	return false
}

// ZeroesCheap reports whether making a range read as zero costs no writing
// of zeros: a regular file (a hole is punched) or a device with a zero-out
// offload. Where it is not cheap, reading a range to see whether it is zero
// already is cheaper than writing it.
func (t *Target) ZeroesCheap() bool {
	return t.Kind == File || t.sys.zeroesCheap(t.dev)
}

func (t *Target) punch(off, n int64) error {
	return unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// ZeroRange makes [off, off+n) read as zeros: by punching a hole where the
// file or device can, else by the kernel's zero-out (which writes zeros on
// devices that cannot do better), else by writing zeros.
func (t *Target) ZeroRange(off, n int64) error {
	if n <= 0 || t.punch(off, n) == nil {
		return nil
	}
	if t.Kind == Block {
		if err := ioctlRange(t.f, unix.BLKZEROOUT, off, n); err != nil {
			return fmt.Errorf("zeroing %s bytes %d to %d: %w", t.Path, off, off+n, err)
		}
		return nil
	}
	zero := make([]byte, min(n, 1<<20))
	for done := int64(0); done < n; {
		k := min(int64(len(zero)), n-done)
		if _, err := t.f.WriteAt(zero[:k], off+done); err != nil {
			return fmt.Errorf("zeroing %s at byte %d: %w", t.Path, off+done, err)
		}
		done += k
	}
	return nil
}

// WriteAt writes p at off (pwrite): past the page cache when Direct and p
// is aligned (aligned.Make) and off and len(p) are whole logical blocks,
// through it otherwise. A direct write returns once the device has the
// bytes (in its own cache, if it has one: Sync flushes that).
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if t.Direct() && aligned.Is(p) && off%t.lbs == 0 && int64(len(p))%t.lbs == 0 {
		n, err := t.direct.WriteAt(p, off)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return n, fmt.Errorf("writing %s at byte %d: %w", t.Path, off, err)
		}
		// EINVAL: the device's alignment rules are stricter than its
		// logical block size said; write through the cache from now on.
		t.noDirect.Store(true)
	}
	n, err := t.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("writing %s at byte %d: %w", t.Path, off, err)
	}
	return n, nil
}

// WriteBehind starts writing [off, off+n) of the page cache to the device
// without waiting for it (sync_file_range), so that data written through
// the cache goes out as the restore proceeds rather than all in the final
// Sync. Direct writes leave nothing in the cache; for them it does nothing.
// It is advice: a failure is not an error (Sync reports real ones).
func (t *Target) WriteBehind(off, n int64) {
	_ = unix.SyncFileRange(int(t.f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// Sync flushes written data to the device.
func (t *Target) Sync() error {
	if err := unix.Fdatasync(int(t.f.Fd())); err != nil {
		return fmt.Errorf("flushing %s: %w", t.Path, err)
	}
	return nil
}

func ioctlRange(f *os.File, req uint, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptrOf(&r))
	if e != 0 {
		return e
	}
	return nil
}

// CheckNew checks that path can be created as a new image file: its folder
// exists and it does not exist yet (unless overwrite).
func CheckNew(path string, overwrite bool) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("cannot create %s: folder %s does not exist", path, dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("cannot create %s: folder %s is not writable", path, dir)
	}
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s %w", path, ErrNotRegular)
		}
		if !overwrite {
			return fmt.Errorf("%s %w", path, ErrExists)
		}
	}
	return nil
}

// Create creates (or truncates) path as a sparse file of size bytes and opens
// it as a target. Call CheckNew first, before anything else is written.
func Create(path string, size int64) (*Target, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing %s to %d bytes: %w", path, size, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Target{Path: path, Kind: File, Size: size, f: f, sys: Host(), dev: st.Dev, ino: st.Ino, Erased: true}, nil
}
