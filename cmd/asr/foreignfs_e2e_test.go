package main

// End-to-end tests of NTFS, exFAT and HFS+ images: volumes made by the
// real tools, whose free space holds old data, are scanned, restored to
// loop devices and checked; damaged metadata falls back to a byte-exact
// copy with a warning.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// fuseTree mounts dev read-only with a FUSE mount helper and lists every
// entry under it with its type, size and content hash, sorted: the
// permissions are left out, since these drivers make them up from their
// mount options.
func fuseTree(t *testing.T, dev, mountCmd string) []string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command(mountCmd, "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", mountCmd, dev, err, out)
	}
	defer exec.Command("umount", mnt).Run()
	return listTree(t, dev, mnt, func(fi fs.FileInfo) fs.FileMode { return fi.Mode().Type() })
}

// fillFUSE mounts dev with mountCmd and writes, as a user's disk gets it:
// old random data that is then deleted (it stays in the free space), then
// the files that are kept, in directories.
func fillFUSE(t *testing.T, dev, mountCmd string, oldBytes int64) {
	t.Helper()
	mnt := t.TempDir()
	sh(t, mountCmd, dev, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	}()
	for i := range 4 {
		fillRandom(t, filepath.Join(mnt, fmt.Sprintf("old%d.bin", i)), oldBytes/4, uint64(50+i))
	}
	sh(t, "sync", "-f", mnt)
	for i := range 4 {
		if err := os.Remove(filepath.Join(mnt, fmt.Sprintf("old%d.bin", i))); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "sync", "-f", mnt)
	for d := range 3 {
		dir := filepath.Join(mnt, fmt.Sprintf("dir%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 8 {
			p := filepath.Join(dir, fmt.Sprintf("f%02d.bin", i))
			if i%2 == 0 {
				fillRandom(t, p, int64(30000+i*90000+d*7), uint64(100+10*d+i))
			} else if err := os.WriteFile(p, bytes.Repeat([]byte(fmt.Sprintf("line %d of a text file\n", i)), 2000+i*300), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	sh(t, "umount", mnt)
	mounted = false
}

// ntfsDisk makes a GPT disk of size with one NTFS partition filled by
// fillFUSE, and returns it, the partition's place and a loop device on it.
func ntfsDisk(t *testing.T, dir, size string, oldBytes int64) (disk string, poff, psize int64, dev string) {
	t.Helper()
	disk = filepath.Join(dir, "ntfs.img")
	sh(t, "truncate", "-s", size, disk)
	sh(t, "sgdisk", "-n1:2048:0", "-t1:0700", disk)
	poff, psize = firstPartition(t, disk)
	dev = partLoop(t, disk, poff, psize, false)
	sh(t, "mkntfs", "-F", "-q", "-f", "-p", "2048", "-L", "ASRNTFS", dev)
	fillFUSE(t, dev, "mount.ntfs-3g", oldBytes)
	return disk, poff, psize, dev
}

// TestE2ENTFSGrow restores an NTFS disk onto one twice its size with
// --grow: ntfsresize fills the enlarged partition, the volume checks clean
// and its files are intact.
func TestE2ENTFSGrow(t *testing.T) {
	testenv.Require(t, "losetup", "sgdisk", "mkntfs", "mount.ntfs-3g", "ntfsfix", "ntfsresize", "umount")
	dir := t.TempDir()
	disk, _, _, src := ntfsDisk(t, dir, "64M", 16<<20)
	img := disk + ".asr"
	mustAsr(t, "imagescan", "--source", disk, "--output", img)
	want := fuseTree(t, src, "mount.ntfs-3g")
	size := 2 * fileSize(t, disk)
	r, tfile, _ := restoreOver(t, img, size, 7, "--grow")
	if !strings.Contains(r.stdout, "with ntfsresize") {
		t.Errorf("restore --grow did not say ntfsresize grew the volume; got:\n%s", r.stdout)
	}
	noff, nsize := firstPartition(t, tfile)
	if nsize < size-noff-(2<<20) {
		t.Fatalf("partition 1 is %d bytes with --grow, want it to reach the end of the %d-byte disk", nsize, size)
	}
	part := partLoop(t, tfile, noff, nsize, false)
	fsCheck(t, part, "the grown partition", "ntfsfix", "-n")
	boot := make([]byte, 512)
	f, err := os.Open(part)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(boot, 0); err != nil {
		t.Fatal(err)
	}
	if vol := int64(binary.LittleEndian.Uint64(boot[0x28:])+1) * 512; vol < nsize-(1<<20) {
		t.Errorf("NTFS volume is %d bytes after --grow, want it to fill the %d-byte partition", vol, nsize)
	}
	if diff := firstDiff(want, fuseTree(t, part, "mount.ntfs-3g")); diff != "" {
		t.Errorf("files on the grown volume differ from the source's: %s", diff)
	}
}

// TestE2EExFATGrowRefused: no tool grows exFAT; --grow restores and
// verifies the volume, then says so and exits 1.
func TestE2EExFATGrowRefused(t *testing.T) {
	testenv.Require(t, "losetup", "mkfs.exfat", "fsck.exfat")
	dir := t.TempDir()
	vol := filepath.Join(dir, "exfat.img")
	sh(t, "truncate", "-s", "32M", vol)
	sh(t, "mkfs.exfat", vol)
	img := vol + ".asr"
	mustAsr(t, "imagescan", "--source", vol, "--output", img)
	tfile := filepath.Join(dir, "big.img")
	fillRandom(t, tfile, 64<<20, 3)
	dev := loop(t, tfile)
	r := asr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt", "--grow")
	if r.code != 1 || !strings.Contains(r.stderr, "exFAT, FAT and HFS+ have no tool to grow them") {
		t.Errorf("restore --grow of exFAT = exit %d, stderr %q; want 1 and a message that exFAT cannot be grown", r.code, r.stderr)
	}
	if out, err := exec.Command("fsck.exfat", "-n", dev).CombinedOutput(); err != nil {
		t.Errorf("fsck.exfat -n after the refused grow: %v\n%s", err, out)
	}
}

func TestE2ENTFSImageKeepsOnlyUsedData(t *testing.T) {
	testenv.Require(t, "losetup", "sgdisk", "mkntfs", "mount.ntfs-3g", "ntfsfix", "umount")
	dir := t.TempDir()
	disk, poff, psize, src := ntfsDisk(t, dir, "128M", 60<<20)

	scanned, img, tfile, _ := scanRestore(t, disk, 9)
	if !strings.Contains(scanned, "Mapped partition 1") || !strings.Contains(scanned, "by NTFS bitmap") {
		t.Errorf("imagescan did not say partition 1 was mapped by its NTFS bitmap; got:\n%s", scanned)
	}
	info := mustAsr(t, "info", "--source", img)
	if !regexp.MustCompile(`partition 1:\s+\S+ MiB at 1048576, NTFS bitmap: \S+ MiB used`).MatchString(info.stdout) {
		t.Errorf("asr info does not list partition 1 with its NTFS bitmap method; got:\n%s", info.stdout)
	}
	if st := fileSize(t, img); st > 20<<20 {
		t.Errorf("image is %d bytes, want under 20 MiB: the volume holds about 8 MiB of files and 60 MiB of deleted data", st)
	}
	dst := partLoop(t, tfile, poff, psize, false)
	fsCheck(t, dst, "the restored partition", "ntfsfix", "-n")
	checkSameFiles(t, fuseTree(t, src, "mount.ntfs-3g"), fuseTree(t, dst, "mount.ntfs-3g"), 25)
	checkFreeNotCopied(t, disk, tfile)
}

func TestE2EExFATImageKeepsOnlyUsedData(t *testing.T) {
	testenv.Require(t, "losetup", "mkfs.exfat", "mount.exfat-fuse", "fsck.exfat", "umount")
	dir := t.TempDir()
	vol := filepath.Join(dir, "exfat.img")
	sh(t, "truncate", "-s", "128M", vol)
	sh(t, "mkfs.exfat", "-L", "ASREXFAT", vol)
	src := loop(t, vol)
	fillFUSE(t, src, "mount.exfat-fuse", 60<<20)

	scanned, img, tfile, dev := scanRestore(t, vol, 4)
	if !strings.Contains(scanned, "Mapped whole disk") || !strings.Contains(scanned, "by exFAT bitmap") {
		t.Errorf("imagescan did not say the volume was mapped by its exFAT bitmap; got:\n%s", scanned)
	}
	info := mustAsr(t, "info", "--source", img)
	if !strings.Contains(info.stdout, "exFAT bitmap:") {
		t.Errorf("asr info does not list the volume with its exFAT bitmap method; got:\n%s", info.stdout)
	}
	if st := fileSize(t, img); st > 20<<20 {
		t.Errorf("image is %d bytes, want under 20 MiB: the volume holds about 8 MiB of files and 60 MiB of deleted data", st)
	}
	fsCheck(t, dev, "the restored volume", "fsck.exfat", "-n")
	checkSameFiles(t, fuseTree(t, src, "mount.exfat-fuse"), fuseTree(t, dev, "mount.exfat-fuse"), 25)
	checkFreeNotCopied(t, vol, tfile)
}

// TestE2EHFSPlusImageKeepsOnlyUsedData: Debian 12 has no mkfs.hfsplus or
// fsck.hfsplus, the host no hfsplus module, and libhfsp's tools cannot open
// a volume on this machine, so the volume is xorriso's (libisofs writes a
// real HFS+ beside its ISO 9660 tree), without a guest to change it (that
// is TestE2EHFSPlusKernelWrittenRestore). Its free space is made by hand: one file's blocks are cleared in the allocation
// file (and counted free in the header), leaving its data behind as old
// data. Every other file's data must come back where it was, byte for
// byte; no block of the freed file may.
func TestE2EHFSPlusImageKeepsOnlyUsedData(t *testing.T) {
	testenv.Require(t, "losetup", "xorriso")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	var files []string
	for i := range 10 {
		p := filepath.Join(tree, fmt.Sprintf("f%02d.bin", i))
		fillRandom(t, p, int64(200000+i*300000), uint64(200+i))
		files = append(files, p)
	}
	b := xorrisoHFS(t, tree)
	h := b[1024:]
	bs := int64(binary.BigEndian.Uint32(h[0x28:]))
	allocStart := int64(binary.BigEndian.Uint32(h[0x70+16:]))
	// Where each file's data lies: xorriso stores files contiguously.
	at := map[string]int64{}
	for _, p := range files {
		c, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, c[:4096])
		if i < 0 || int64(i)%bs != 0 || !bytes.Equal(b[i:i+len(c)], c) {
			t.Fatalf("%s's data is not stored whole at a block boundary of the volume", p)
		}
		at[p] = int64(i)
	}
	// Free the last file: clear its bits, count its blocks free.
	freed := files[len(files)-1]
	nblk := (fileSize(t, freed) + bs - 1) / bs
	for blk := at[freed] / bs; blk < at[freed]/bs+nblk; blk++ {
		b[allocStart*bs+blk/8] &^= 0x80 >> (blk % 8)
	}
	binary.BigEndian.PutUint32(h[0x30:], binary.BigEndian.Uint32(h[0x30:])+uint32(nblk))
	vol := filepath.Join(dir, "hfs.img")
	if err := os.WriteFile(vol, b, 0o644); err != nil {
		t.Fatal(err)
	}

	scanned, img, tfile, dev := scanRestore(t, vol, 6)
	if !strings.Contains(scanned, "by HFS+ allocation file") {
		t.Errorf("imagescan did not say the volume was mapped by its HFS+ allocation file; got:\n%s", scanned)
	}
	info := mustAsr(t, "info", "--source", img)
	if !strings.Contains(info.stdout, "HFS+ allocation file:") {
		t.Errorf("asr info does not list the volume with its HFS+ allocation file method; got:\n%s", info.stdout)
	}
	for _, p := range files[:len(files)-1] {
		n := fileSize(t, p)
		if got, want := hashRange(t, dev, at[p], n), hashRange(t, p, 0, n); got != want {
			t.Errorf("restored %s's data at %d has sha256 %s, want %s", filepath.Base(p), at[p], got, want)
		}
	}
	// The volume headers at both ends and the B-trees: all of the volume
	// but the freed file is used, so the restore equals the source there.
	n := fileSize(t, vol)
	if got, want := hashRange(t, dev, 0, at[freed]), hashRange(t, vol, 0, at[freed]); got != want {
		t.Errorf("restored volume before the freed file differs from the source")
	}
	end := at[freed] + nblk*bs
	if got, want := hashRange(t, dev, end, n-end), hashRange(t, vol, end, n-end); got != want {
		t.Errorf("restored volume after the freed file differs from the source")
	}
	checkFreeNotCopied(t, vol, tfile)
}

// xorrisoHFS makes an HFS+ volume of the files in tree with xorriso and
// returns it cut out of xorriso's hybrid image (an Apple partition map and
// ISO 9660 around it): the volume as it lies on a disk's HFS+ partition.
func xorrisoHFS(t *testing.T, tree string) []byte {
	t.Helper()
	iso := filepath.Join(t.TempDir(), "hfs.iso")
	sh(t, "xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-V", "ASRHFS", "-o", iso, tree)
	b, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off+1026 <= len(b); off += 512 {
		if string(b[off+1024:off+1026]) == "H+" {
			return b[off:]
		}
	}
	t.Fatalf("no HFS+ volume header in xorriso's image")
	return nil
}

// TestE2EForeignDamagedMetadataFallsBack: a zeroed allocation bitmap or a
// bad magic on NTFS, exFAT or HFS+ is copied whole with a warning (or, for
// a magic no longer recognised, as non-zero blocks): byte for byte.
func TestE2EForeignDamagedMetadataFallsBack(t *testing.T) {
	testenv.Require(t, "losetup", "mkntfs", "mkfs.exfat", "xorriso")
	dir := t.TempDir()
	mk := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		sh(t, "truncate", "-s", "48M", p)
		sh(t, args[0], append(args[1:], p)...)
		return p
	}
	ntfs := mk("ntfs.img", "mkntfs", "-F", "-q", "-f")
	hfs := filepath.Join(dir, "hfs.img")
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	fillRandom(t, filepath.Join(tree, "a.bin"), 3<<20, 8)
	if err := os.WriteFile(hfs, xorrisoHFS(t, tree), 0o644); err != nil {
		t.Fatal(err)
	}
	exfat := mk("exfat.img", "mkfs.exfat")
	// Old data in the free space, so a byte-exact restore means something.
	for _, p := range []string{ntfs, exfat} {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		junk := bytes.Repeat([]byte("old data "), 1<<20/9)
		if _, err := f.WriteAt(junk, 30<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for _, tt := range []struct {
		name, vol string
		off       func(b []byte) (int64, []byte)
		expect    string
	}{
		{"NTFS zeroed bitmap", ntfs, ntfsBitmapZeros, "Warning: whole disk"},
		{"NTFS bad magic", ntfs, func([]byte) (int64, []byte) { return 3, []byte("NTFX") }, "non-zero"},
		{"exFAT zeroed bitmap", exfat, exfatBitmapZeros, "Warning: whole disk"},
		{"exFAT bad magic", exfat, func([]byte) (int64, []byte) { return 3, []byte("EXFAX") }, "non-zero"},
		{"HFS+ zeroed allocation file", hfs, hfsBitmapZeros, "Warning: whole disk"},
		{"HFS+ bad magic", hfs, func([]byte) (int64, []byte) { return 1024, []byte("H-") }, "non-zero"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.img")
			sh(t, "cp", "--sparse=always", tt.vol, bad)
			b, err := os.ReadFile(bad)
			if err != nil {
				t.Fatal(err)
			}
			off, patch := tt.off(b)
			f, err := os.OpenFile(bad, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(patch, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			checkRestoredExact(t, bad, tt.expect)
		})
	}
}

// ntfsBitmapZeros finds $Bitmap's first run through $MFT record 6 (records
// 0 to 15 are contiguous on a fresh volume) and returns zeros for it.
func ntfsBitmapZeros(b []byte) (int64, []byte) {
	cs := int64(binary.LittleEndian.Uint16(b[0x0B:])) * int64(b[0x0D])
	mft := int64(binary.LittleEndian.Uint64(b[0x30:])) * cs
	rec := b[mft+6*1024 : mft+7*1024]
	for a := int(binary.LittleEndian.Uint16(rec[0x14:])); a+4 < len(rec); a += int(binary.LittleEndian.Uint32(rec[a+4:])) {
		if binary.LittleEndian.Uint32(rec[a:]) == 0x80 && rec[a+8] == 1 {
			mp := rec[a+int(binary.LittleEndian.Uint16(rec[a+0x20:])):]
			lenSz, offSz := int(mp[0]&0xF), int(mp[0]>>4)
			var n, lcn int64
			for i := lenSz; i >= 1; i-- {
				n = n<<8 | int64(mp[i])
			}
			for i := lenSz + offSz; i > lenSz; i-- {
				lcn = lcn<<8 | int64(mp[i])
			}
			return lcn * cs, make([]byte, n*cs)
		}
	}
	panic("no $Bitmap data attribute in MFT record 6")
}

// exfatBitmapZeros finds the allocation bitmap through the root
// directory's first cluster and returns zeros for it.
func exfatBitmapZeros(b []byte) (int64, []byte) {
	bps := int64(1) << b[0x6C]
	cs := bps << b[0x6D]
	heap := int64(binary.LittleEndian.Uint32(b[0x58:])) * bps
	root := heap + (int64(binary.LittleEndian.Uint32(b[0x60:]))-2)*cs
	for e := root; e < root+cs; e += 32 {
		if b[e] == 0x81 {
			c := int64(binary.LittleEndian.Uint32(b[e+20:]))
			n := int64(binary.LittleEndian.Uint64(b[e+24:]))
			return heap + (c-2)*cs, make([]byte, n)
		}
	}
	panic("no allocation bitmap entry in the exFAT root directory")
}

// hfsBitmapZeros returns zeros for the allocation file's first extent.
func hfsBitmapZeros(b []byte) (int64, []byte) {
	h := b[1024:]
	bs := int64(binary.BigEndian.Uint32(h[0x28:]))
	start := int64(binary.BigEndian.Uint32(h[0x70+16:]))
	n := int64(binary.BigEndian.Uint32(h[0x70+20:]))
	return start * bs, make([]byte, n*bs)
}
