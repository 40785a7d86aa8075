package blockmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
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

// TestXFSProtofile maps XFS v5 and v4 filesystems that mkfs.xfs filled from
// a protofile over a device full of old data (marked as deleted-file
// sectors): every sector of a file is used, no sector of the old data is
// but in the groups' free lists.
// No kernel driver is needed, and v4 (which this kernel may refuse to
// mount) is covered.
func TestXFSProtofile(t *testing.T) {
	testenv.Require(t, "mkfs.xfs")
	for _, crc := range []string{"1", "0"} {
		t.Run("crc="+crc, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "fs.img")
			old := make([]byte, 320<<20)
			for s := 0; s < len(old); s += 512 {
				copy(old[s:], delMark)
				old[s+8] = byte(s >> 9)
			}
			if err := os.WriteFile(p, old, 0o644); err != nil {
				t.Fatal(err)
			}
			files, _ := testFiles(uint64(len(crc)) + 5)
			var proto strings.Builder
			proto.WriteString("/dev/null\n0 0\nd--755 0 0\n")
			want := 0
			for i, b := range files {
				if deleted(i) {
					continue // its sectors carry the deleted mark
				}
				want += len(b) / 512
				f := filepath.Join(dir, fmt.Sprintf("f%02d", i))
				if err := os.WriteFile(f, b, 0o644); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&proto, "f%02d ---644 0 0 %s\n", i, f)
			}
			proto.WriteString("$\n")
			pf := filepath.Join(dir, "proto")
			if err := os.WriteFile(pf, []byte(proto.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			testenv.Run(t, "mkfs.xfs", "-q", "-f", "-K", "-m", "crc="+crc, "-p", pf, p)
			m := buildFile(t, p)
			if r := fsRegion(t, m); r.Method != MethodXFS {
				t.Fatalf("Build = %s, want %s", describe(m), MethodXFS)
			}
			if kept := checkMarks(t, m, p, true); kept != want {
				t.Errorf("found %d sectors of files in the image, want %d", kept, want)
			}
			// The free-list blocks of each group (the AGFL) are allocated
			// but mkfs does not write them: they keep old data, and the
			// map rightly keeps them. Nothing else may.
			img, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			oldUsed := 0
			for s := 0; s+512 <= len(img); s += 512 {
				if bytes.HasPrefix(img[s:], delMark) && m.Used(int64(s), 512) {
					oldUsed++
				}
			}
			agCount := int(binary.BigEndian.Uint32(img[0x58:]))
			bs := int(binary.BigEndian.Uint32(img[4:]))
			if limit := agCount * 8 * bs / 512; oldUsed > limit {
				t.Errorf("%d sectors of old data are used, want at most %d (8 free-list blocks per group)", oldUsed, limit)
			}
		})
	}
}
