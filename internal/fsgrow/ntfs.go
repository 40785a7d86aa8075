package fsgrow

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
)

// isNTFS reports whether an NTFS boot sector starts at off of path.
func isNTFS(path string, off int64) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := f.ReadAt(b, off+3); err != nil {
		return false, fmt.Errorf("reading the boot sector at byte %d: %w", off, err)
	}
	return string(b) == "NTFS    ", nil
}

var ntfsSizeRE = regexp.MustCompile(`New volume size\s*: (\d+) bytes`)

// growNTFS grows the NTFS volume in [off, off+size) of path to fill it with
// ntfsresize, which checks the volume first and refuses one it finds
// inconsistent. It schedules chkdsk for Windows' next boot, as it always
// does after a resize: the phrase it returns says so.
func growNTFS(ctx context.Context, path string, off, size int64) (string, error) {
	if _, err := exec.LookPath("ntfsresize"); err != nil {
		return "", errors.New("growing NTFS needs ntfsresize (Debian: apt-get install ntfs-3g)")
	}
	dev, err := attach(ctx, path, off, size)
	if err != nil {
		return "", err
	}
	defer exec.Command("losetup", "-d", dev).Run()
	// --force answers ntfsresize's question; it still refuses a volume
	// marked dirty unless given twice, which asr never does.
	cmd := exec.CommandContext(ctx, "ntfsresize", "--force", "--no-progress-bar", dev)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ntfsresize: %v: %s", err, lastLine(out))
	}
	if m := ntfsSizeRE.FindSubmatch(out); m != nil {
		return fmt.Sprintf("NTFS volume resized to %s bytes with ntfsresize (Windows runs chkdsk at its next boot)", m[1]), nil
	}
	return "NTFS volume already fills it: " + lastLine(out), nil
}
