package main

// End-to-end tests of filesystem-aware images: ext4 and FAT volumes whose
// free space holds old data are scanned, restored to loop devices and
// checked with the filesystems' own tools; damaged metadata must fall back
// to copying every non-zero chunk, never to a corrupt restore.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/partition"
	"github.com/asrlinux/asr/internal/testenv"
)

// usedDisk makes a GPT disk of size bytes with one ext4 partition 30% full
// whose free space holds old random data (testdata/mkdisk.sh).
func usedDisk(t *testing.T, dir, size string) string {
	t.Helper()
	testenv.Require(t, "losetup", "sgdisk", "mkfs.ext4", "e2fsck", "partx", "openssl")
	p := filepath.Join(dir, "used.img")
	sh(t, "../../testdata/mkdisk.sh", p, size, "30", "85")
	return p
}

// firstPartition returns the byte range of the first partition of disk.
func firstPartition(t *testing.T, disk string) (off, size int64) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1<<20)
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	pt := partition.Parse(head)
	if len(pt.Partitions) == 0 {
		t.Fatalf("%s has no partition", disk)
	}
	return pt.Partitions[0].Start, pt.Partitions[0].Size
}

// partLoop attaches [off, off+size) of file as a loop device, read-only
// when ro.
func partLoop(t *testing.T, file string, off, size int64, ro bool) string {
	t.Helper()
	args := []string{"-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size)}
	if ro {
		args = append(args, "-r")
	}
	return loop(t, file, args...)
}

// treeDigest mounts dev read-only and lists every entry under it with its
// type, mode, size and content hash, one line each, sorted.
func treeDigest(t *testing.T, dev, fstype string) []string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", fstype, "-o", "ro,noload", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v: %s", dev, err, out)
	}
	defer exec.Command("umount", mnt).Run()
	return listTree(t, dev, mnt, fs.FileInfo.Mode)
}

// listTree lists every entry under mnt, where dev is mounted, with its
// path, mode (as mode gives it: all of it, or only its type where the
// filesystem's driver makes up the permissions), size and content hash,
// one line each, sorted.
func listTree(t *testing.T, dev, mnt string, mode func(fs.FileInfo) fs.FileMode) []string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		line := fmt.Sprintf("%s %v %d", rel, mode(fi), fi.Size())
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			line += " " + hex.EncodeToString(h.Sum(nil))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatalf("reading the files on %s: %v", dev, err)
	}
	sort.Strings(lines)
	return lines
}

// checkSameFiles fails the test if got, the listing of a restored volume,
// differs from want, its source's. want must hold at least minEntries, else
// the source is too empty for the comparison to prove anything.
func checkSameFiles(t *testing.T, want, got []string, minEntries int) {
	t.Helper()
	if len(want) < minEntries {
		t.Fatalf("source holds only %d entries: the test volume is not what this test needs", len(want))
	}
	if diff := firstDiff(want, got); diff != "" {
		t.Errorf("restored files differ from the source's: %s", diff)
	}
}

// fsCheck runs a filesystem's own checker read-only on dev (check is its
// command line, without the device) and stops the test if it finds a
// fault; where names dev in the message. ntfsfix -n exits 0 even when a
// check fails, and says FAILED: for it that counts as a fault too.
func fsCheck(t *testing.T, dev, where string, check ...string) {
	t.Helper()
	out, err := exec.Command(check[0], append(check[1:], dev)...).CombinedOutput()
	if err != nil || check[0] == "ntfsfix" && strings.Contains(string(out), "FAILED") {
		t.Fatalf("%s on %s: %v\n%s", strings.Join(check, " "), where, err, out)
	}
}

// restoreOver restores img with --erase --noprompt and flags onto a loop
// device over a new file of size bytes full of random data from seed, as a
// used target disk is. It returns restore's result, the file and the device.
func restoreOver(t *testing.T, img string, size int64, seed uint64, flags ...string) (r result, tfile, dev string) {
	t.Helper()
	tfile = filepath.Join(t.TempDir(), "target.img")
	fillRandom(t, tfile, size, seed)
	dev = loop(t, tfile)
	r = mustAsr(t, append([]string{"restore", "--source", img, "--target", dev, "--erase", "--noprompt"}, flags...)...)
	return r, tfile, dev
}

