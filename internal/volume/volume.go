// Package volume gives a directory tree for a volume: a directory that is
// already mounted, or a block device or raw disk image that it mounts itself
// (the source read-only, through a read-only loop device so that not even a
// journal replay writes to it) and unmounts when closed.
//
// It refuses what a file-copy restore must not use: a source mounted
// read-write (it could change under the copy), a target that is the running
// system's root filesystem, a target mounted read-only, a disk with several
// partitions where one volume is meant. It does not copy anything.
package volume

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/partition"
)

// ErrPartitions marks a refusal of a disk with several partitions where one
// volume is meant.
var ErrPartitions = errors.New("a disk with several partitions")

// partitionsError is such a refusal; it matches ErrPartitions without
// repeating its text.
type partitionsError string

func (e partitionsError) Error() string        { return string(e) }
func (e partitionsError) Is(target error) bool { return target == ErrPartitions }

// Volume is a mounted filesystem and the directory to copy from or to.
type Volume struct {
	Spec   string // what was given: a directory, device or image file
	Dir    string // the directory holding the tree
	Dev    uint64 // st_dev of Dir: the filesystem's identity
	FSType string // as the kernel names it ("ext4", "vfat"); empty if not mounted by us
	// Mounted is set when this package mounted the volume (and Close
	// unmounts it).
	Mounted bool
	// Partition is the partition number used inside an image file, or 0.
	Partition int

	loop *os.File // the loop device, held open until after unmounting
	ro   bool
}

// OpenSource gives the source tree at spec read-only: a directory on a
// read-only mount, a block device (mounted read-only elsewhere, or mounted
// here through a read-only loop device), or a raw disk image file (a
// filesystem, or a disk with one partition).
func OpenSource(spec string) (*Volume, error) {
	var st unix.Stat_t
	if err := unix.Stat(spec, &st); err != nil {
		return nil, fmt.Errorf("source %s: %w", spec, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		var fs unix.Statfs_t
		if err := unix.Statfs(spec, &fs); err != nil {
			return nil, fmt.Errorf("source %s: %w", spec, err)
		}
		if fs.Flags&unix.ST_RDONLY == 0 {
			return nil, fmt.Errorf("source %s is on a volume mounted read-write, which could change during the copy: remount it read-only (mount -o remount,ro) or give its device", spec)
		}
		return &Volume{Spec: spec, Dir: spec, Dev: st.Dev, ro: true}, nil
	case unix.S_IFBLK:
		if m, ok := mountOf(st.Rdev); ok {
			if !m.ro {
				return nil, fmt.Errorf("source %s is mounted read-write at %s, so it could change during the copy: unmount it or remount it read-only (mount -o remount,ro %s)", spec, m.point, m.point)
			}
			return &Volume{Spec: spec, Dir: m.point, Dev: st.Rdev, ro: true}, nil
		}
		// A filesystem at the start is the volume, whatever partition
		// devices the kernel may still list from an earlier use of the
		// device (a loop device keeps those of its last backing file).
		if head, err := readHead(spec); err == nil && sniff(head) != "" {
			return mountLoop(spec, 0, 0, 0)
		}
		if n := len(partitionsOf(st.Rdev)); n > 0 {
			return nil, fmt.Errorf("source %s is a disk with %d partitions: give the partition to copy from (such as %s)", spec, n, firstPartitionName(st.Rdev))
		}
		// No partition devices: a filesystem, or a partition table the
		// kernel has not read, whose only partition can be read through an
		// offset since nothing can have it mounted.
		fallthrough
	case unix.S_IFREG:
		off, size, num, err := imagePartition(spec)
		if err != nil {
			return nil, err
		}
		return mountLoop(spec, off, size, num)
	}
	return nil, fmt.Errorf("source %s is not a directory, block device or disk image file", spec)
}

// OpenTarget gives the target tree at spec: a directory on a read-write
// mount, or a block device holding a filesystem, used where it is mounted or
// else mounted here read-only until MakeWritable, so that every check runs
// before the target changes.
func OpenTarget(spec string) (*Volume, error) {
	var st unix.Stat_t
	if err := unix.Stat(spec, &st); err != nil {
		return nil, fmt.Errorf("target %s: %w", spec, err)
	}
	var root unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		return nil, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if st.Dev == root.Dev {
			return nil, fmt.Errorf("target %s is on the running system's root filesystem: asr does not copy over the system it runs on; boot another system (the asr appliance) or choose another volume", spec)
		}
		var fs unix.Statfs_t
		if err := unix.Statfs(spec, &fs); err != nil {
			return nil, fmt.Errorf("target %s: %w", spec, err)
		}
		if fs.Flags&unix.ST_RDONLY != 0 {
			return nil, fmt.Errorf("target %s is mounted read-only: remount it read-write (mount -o remount,rw)", spec)
		}
		return &Volume{Spec: spec, Dir: spec, Dev: st.Dev}, nil
	case unix.S_IFBLK:
		if st.Rdev == root.Dev {
			return nil, fmt.Errorf("target %s holds the running system's root filesystem: asr does not copy over the system it runs on; boot another system (the asr appliance) or choose another volume", spec)
		}
		if m, ok := mountOf(st.Rdev); ok {
			if m.ro {
				return nil, fmt.Errorf("target %s is mounted read-only at %s: remount it read-write (mount -o remount,rw %s) or unmount it", spec, m.point, m.point)
			}
			return &Volume{Spec: spec, Dir: m.point, Dev: st.Rdev}, nil
		}
		head, err := readHead(spec)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", spec, err)
		}
		fstype := sniff(head)
		if n := len(partitionsOf(st.Rdev)); n > 0 && fstype == "" {
			return nil, fmt.Errorf("target %s is a disk with %d partitions: give the partition to copy into (such as %s), or add --erase to erase the whole disk and restore the image block by block", spec, n, firstPartitionName(st.Rdev))
		}
		if fstype == "" && partition.Parse(head) != nil && len(partition.Parse(head).Partitions) > 0 {
			return nil, fmt.Errorf("target %s holds a partition table: give the partition to copy into (partx -a %s makes its devices), or add --erase to erase the whole disk and restore the image block by block", spec, spec)
		}
		if fstype == "" {
			return nil, fmt.Errorf("target %s holds no filesystem asr recognises (ext2/3/4, FAT, XFS, btrfs): make one (mkfs), or add --erase to erase it and restore the image block by block", spec)
		}
		return mountAt(spec, fstype, "asr-target-", unix.MS_RDONLY, nil)
	}
	return nil, fmt.Errorf("target %s is not a directory or block device (a disk image file takes --erase)", spec)
}

