package filecopy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Verify compares every copied item on the target with the source: kind,
// mode, owner, group, modification time, size, content (read back from the
// target after dropping its cached pages, so the bytes come from the disk),
// symlink target, device number, extended attributes, and that hard links
// share one inode. On FAT only what FAT holds is compared: kind, size,
// content and modification time (to its 2 s resolution).
func (p *Plan) Verify(ctx context.Context, opts Options) error {
	if err := syncFS(p.Dst); err != nil {
		return err
	}
	return p.parallel(ctx, opts, 0, p.items.n, func(*item) bool { return true }, func(_ int, it *item, w *worker) error {
		return p.verifyItem(it, w)
	})
}

func (p *Plan) verifyItem(it *item, w *worker) error {
	src := filepath.Join(p.Src, p.rel(it))
	dst := filepath.Join(p.Dst, p.rel(it))
	kind := it.st.Mode & unix.S_IFMT
	if p.FAT && kind != unix.S_IFREG && kind != unix.S_IFDIR {
		return nil // not copied: FAT cannot hold it
	}
	var st unix.Stat_t
	if err := unix.Lstat(dst, &st); err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	if st.Mode&unix.S_IFMT != kind {
		return fmt.Errorf("verifying: the target holds a %s, the source a %s", kindName(st.Mode), kindName(it.st.Mode))
	}
	if err := p.compareMeta(src, dst, &it.st, &st); err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	switch kind {
	case unix.S_IFREG:
		if st.Size != it.st.Size {
			return fmt.Errorf("verifying: the target has %d bytes, the source %d", st.Size, it.st.Size)
		}
		if it.link >= 0 && !p.FAT {
			var lst unix.Stat_t
			if err := unix.Lstat(filepath.Join(p.Dst, p.rel(p.items.at(int(it.link)))), &lst); err != nil {
				return fmt.Errorf("verifying: %w", err)
			}
			if lst.Ino != st.Ino {
				return fmt.Errorf("verifying: not a hard link to %s as on the source", p.rel(p.items.at(int(it.link))))
			}
			return nil // the content was compared through the first name
		}
		return compareContent(src, dst, w)
	case unix.S_IFLNK:
		a, err1 := os.Readlink(src)
		b, err2 := os.Readlink(dst)
		if err1 != nil || err2 != nil || a != b {
			return fmt.Errorf("verifying: the symlink points to %q, on the source to %q", b, a)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if st.Rdev != it.st.Rdev {
			return fmt.Errorf("verifying: device %d:%d, on the source %d:%d",
				unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(it.st.Rdev), unix.Minor(it.st.Rdev))
		}
	}
	return nil
}

func (p *Plan) compareMeta(src, dst string, s *meta, t *unix.Stat_t) error {
	if p.FAT {
		if s.Mode&unix.S_IFMT == unix.S_IFDIR {
			return nil // FAT directory times are not worth failing over
		}
		if d := s.Mtim.Sec - t.Mtim.Sec; d < -2 || d > 2 {
			return fmt.Errorf("modified %d, on the source %d", t.Mtim.Sec, s.Mtim.Sec)
		}
		return nil
	}
	if s.Mode&unix.S_IFMT != unix.S_IFLNK && s.Mode&0o7777 != t.Mode&0o7777 {
		return fmt.Errorf("mode %04o, on the source %04o", t.Mode&0o7777, s.Mode&0o7777)
	}
	if s.Uid != t.Uid || s.Gid != t.Gid {
		return fmt.Errorf("owner %d:%d, on the source %d:%d", t.Uid, t.Gid, s.Uid, s.Gid)
	}
	if s.Mtim != t.Mtim {
		return fmt.Errorf("modified %d.%09d, on the source %d.%09d", t.Mtim.Sec, t.Mtim.Nsec, s.Mtim.Sec, s.Mtim.Nsec)
	}
	sx, err := xattrMap(src)
	if err != nil {
		return err
	}
	tx, err := xattrMap(dst)
	if err != nil {
		return err
	}
	for k, v := range sx {
		if tv, ok := tx[k]; !ok || !bytes.Equal(v, tv) {
			return fmt.Errorf("extended attribute %s differs from the source's", k)
		}
	}
	for k := range tx {
		if _, ok := sx[k]; !ok {
			return fmt.Errorf("extended attribute %s is not on the source", k)
		}
	}
	return nil
}

func xattrMap(path string) (map[string][]byte, error) {
	names, err := listXattrs(path)
	if err != nil {
		return nil, fmt.Errorf("listing extended attributes of %s: %w", path, err)
	}
	m := make(map[string][]byte, len(names))
	for _, n := range names {
		if m[n], err = getXattr(path, n); err != nil {
			return nil, fmt.Errorf("reading extended attribute %s of %s: %w", n, path, err)
		}
	}
	return m, nil
}

// compareContent reads both files through and compares them; the target's
// cached pages are dropped first (the filesystem was synced), so its bytes
// come from the device.
func compareContent(src, dst string, w *worker) error {
	a, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.Open(dst)
	if err != nil {
		return err
	}
	defer b.Close()
	_ = unix.Fadvise(int(b.Fd()), 0, 0, unix.FADV_DONTNEED)
	buf := w.buffer()
	half := len(buf) / 2
	ba, bb := buf[:half], buf[half:]
	for off := int64(0); ; {
		n, errA := io.ReadFull(a, ba)
		m, errB := io.ReadFull(b, bb[:max(n, 1)])
		if n != m || !bytes.Equal(ba[:n], bb[:m]) {
			i := 0
			for i < min(n, m) && ba[i] == bb[i] {
				i++
			}
			return fmt.Errorf("verifying: content differs from the source at byte %d", off+int64(i))
		}
		off += int64(n)
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return nil
		}
		if errA != nil {
			return errA
		}
		if errB != nil && errB != io.EOF && errB != io.ErrUnexpectedEOF {
			return errB
		}
	}
}

func kindName(mode uint32) string {
	names := map[uint32]string{
		unix.S_IFREG: "file", unix.S_IFDIR: "directory", unix.S_IFLNK: "symlink",
		unix.S_IFCHR: "character device", unix.S_IFBLK: "block device",
		unix.S_IFIFO: "FIFO", unix.S_IFSOCK: "socket",
	}
	if n, ok := names[mode&unix.S_IFMT]; ok {
		return n
	}
	return "file of unknown kind"
}