// freeSpace returns the bytes of disk that its filesystems call free,
// according to the map asr builds of it.
func freeSpace(t *testing.T, disk string) []blockmap.Extent {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := blockmap.Build(f, testenv.Size(t, disk))
	if err != nil {
		t.Fatal(err)
	}
	var free []blockmap.Extent
	for _, r := range m.Regions {
		if r.NonZero || r.Method == blockmap.MethodPartitionTable {
			continue
		}
		pos := r.Off
		for _, u := range append(r.Used, blockmap.Extent{Off: r.End()}) {
			if u.Off > pos {
				free = append(free, blockmap.Extent{Off: pos, Len: u.Off - pos})
			}
			pos = u.End()
		}
	}
	return free
}

// checkFreeNotCopied asserts that the free space of src holds old data
// (else the test proves nothing) and that none of it reached dst: no
// non-zero 4 KiB block of src's free space is found at the same place on dst.
func checkFreeNotCopied(t *testing.T, src, dst string) {
	t.Helper()
	free := freeSpace(t, src)
	sf, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	df, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	a, b := make([]byte, 4096), make([]byte, 4096)
	var old, copied, total int64
	for _, e := range free {
		for off := e.Off; off+4096 <= e.End(); off += 4096 {
			if _, err := sf.ReadAt(a, off); err != nil {
				t.Fatal(err)
			}
			if _, err := df.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			total++
			if blockmap.IsZero(a) {
				continue
			}
			old++
			if bytes.Equal(a, b) {
				copied++
			}
		}
	}
	if old < total/4 {
		t.Fatalf("only %d of %d free blocks of %s hold old data: the test disk is not what this test needs", old, total, src)
	}
	if copied > 0 {
		t.Errorf("%d of %d free blocks holding old data on %s were copied to %s, want none", copied, old, src, dst)
	}
}

func TestE2EExt4ImageKeepsOnlyUsedData(t *testing.T) {
	dir := t.TempDir()
	disk := usedDisk(t, dir, "96M")
	img := disk + ".asr"
	r := mustAsr(t, "imagescan", "--source", disk, "--output", img)
	if !strings.Contains(r.stdout, "Mapped partition 1") || !strings.Contains(r.stdout, "by ext4 bitmap") {
		t.Errorf("imagescan did not say partition 1 was mapped by its ext4 bitmap; got:\n%s", r.stdout)
	}
	info := mustAsr(t, "info", "--source", img)
	if !regexp.MustCompile(`partition 1:\s+\S+ MiB at 1048576, ext4 bitmap: \S+ MiB used`).MatchString(info.stdout) {
		t.Errorf("asr info does not list partition 1 with its ext4 bitmap method; got:\n%s", info.stdout)
	}

	// The image holds no more than the used data: what df calls used plus
	// the filesystem's own metadata, compressed.
	poff, psize := firstPartition(t, disk)
	src := partLoop(t, disk, poff, psize, true)
	used := usedBytes(t, src)
	if st := fileSize(t, img); st > used {
		t.Errorf("image is %d bytes, more than the %d bytes the filesystem uses", st, used)
	}

	r, tfile, _ := restoreOver(t, img, fileSize(t, disk), 9)
	if !strings.Contains(r.stdout, "free space not copied") || !strings.Contains(r.stdout, "of used data") {
		t.Errorf("restore did not say free space was skipped and used data verified; got:\n%s", r.stdout)
	}
	dst := partLoop(t, tfile, poff, psize, false)
	fsCheck(t, dst, "the restored partition", "e2fsck", "-fn")
	checkSameFiles(t, treeDigest(t, src, "ext4"), treeDigest(t, dst, "ext4"), 100)
	checkFreeNotCopied(t, disk, tfile)
}