// MakeWritable remounts a target this package mounted read-only, read-write.
func (v *Volume) MakeWritable() error {
	if !v.Mounted || !v.ro {
		return nil
	}
	if err := unix.Mount("", v.Dir, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remounting %s read-write: %w", v.Spec, err)
	}
	v.ro = false
	return nil
}

// Close unmounts what this package mounted and removes its mount point.
func (v *Volume) Close() error {
	if !v.Mounted {
		return nil
	}
	var err error
	// A scan that just finished may still hold the directory for a moment.
	for range 20 {
		if err = unix.Unmount(v.Dir, 0); !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("unmounting %s from %s: %w", v.Spec, v.Dir, err)
	}
	v.Mounted = false
	os.Remove(v.Dir)
	if v.loop != nil {
		v.loop.Close() // autoclear detaches the loop device
	}
	return nil
}

// mountLoop attaches [off, off+size) of path (a file or device; size 0: to
// the end) to a read-only loop device and mounts its filesystem read-only.
func mountLoop(path string, off, size int64, part int) (*Volume, error) {
	back, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	defer back.Close()
	head := make([]byte, 128<<10)
	n, _ := back.ReadAt(head, off)
	fstype := sniff(head[:n])
	if fstype == "" {
		return nil, fmt.Errorf("source %s holds no filesystem asr recognises (ext2/3/4, FAT, XFS, btrfs)", path)
	}
	loop, err := attachLoop(back, off, size)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	v, err := mountAt(loop.Name(), fstype, "asr-source-", unix.MS_RDONLY, loop)
	if err != nil {
		loop.Close()
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	v.Spec, v.Partition = path, part
	return v, nil
}

// attachLoop gives a free loop device the backing file, read-only, cleared
// automatically once the last user (the mount, then our descriptor) lets go.
func attachLoop(back *os.File, off, size int64) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("no loop devices (modprobe loop): %w", err)
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
	cfg.Info.Offset, cfg.Info.Sizelimit = uint64(off), uint64(size)
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
	// Another program may take the free device between asking and
	// configuring it: ask again.
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		name := "/dev/loop" + strconv.Itoa(n)
		f, err := os.OpenFile(name, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", name, err)
		}
		err = unix.IoctlLoopConfigure(int(f.Fd()), &cfg)
		if err == nil {
			return f, nil
		}
		f.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attaching %s: %w", name, err)
		}
	}
	return nil, errors.New("no free loop device after 20 tries")
}

