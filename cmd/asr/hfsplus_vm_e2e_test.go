package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// deletedMark begins every 2048-byte block (an HFS+ block of libisofs's
// volume) of the files the guest deletes: found on the restored volume,
// it is old data asr copied.
var deletedMark = []byte("ASR-DELETED-HFS+")

// markedFile writes n bytes to p in blocks of 2048, each deletedMark, its
// index and random bytes: no block is zero, none equals another.
func markedFile(t *testing.T, p string, n int) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+2048 <= n; i += 2048 {
		copy(b[i:], deletedMark)
		binary.BigEndian.PutUint64(b[i+len(deletedMark):], uint64(i/2048))
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// countMarked counts the blocks of p (512-byte sectors, so that a block out
// of line is found too) that begin with deletedMark.
func countMarked(t *testing.T, p string) int {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 0; off+512 <= len(b); off += 512 {
		if bytes.HasPrefix(b[off:], deletedMark) {
			n++
		}
	}
	return n
}

// hfsGuest runs script in a QEMU guest whose kernel (Debian's own) mounts
// the HFS+ volume vol read-write (testdata/hfsplus-vm.sh) and returns what
// it printed.
func hfsGuest(t *testing.T, vol, script string) string {
	t.Helper()
	sp := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(sp, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", "../../testdata/hfsplus-vm.sh", vol, sp)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("guest script failed: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// hfsListing lists every file of the mounted volume with its sha256, sorted
// by path: busybox's find and sha256sum in the guest.
// Its last line is the kernel's count of used space: "DF" and df's used
// KiB (total less free blocks, as the volume header counts them).
const hfsListing = "(cd /mnt && find . -type f | sort | xargs sha256sum)\ndf -k /mnt | awk 'NR == 2 { print \"DF\", $3 }'\n"

// TestE2EHFSPlusKernelWrittenRestore: an HFS+ volume with a history, as a
// disk in use has. Debian 12 has no mkfs.hfsplus or fsck.hfsplus (hfsprogs
// is not packaged), so xorriso (libisofs) writes the volume, hfsplus_grow.py
// gives it free space and clears the CD's software lock, and from then on
// Linux's own hfsplus driver, in a QEMU guest booting Debian's kernel,
// changes it: it deletes a file of 12 MiB (old data left in the free
// space), writes files, copies and deletes another marked file (write,
// delete) and writes more (write again). asr images and restores the
// volume; the guest's kernel then lists every file with its sha256 on the
// restored volume, which must equal its listing of the source, and no
// block of the deleted files' marked data may be on the restored volume.
// With no HFS+ checker on Debian, the kernel's mount is the only check of
// the structure.
func TestE2EHFSPlusKernelWrittenRestore(t *testing.T) {
	testenv.RequireVM(t, "losetup", "xorriso", "python3", "busybox", "cpio")
	if m, _ := filepath.Glob("/lib/modules/*/kernel/fs/hfsplus/hfsplus.ko*"); len(m) == 0 {
		testenv.Unavailable(t, "needs Debian's kernel with hfsplus.ko (scripts/deps.sh installs linux-image-amd64)")
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"tree", "tree/src/lib", "tree/docs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var kept []string
	for i := range 5 {
		p := filepath.Join(tree, fmt.Sprintf("f%02d.bin", i))
		fillRandom(t, p, int64(100000+i*400000), uint64(300+i))
		kept = append(kept, p)
	}
	for i := range 150 {
		text := strings.Repeat(fmt.Sprintf("line %d of a small source file\n", i), 1+i*7)
		d := "tree/src/lib"
		if i%3 == 0 {
			d = "tree/docs"
		}
		if err := os.WriteFile(filepath.Join(dir, d, fmt.Sprintf("s%03d.txt", i)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	markedFile(t, filepath.Join(tree, "old.bin"), 12<<20)
	markedFile(t, filepath.Join(tree, "gen2.bin"), 3<<20)
	iso := filepath.Join(dir, "hfs.iso")
	sh(t, "xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-V", "ASRHFS", "-o", iso, tree)
	vol := filepath.Join(dir, "hfs.img")
	sh(t, "python3", "../../testdata/hfsplus_grow.py", iso, vol, fmt.Sprint(32<<20))

	before := hfsGuest(t, vol, `set -e
mount -t hfsplus /dev/vda /mnt
cd /mnt
rm old.bin
head -c 3000000 /dev/urandom >new1.bin
cp gen2.bin tmp2.bin
rm gen2.bin tmp2.bin
head -c 2500000 /dev/urandom >new2.bin
mkdir -p src/new/deep
head -c 70000 /dev/urandom >src/new/deep/new3.bin
rm docs/s003.txt
cd /
umount /mnt
mount -t hfsplus -o ro /dev/vda /mnt
`+hfsListing+"umount /mnt\n")
	lines := strings.Split(strings.TrimSpace(before), "\n")
	var dfKiB float64
	if _, err := fmt.Sscanf(lines[len(lines)-1], "DF %g", &dfKiB); err != nil {
		t.Fatalf("the guest's listing does not end with df's used KiB: %v\n%s", err, before)
	}
	lines = lines[:len(lines)-1]
	if len(lines) != 5+150-1+3 {
		t.Fatalf("the guest lists %d files on the source, want %d:\n%s", len(lines), 5+150-1+3, before)
	}
	// The files libisofs wrote and the kernel did not touch read back as
	// written: the kernel reads xorriso's volume as it is.
	for _, p := range kept {
		want := fileHash(t, p) + "  ./" + filepath.Base(p)
		if !strings.Contains(before, want) {
			t.Errorf("the guest's listing lacks %q:\n%s", want, before)
		}
	}
	oldBlocks := countMarked(t, vol)
	if oldBlocks < 4<<20/2048 {
		t.Fatalf("only %d blocks of the deleted files' data are left in the source's free space: the test volume is not what this test needs", oldBlocks)
	}

	scanned, _, tfile, _ := scanRestore(t, vol, 13)
	// asr's map against the kernel's own count: both are the allocation
	// file's used blocks, so they agree to imagescan's 0.1 MiB rounding.
	var mapped float64
	if m := regexp.MustCompile(`by HFS\+ allocation file: ([0-9.]+) MiB used`).FindStringSubmatch(scanned); m == nil {
		t.Errorf("imagescan did not map the volume by its HFS+ allocation file; got:\n%s", scanned)
	} else if mapped, _ = strconv.ParseFloat(m[1], 64); math.Abs(mapped-dfKiB/1024) > 0.06 {
		t.Errorf("imagescan maps %.1f MiB used, the guest's kernel counts %.2f MiB used", mapped, dfKiB/1024)
	}
	t.Logf("imagescan maps %.1f MiB used, the guest's df %.2f MiB; %d blocks of deleted data in the source's free space", mapped, dfKiB/1024, oldBlocks)
	if n := countMarked(t, tfile); n > 0 {
		t.Errorf("%d blocks of deleted data (of %d in the source's free space) are on the restored volume, want none", n, oldBlocks)
	}
	after := hfsGuest(t, tfile, "set -e\nmount -t hfsplus -o ro /dev/vda /mnt\n"+hfsListing+"umount /mnt\n")
	if after != before {
		t.Errorf("the restored volume's files differ from the source's:\nsource:\n%s\nrestored:\n%s", before, after)
	}
}