func TestE2EFATImageKeepsOnlyUsedData(t *testing.T) {
	testenv.Require(t, "losetup", "mkfs.fat", "fsck.fat", "mcopy", "mdel")
	dir := t.TempDir()
	vol := filepath.Join(dir, "fat.img")
	sh(t, "truncate", "-s", "64M", vol)
	sh(t, "mkfs.fat", "-F", "32", "-s", "1", "-i", "a5a5a5a5", "-n", "ASRTEST", vol)
	// Old data: files copied in and deleted, so free clusters hold it.
	old := filepath.Join(dir, "old.bin")
	fillRandom(t, old, 40<<20, 3)
	sh(t, "mcopy", "-i", vol, old, "::/old.bin")
	sh(t, "mdel", "-i", vol, "::/old.bin")
	// The real content: files in a directory, some text, some random.
	files := map[string]string{}
	sh(t, "mmd", "-i", vol, "::/docs")
	for i := range 12 {
		p := filepath.Join(dir, fmt.Sprintf("f%02d.bin", i))
		if i%2 == 0 {
			fillRandom(t, p, int64(50000+i*70000), uint64(100+i))
		} else if err := os.WriteFile(p, bytes.Repeat([]byte(fmt.Sprintf("line %d of a text file\n", i)), 3000+i*500), 0o644); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("::/docs/F%02d.BIN", i)
		sh(t, "mcopy", "-i", vol, p, name)
		files[name] = testenv.Hash(t, p, 0, fileSize(t, p))
	}

	scanned, img, tfile, dev := scanRestore(t, vol, 4)
	if !strings.Contains(scanned, "Mapped whole disk") || !strings.Contains(scanned, "by FAT32") {
		t.Errorf("imagescan did not say the volume was mapped by its FAT; got:\n%s", scanned)
	}
	if st := fileSize(t, img); st > 8<<20 {
		t.Errorf("image is %d bytes, want under 8 MiB: the volume holds about 5 MiB of files and 40 MiB of deleted data", st)
	}
	fsCheck(t, dev, "the restored volume", "fsck.fat", "-n")
	for name, want := range files {
		out := filepath.Join(dir, "out")
		os.Remove(out)
		sh(t, "mcopy", "-i", dev, name, out)
		if got := testenv.Hash(t, out, 0, fileSize(t, out)); got != want {
			t.Errorf("restored %s has sha256 %s, want %s", name, got, want)
		}
	}
	checkFreeNotCopied(t, vol, tfile)
}

// TestE2EDamagedMetadataFallsBack: a filesystem whose metadata cannot be
// trusted is copied whole (every non-zero chunk) with a warning; the
// restored disk equals the source byte for byte.
func TestE2EDamagedMetadataFallsBack(t *testing.T) {
	dir := t.TempDir()
	disk := usedDisk(t, dir, "64M")
	poff, _ := firstPartition(t, disk)
	for _, tt := range []struct {
		name   string
		off    int64 // where to write, in the partition
		bytes  []byte
		expect string // in imagescan's output
	}{
		// Group 0's block bitmap lies right after the descriptors: mkfs
		// puts it at block 1+descriptors+reserved GDT; find it instead by
		// zeroing every block that dumpe2fs names as a bitmap.
		{"zeroed block bitmap", -1, nil, "Warning: partition 1"},
		{"bad superblock magic", 1024 + 56, []byte{0, 0}, "by non-zero blocks"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.img")
			sh(t, "cp", "--sparse=always", disk, bad)
			off, b := tt.off, tt.bytes
			if off < 0 {
				off, b = blockBitmap(t, bad, poff)
			}
			f, err := os.OpenFile(bad, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(b, poff+off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			checkRestoredExact(t, bad, tt.expect)
		})
	}
}

// blockBitmap returns the offset in the partition of group 0's block bitmap
// and a block of zeros to write over it (every block free: its count no
// longer matches the group descriptor's).
func blockBitmap(t *testing.T, disk string, poff int64) (int64, []byte) {
	t.Helper()
	dev := partLoop(t, disk, poff, 32<<20, true)
	out := sh(t, "dumpe2fs", dev)
	var blk, bs int64
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "Block size:") {
			fmt.Sscan(strings.TrimPrefix(l, "Block size:"), &bs)
		}
		if strings.HasPrefix(l, "Block bitmap at ") && blk == 0 {
			fmt.Sscan(strings.TrimPrefix(l, "Block bitmap at "), &blk)
		}
	}
	if blk == 0 || bs == 0 {
		t.Fatalf("cannot find group 0's block bitmap in dumpe2fs output:\n%s", out)
	}
	return blk * bs, make([]byte, bs)
}