// mountAt mounts dev (a filesystem of type fstype) on a new directory in
// TMPDIR.
func mountAt(dev, fstype, prefix string, flags uintptr, loop *os.File) (*Volume, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, fmt.Errorf("making a mount point: %w", err)
	}
	flags |= unix.MS_NOSUID | unix.MS_NODEV
	err = unix.Mount(dev, dir, fstype, flags, "")
	if err != nil && fstype == "ext4" && flags&unix.MS_RDONLY != 0 && loop != nil {
		// A journal that needs replaying cannot be replayed on a read-only
		// device: read the volume as its last commit left it.
		err = unix.Mount(dev, dir, fstype, flags, "noload")
	}
	if err != nil {
		os.Remove(dir)
		if errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("this kernel cannot mount %s (no %s driver: modprobe %s)", fstype, fstype, fstype)
		}
		return nil, fmt.Errorf("mounting %s (%s): %w", dev, fstype, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		unix.Unmount(dir, 0)
		os.Remove(dir)
		return nil, err
	}
	return &Volume{Spec: dev, Dir: dir, Dev: st.Dev, FSType: fstype, Mounted: true, loop: loop, ro: flags&unix.MS_RDONLY != 0}, nil
}

// imagePartition finds the filesystem inside a raw disk image file: the
// whole file, or its only partition.
func imagePartition(path string) (off, size int64, num int, err error) {
	head, err := readHead(path)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("source %s: %w", path, err)
	}
	if sniff(head) != "" {
		return 0, 0, 0, nil
	}
	t := partition.Parse(head)
	switch {
	case t == nil || len(t.Partitions) == 0:
		return 0, 0, 0, fmt.Errorf("source %s holds neither a filesystem asr recognises nor a partition table", path)
	case len(t.Partitions) > 1:
		return 0, 0, 0, partitionsError(fmt.Sprintf("source %s is a disk image with %d partitions: a file-copy restore copies one volume; attach it (losetup -P -r -f %s, then partx -a on the loop device) and give the partition's device", path, len(t.Partitions), path))
	}
	p := t.Partitions[0]
	return p.Start, p.Size, p.Number, nil
}

func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 128<<10)
	n, err := io.ReadFull(f, b)
	if err != nil && n == 0 {
		return nil, err
	}
	return b[:n], nil
}

// sniff names the filesystem whose superblock starts head, or "".
func sniff(h []byte) string {
	switch {
	case len(h) >= 1082 && h[1080] == 0x53 && h[1081] == 0xef:
		return "ext4" // the ext4 driver mounts ext2 and ext3 too
	case len(h) >= 512 && h[510] == 0x55 && h[511] == 0xaa &&
		(string(h[54:59]) == "FAT12" || string(h[54:59]) == "FAT16" || string(h[82:87]) == "FAT32"):
		return "vfat"
	case len(h) >= 4 && string(h[:4]) == "XFSB":
		return "xfs"
	case len(h) >= 0x10048 && string(h[0x10040:0x10048]) == "_BHRfS_M":
		return "btrfs"
	}
	return ""
}

type mount struct {
	point string
	ro    bool
}

// mountOf finds where the block device dev is mounted (its whole filesystem,
// not a bind mount of a subdirectory).
func mountOf(dev uint64) (mount, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mount{}, false
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[2] != want || fs[3] != "/" {
			continue
		}
		ro := strings.HasPrefix(fs[5], "ro,") || fs[5] == "ro"
		return mount{point: unescape(fs[4]), ro: ro}, true
	}
	return mount{}, false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func sysDir(dev uint64) string {
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
}

// partitionsOf lists the kernel names of dev's partitions.
func partitionsOf(dev uint64) []string {
	d := sysDir(dev)
	ents, _ := os.ReadDir(d)
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(d, e.Name(), "partition")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func firstPartitionName(dev uint64) string {
	if p := partitionsOf(dev); len(p) > 0 {
		return "/dev/" + p[0]
	}
	return "a partition"
}
