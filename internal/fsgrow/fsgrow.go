// Package fsgrow grows a restored filesystem to fill the partition or disk
// that now holds it, for `asr restore --grow`.
//
// It drives e2fsprogs (e2fsck, resize2fs) or ntfs-3g's ntfsresize on a loop
// device over the byte range, so the same code serves a partition of a
// disk, a whole volume and a disk image file, with no need for the kernel
// to have read the new partition table. ext2/3/4, NTFS and F2FS grow
// unmounted; XFS and btrfs grow only mounted, and are mounted on the loop
// device for it (tree.go). exFAT, FAT and HFS+ have no tool that grows them.
package fsgrow

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// Check reports a missing tool, so --grow is refused before anything is
// written rather than after.
func Check() error {
	for _, t := range []string{"losetup", "e2fsck", "resize2fs"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("--grow needs %s (Debian: apt-get install util-linux e2fsprogs)", t)
		}
	}
	return nil
}

// ErrNotExt says the range holds no filesystem Grow can grow.
var ErrNotExt = errors.New("no ext2/3/4, NTFS, XFS, btrfs or F2FS filesystem there (only those are grown; exFAT, FAT and HFS+ have no tool to grow them)")

var blocksRE = regexp.MustCompile(`is now (\d+) \((\d+k)\) blocks long`)

// Grow checks and grows the ext2/3/4 or NTFS filesystem in [off, off+size) of path
// (a block device or a file) to fill the range. It returns what it did, in
// a phrase: "ext4 filesystem resized to 524032 blocks of 4k".
func Grow(ctx context.Context, path string, off, size int64) (string, error) {
	if g, err := treeGrower(path, off); err != nil || g != nil {
		if err != nil {
			return "", err
		}
		return g(ctx, path, off, size)
	}
	if ntfs, err := isNTFS(path, off); err != nil {
		return "", err
	} else if ntfs {
		return growNTFS(ctx, path, off, size)
	}
	if err := isExt(path, off); err != nil {
		return "", err
	}
	dev, err := attach(ctx, path, off, size)
	if err != nil {
		return "", err
	}
	defer exec.Command("losetup", "-d", dev).Run()

	// resize2fs wants a filesystem checked since it was last mounted; -p
	// fixes only what is safe without asking. Exit 1 means it fixed
	// something, which on a verified restore is only timestamps.
	if out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-p", dev).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			return "", fmt.Errorf("e2fsck -f -p before growing: %v: %s", err, lastLine(out))
		}
	}
	out, err := exec.CommandContext(ctx, "resize2fs", dev).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("resize2fs: %v: %s", err, lastLine(out))
	}
	if m := blocksRE.FindSubmatch(out); m != nil {
		return fmt.Sprintf("filesystem resized to %s blocks of %s with resize2fs", m[1], m[2]), nil
	}
	return "filesystem already fills it: " + lastLine(out), nil
}

// attach sets up a loop device over [off, off+size) of path.
func attach(ctx context.Context, path string, off, size int64) (string, error) {
	out, err := exec.CommandContext(ctx, "losetup", "--show", "-f", "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size), path).Output()
	if err != nil {
		return "", fmt.Errorf("losetup over %s bytes %d to %d: %w", path, off, off+size, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func isExt(path string, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, off+1024+56); err != nil {
		return fmt.Errorf("reading the superblock at byte %d: %w", off+1024, err)
	}
	if binary.LittleEndian.Uint16(b) != 0xEF53 {
		return ErrNotExt
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