// usedBytes is what the ext filesystem on dev allocates: its files and its
// metadata (inode tables, journal, bitmaps), which df leaves out and an
// image keeps.
func usedBytes(t *testing.T, dev string) int64 {
	t.Helper()
	count, free, bs := extBlocks(t, dev)
	return (count - free) * bs
}

// freeBytes is what the ext filesystem on dev has free.
func freeBytes(t *testing.T, dev string) int64 {
	t.Helper()
	_, free, bs := extBlocks(t, dev)
	return free * bs
}

// extBlocks reads the block count, free blocks and block size of the ext
// filesystem on dev from dumpe2fs -h.
func extBlocks(t *testing.T, dev string) (count, free, bs int64) {
	t.Helper()
	out := sh(t, "dumpe2fs", "-h", dev)
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Block count":
			fmt.Sscan(v, &count)
		case "Free blocks":
			fmt.Sscan(v, &free)
		case "Block size":
			fmt.Sscan(v, &bs)
		}
	}
	if count == 0 || bs == 0 {
		t.Fatalf("cannot read block counts from dumpe2fs -h %s:\n%s", dev, out)
	}
	return count, free, bs
}

// firstDiff describes the first difference of two sorted listings.
func firstDiff(want, got []string) string {
	for i := 0; i < len(want) || i < len(got); i++ {
		switch {
		case i >= len(got):
			return "missing " + want[i]
		case i >= len(want):
			return "extra " + got[i]
		case want[i] != got[i]:
			return fmt.Sprintf("want %q, got %q", want[i], got[i])
		}
	}
	return ""
}

// TestE2EWholeDiskToLargerDisk restores a whole-disk image onto a disk
// twice its size, without and with --grow: the GPT must be valid (sgdisk
// -v) and the partition intact; --grow must fill the disk with the
// partition and its filesystem.
func TestE2EWholeDiskToLargerDisk(t *testing.T) {
	testenv.Require(t, "resize2fs", "sgdisk")
	dir := t.TempDir()
	disk := usedDisk(t, dir, "64M")
	img := disk + ".asr"
	mustAsr(t, "imagescan", "--source", disk, "--output", img)
	poff, psize := firstPartition(t, disk)
	want := treeDigest(t, partLoop(t, disk, poff, psize, true), "ext4")
	size := 2 * fileSize(t, disk)
	for _, flags := range [][]string{nil, {"--grow"}} {
		grow := len(flags) > 0
		t.Run(fmt.Sprintf("grow=%v", grow), func(t *testing.T) {
			r, tfile, dev := restoreOver(t, img, size, 7, flags...)
			if !strings.Contains(r.stdout, "GPT backup moved to the end") {
				t.Errorf("restore did not say it moved the GPT backup; got:\n%s", r.stdout)
			}
			if out, err := exec.Command("sgdisk", "-v", dev).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
				t.Errorf("sgdisk -v on the larger disk: %v\n%s", err, out)
			}
			noff, nsize := firstPartition(t, tfile)
			switch {
			case noff != poff:
				t.Fatalf("partition 1 starts at %d, want %d", noff, poff)
			case !grow && nsize != psize:
				t.Errorf("partition 1 is %d bytes without --grow, want %d", nsize, psize)
			case grow && nsize < size-poff-(2<<20):
				t.Errorf("partition 1 is %d bytes with --grow, want it to reach the end of the %d-byte disk", nsize, size)
			}
			part := partLoop(t, tfile, noff, nsize, false)
			fsCheck(t, part, "the restored partition", "e2fsck", "-fn")
			if grow {
				if fs := usedBytes(t, part) + freeBytes(t, part); fs < nsize-(1<<20) {
					t.Errorf("filesystem is %d bytes after --grow, want it to fill the %d-byte partition", fs, nsize)
				}
			}
			if diff := firstDiff(want, treeDigest(t, part, "ext4")); diff != "" {
				t.Errorf("files on the larger disk differ from the source's: %s", diff)
			}
		})
	}
}

