package fsgrow

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// Growing XFS, btrfs and F2FS. XFS and btrfs grow only while mounted
// (xfs_growfs, btrfs filesystem resize): they are mounted on a loop device
// in a private temporary directory, grown and unmounted. F2FS grows
// unmounted with resize.f2fs.

// treeGrower returns the grower for the XFS, btrfs or F2FS filesystem at
// off of path, or nil when there is none of them.
func treeGrower(path string, off int64) (func(context.Context, string, int64, int64) (string, error), error) {
	kind, err := treeKind(path, off)
	switch kind {
	case "xfs":
		return growXFS, err
	case "btrfs":
		return growBtrfs, err
	case "f2fs":
		return growF2FS, err
	}
	return nil, err
}

// MountedKind names the filesystem at off of path when it is one that
// grows only mounted, by its kernel module ("xfs", "btrfs"); "" for any
// other or none. The appliance loads that module before Grow.
func MountedKind(path string, off int64) string {
	if kind, _ := treeKind(path, off); kind == "xfs" || kind == "btrfs" {
		return kind
	}
	return ""
}

// treeKind names the XFS, btrfs or F2FS filesystem at off of path by its
// magic number ("xfs", "btrfs", "f2fs"), or "" when there is none of them.
func treeKind(path string, off int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 0x10048)
	if _, err := f.ReadAt(head, off); err != nil {
		// A range too small to hold a btrfs superblock holds none of
		// them; ext is checked by its own reader.
		return "", nil
	}
	switch {
	case string(head[:4]) == "XFSB":
		return "xfs", nil
	case string(head[0x10040:0x10048]) == "_BHRfS_M":
		return "btrfs", nil
	case binary.LittleEndian.Uint32(head[1024:]) == 0xF2F52010:
		return "f2fs", nil
	}
	return "", nil
}

// needTool reports a missing tool with the package that has it.
func needTool(tool, pkg, fs string) error {
	if _, err := exec.LookPath(tool); err != nil {
		return fmt.Errorf("growing %s needs %s (Debian: apt-get install %s)", fs, tool, pkg)
	}
	return nil
}

// loopRange attaches [off, off+size) of path as a loop device.
func loopRange(ctx context.Context, path string, off, size int64) (string, func(), error) {
	out, err := exec.CommandContext(ctx, "losetup", "--show", "-f", "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size), path).Output()
	if err != nil {
		return "", nil, fmt.Errorf("losetup over %s bytes %d to %d: %w", path, off, off+size, err)
	}
	dev := strings.TrimSpace(string(out))
	return dev, func() { exec.Command("losetup", "-d", dev).Run() }, nil
}

// kernelHas reports whether the running kernel mounts fstype, loading its
// module if there is one.
func kernelHas(fstype string) bool {
	exec.Command("modprobe", "-q", fstype).Run()
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	return false
}

// mounted runs fn with dev mounted as fstype on a private temporary
// directory, and unmounts it whatever fn did.
func mounted(ctx context.Context, dev, fstype string, fn func(mnt string) error) (err error) {
	mnt, err := os.MkdirTemp("", "asr-grow-")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	if out, err := exec.CommandContext(ctx, "mount", "-t", fstype, dev, mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mounting the %s filesystem to grow it: %v: %s", fstype, err, lastLine(out))
	}
	defer func() {
		if out, uerr := exec.Command("umount", mnt).CombinedOutput(); uerr != nil && err == nil {
			err = fmt.Errorf("unmounting %s after growing it: %v: %s", fstype, uerr, lastLine(out))
		}
	}()
	return fn(mnt)
}

// ErrNoXFSDriver says XFS cannot be grown here: xfs_growfs works only on a
// mounted filesystem.
var ErrNoXFSDriver = errors.New("XFS grows only while mounted (xfs_growfs), and this kernel has no XFS driver: the filesystem keeps its size; grow it with xfs_growfs after booting the restored system")

var xfsGrownRE = regexp.MustCompile(`data blocks changed from (\d+) to (\d+)`)

func growXFS(ctx context.Context, path string, off, size int64) (string, error) {
	if err := needTool("xfs_growfs", "xfsprogs", "XFS"); err != nil {
		return "", err
	}
	if !kernelHas("xfs") {
		return "", ErrNoXFSDriver
	}
	dev, detach, err := loopRange(ctx, path, off, size)
	if err != nil {
		return "", err
	}
	defer detach()
	var out []byte
	err = mounted(ctx, dev, "xfs", func(mnt string) error {
		var err error
		if out, err = exec.CommandContext(ctx, "xfs_growfs", mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("xfs_growfs: %v: %s", err, lastLine(out))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if m := xfsGrownRE.FindSubmatch(out); m != nil {
		return fmt.Sprintf("XFS filesystem grown from %s to %s blocks with xfs_growfs", m[1], m[2]), nil
	}
	return "XFS filesystem already fills it", nil
}

func growBtrfs(ctx context.Context, path string, off, size int64) (string, error) {
	if err := needTool("btrfs", "btrfs-progs", "btrfs"); err != nil {
		return "", err
	}
	if !kernelHas("btrfs") {
		return "", errors.New("btrfs grows only while mounted, and this kernel has no btrfs driver: the filesystem keeps its size")
	}
	dev, detach, err := loopRange(ctx, path, off, size)
	if err != nil {
		return "", err
	}
	defer detach()
	var out []byte
	err = mounted(ctx, dev, "btrfs", func(mnt string) error {
		var err error
		if out, err = exec.CommandContext(ctx, "btrfs", "filesystem", "resize", "max", mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("btrfs filesystem resize max: %v: %s", err, lastLine(out))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return "btrfs filesystem grown to fill it with btrfs filesystem resize max: " + lastLine(out), nil
}

func growF2FS(ctx context.Context, path string, off, size int64) (string, error) {
	if err := needTool("resize.f2fs", "f2fs-tools", "F2FS"); err != nil {
		return "", err
	}
	dev, detach, err := loopRange(ctx, path, off, size)
	if err != nil {
		return "", err
	}
	defer detach()
	out, err := exec.CommandContext(ctx, "resize.f2fs", dev).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("resize.f2fs: %v: %s", err, lastLine(out))
	}
	if bytes.Contains(out, []byte("Nothing to resize")) {
		return "F2FS filesystem already fills it", nil
	}
	return "F2FS filesystem grown to fill it with resize.f2fs", nil
}
