package blockmap

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// TestXFSDirtyLog: an XFS shut down while mounted (xfs_io's shutdown, as a
// crash would leave it) has a log to replay, whose allocations its btrees
// may not show yet. It must fall back; once mounted and unmounted cleanly
// it maps again.
func TestXFSDirtyLog(t *testing.T) {
	testenv.Require(t, "mkfs.xfs", "xfs_io", "xfs_logprint", "losetup", "mount", "umount")
	if b, _ := os.ReadFile("/proc/filesystems"); !strings.Contains(string(b), "\txfs\n") {
		testenv.Unavailable(t, "this kernel has no XFS driver: cannot make a dirty XFS log")
	}
	p := fsImage(t, 320<<20, "mkfs.xfs", "-q", "-f")
	dev := testenv.Loop(t, p)
	mnt := t.TempDir()
	testenv.Run(t, "mount", "-t", "xfs", dev, mnt)
	defer exec.Command("umount", mnt).Run()
	if err := os.WriteFile(filepath.Join(mnt, "f"), make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "sync", "-f", mnt)
	testenv.Run(t, "xfs_io", "-x", "-c", "shutdown", mnt)
	testenv.Run(t, "umount", mnt)
	if out := testenv.Run(t, "xfs_logprint", "-t", dev); !strings.Contains(out, "DIRTY") {
		t.Fatalf("xfs_logprint does not call the log dirty after a shutdown:\n%s", out)
	}
	m := buildFile(t, p)
	if len(m.Regions) != 1 || !m.Regions[0].Fallback || !strings.Contains(m.Regions[0].Note, "the log is not clean") {
		t.Fatalf("Build(XFS with a dirty log) = %s, want a fallback noting the log", describe(m))
	}

	testenv.Run(t, "mount", "-t", "xfs", dev, mnt) // replays the log
	testenv.Run(t, "umount", mnt)
	m = buildFile(t, p)
	if r := fsRegion(t, m); r.Method != MethodXFS {
		t.Errorf("Build(XFS after recovery) = %s, want %s", describe(m), MethodXFS)
	}
}

// TestTreeFilesystems writes files to XFS and btrfs through the kernel,
// deletes every third one, and checks the map against the image: every
// sector of a kept file is used, none of a deleted one.
func TestTreeFilesystems(t *testing.T) {
	for _, tt := range []struct {
		name, fstype, method string
		size                 int64
		mkfs                 []string
	}{
		{"XFS", "xfs", MethodXFS, 320 << 20, []string{"mkfs.xfs", "-q", "-f"}},
		{"XFS 1k blocks", "xfs", MethodXFS, 320 << 20, []string{"mkfs.xfs", "-q", "-f", "-b", "size=1024"}},
		{"btrfs", "btrfs", MethodBtrfs, 256 << 20, []string{"mkfs.btrfs", "-q", "-f"}},
		{"btrfs single metadata", "btrfs", MethodBtrfs, 256 << 20, []string{"mkfs.btrfs", "-q", "-f", "-m", "single"}},
		{"btrfs mixed", "btrfs", MethodBtrfs, 256 << 20, []string{"mkfs.btrfs", "-q", "-f", "--mixed"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testenv.Require(t, tt.mkfs[0], "losetup", "mount", "umount", "df", "sync")
			if b, _ := os.ReadFile("/proc/filesystems"); !strings.Contains(string(b), "\t"+tt.fstype+"\n") {
				testenv.Unavailable(t, "this kernel has no %s driver", tt.fstype)
			}
			p := fsImage(t, tt.size, tt.mkfs...)
			// btrfs would keep a file of a few sectors inline, in its
			// metadata, where the test cannot find its sectors.
			opts := ""
			if tt.fstype == "btrfs" {
				opts = "max_inline=0"
			}
			pop := populate(t, p, false, opts, uint64(len(tt.name)))
			m := buildFile(t, p)
			r := fsRegion(t, m)
			if r.Method != tt.method || r.Off != 0 {
				t.Errorf("Build(%s) = %s, want %s at 0", tt.name, describe(m), tt.method)
			}
			if kept := checkMarks(t, m, p, false); kept != pop.keptSectors {
				t.Errorf("found %d sectors of kept files in the image, want %d", kept, pop.keptSectors)
			}
			t.Logf("%s: map used %d of %d; df free %d", tt.name, r.UsedBytes(), r.Len, pop.free)
			if r.UsedBytes() > r.Len/2 {
				t.Errorf("map used %d of %d bytes: most of the free space is marked used", r.UsedBytes(), r.Len)
			}
		})
	}
}