// TestE2EVolumeImage restores an image of one partition (a volume) into a
// larger partition, then with --grow, and refuses a smaller one without
// writing a byte to it.
func TestE2EVolumeImage(t *testing.T) {
	testenv.Require(t, "resize2fs")
	dir := t.TempDir()
	disk := usedDisk(t, dir, "64M")
	poff, psize := firstPartition(t, disk)
	vol := partLoop(t, disk, poff, psize, true)
	img := filepath.Join(dir, "vol.asr")
	r := mustAsr(t, "imagescan", "--source", vol, "--output", img)
	if !strings.Contains(r.stdout, "Mapped whole disk") || !strings.Contains(r.stdout, "by ext4 bitmap") {
		t.Errorf("imagescan of a partition did not map it by its ext4 bitmap; got:\n%s", r.stdout)
	}
	want := treeDigest(t, vol, "ext4")

	for _, flags := range [][]string{nil, {"--grow"}} {
		grow := len(flags) > 0
		t.Run(fmt.Sprintf("larger,grow=%v", grow), func(t *testing.T) {
			_, _, dev := restoreOver(t, img, psize+24<<20, 8, flags...)
			fsCheck(t, dev, "the restored volume", "e2fsck", "-fn")
			fs := usedBytes(t, dev) + freeBytes(t, dev)
			switch {
			case !grow && fs > psize:
				t.Errorf("filesystem is %d bytes without --grow, want at most the source's %d", fs, psize)
			case grow && fs < psize+23<<20:
				t.Errorf("filesystem is %d bytes after --grow, want it to fill the %d-byte target", fs, psize+24<<20)
			}
			if diff := firstDiff(want, treeDigest(t, dev, "ext4")); diff != "" {
				t.Errorf("files on the larger volume differ from the source's: %s", diff)
			}
		})
	}

	t.Run("smaller", func(t *testing.T) {
		tfile := filepath.Join(t.TempDir(), "small.img")
		fillRandom(t, tfile, psize-4<<20, 9)
		before := hashRange(t, tfile, 0, fileSize(t, tfile))
		dev := loop(t, tfile)
		r := asr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt")
		if r.err == nil || !strings.Contains(r.err.Error(), "too small") {
			t.Errorf("restore of a volume image into a smaller partition = %v, want a 'too small' error", r.err)
		}
		if got := hashRange(t, tfile, 0, fileSize(t, tfile)); got != before {
			t.Errorf("the smaller target changed though the restore was refused")
		}
	})
}

// TestE2ECloneSkipsFreeSpace clones a raw disk image onto a loop device: by
// default its free space is not copied; with --allblocks the target equals
// the source byte for byte.
func TestE2ECloneSkipsFreeSpace(t *testing.T) {
	dir := t.TempDir()
	disk := usedDisk(t, dir, "64M")
	poff, psize := firstPartition(t, disk)
	want := treeDigest(t, partLoop(t, disk, poff, psize, true), "ext4")
	n := fileSize(t, disk)
	for _, flags := range [][]string{nil, {"--allblocks"}} {
		all := len(flags) > 0
		t.Run(fmt.Sprintf("allblocks=%v", all), func(t *testing.T) {
			_, tfile, dev := restoreOver(t, disk, n, 11, flags...)
			if all {
				if got, want := hashRange(t, dev, 0, n), hashRange(t, disk, 0, n); got != want {
					t.Errorf("clone with --allblocks: target sha256 %s, want %s (the source)", got, want)
				}
				return
			}
			part := partLoop(t, tfile, poff, psize, false)
			fsCheck(t, part, "the clone", "e2fsck", "-fn")
			if diff := firstDiff(want, treeDigest(t, part, "ext4")); diff != "" {
				t.Errorf("cloned files differ from the source's: %s", diff)
			}
			checkFreeNotCopied(t, disk, tfile)
		})
	}
}
