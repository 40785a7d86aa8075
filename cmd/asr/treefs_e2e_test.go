package main

// End-to-end tests of XFS, btrfs and F2FS volumes: made by their real
// tools on a file full of old data, filled, imaged, restored onto a target
// full of other data, and checked with their own checkers. XFS is filled by
// mkfs.xfs's protofile and F2FS by sload.f2fs, which need no kernel driver
// (many kernels have neither); every file is found again by content, each
// 512-byte sector of a test file carrying its file and sector number, and
// btrfs and XFS (where the kernel has XFS) are also mounted read-only and
// their files compared.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

var (
	oldMark  = []byte("ASROLD\x00\x00") // old data in the free space
	fileMark = []byte("ASRFILE\x00")    // a sector of a test file
)

// writeOld fills p with size bytes of marked random sectors: what a used
// disk's free space holds.
func writeOld(t *testing.T, p string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(seed), 2})
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		rng.Read(buf)
		for s := 0; s < len(buf); s += 512 {
			copy(buf[s:], oldMark)
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
}

// testFile is the content of test file i: n sectors, each marked with i and
// its number.
func testFile(i, sectors int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 99))
	b := make([]byte, sectors*512)
	for s := range sectors {
		sec := b[s*512 : (s+1)*512]
		for k := 16; k < 512; k += 8 {
			binary.LittleEndian.PutUint64(sec[k:], rng.Uint64())
		}
		copy(sec, fileMark)
		binary.LittleEndian.PutUint32(sec[8:], uint32(i))
		binary.LittleEndian.PutUint32(sec[12:], uint32(s))
	}
	return b
}

// fileSectors is the size in sectors of test file i: 8 KiB to 2 MiB, so
// that no filesystem stores one inline with its metadata.
func fileSectors(i int) int { return 16 + (i*7919)%4080 }

// writeFiles writes test files from..to-1 into dir.
func writeFiles(t *testing.T, dir string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), testFile(i, fileSectors(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkFileSectors scans p for test file sectors: every sector of files
// [from, to) must be there with its content. It returns how many sectors
// it found.
func checkFileSectors(t *testing.T, p string, files []int) int {
	t.Helper()
	want := map[int]bool{}
	for _, i := range files {
		want[i] = true
	}
	found := map[[2]uint32]bool{}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	bad := 0
	cache := map[int][]byte{}
	for off := int64(0); ; off += int64(len(buf)) {
		n, err := io.ReadFull(f, buf)
		for s := 0; s+512 <= n; s += 512 {
			sec := buf[s : s+512]
			if !bytes.HasPrefix(sec, fileMark) {
				continue
			}
			i, k := int(binary.LittleEndian.Uint32(sec[8:])), int(binary.LittleEndian.Uint32(sec[12:]))
			if !want[i] || k >= fileSectors(i) {
				continue
			}
			if cache[i] == nil {
				cache[i] = testFile(i, fileSectors(i))
			}
			if !bytes.Equal(sec, cache[i][k*512:(k+1)*512]) {
				if bad++; bad < 5 {
					t.Errorf("sector %d of file %d at byte %d of %s differs from what was written", k, i, off+int64(s), p)
				}
				continue
			}
			found[[2]uint32{uint32(i), uint32(k)}] = true
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for _, i := range files {
		for k := range fileSectors(i) {
			total++
			if !found[[2]uint32{uint32(i), uint32(k)}] {
				if bad++; bad < 10 {
					t.Errorf("sector %d of file %d is not on %s", k, i, p)
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d sectors of the files missing or wrong on %s", bad, p)
	}
	return total
}

// treeFS is how a test makes and checks one filesystem.
type treeFS struct {
	name   string
	size   int64
	tools  []string
	method string
	// make puts the filesystem on vol (a file holding old data) with the
	// files it names, and returns which files it kept.
	make  func(t *testing.T, vol, dir string) []int
	check []string // the checker, its arguments; the device is appended
	// damage breaks its metadata in two ways, for the fallback test.
	damage []damage
}

// damage breaks a volume's metadata; note is what the warning must say.
// An empty note is a superblock whose magic is broken: the volume is no
// longer recognised at all, so there is no warning, and its every non-zero
// chunk is kept.
type damage struct {
	name, note string
	fn         func(t *testing.T, vol string)
}

// badMagic returns a damage that overwrites the superblock magic at off.
func badMagic(off int64, b string) damage {
	return damage{name: "bad superblock magic", fn: func(t *testing.T, vol string) { writeAt(t, vol, off, []byte(b)) }}
}

var treeFilesystems = []treeFS{
	{
		name: "XFS", size: 320 << 20, method: "XFS free-space btree",
		tools: []string{"mkfs.xfs", "xfs_repair"},
		make: func(t *testing.T, vol, dir string) []int {
			// mkfs.xfs fills the filesystem from a protofile: the kernel
			// here has no XFS driver.
			writeFiles(t, dir, 0, 40)
			var proto strings.Builder
			proto.WriteString("/dev/null\n0 0\nd--755 0 0\n")
			var kept []int
			for i := range 40 {
				fmt.Fprintf(&proto, "f%03d ---644 0 0 %s\n", i, filepath.Join(dir, fmt.Sprintf("f%03d", i)))
				kept = append(kept, i)
			}
			proto.WriteString("$\n")
			pf := filepath.Join(dir, "proto")
			if err := os.WriteFile(pf, []byte(proto.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			sh(t, "mkfs.xfs", "-q", "-f", "-K", "-p", pf, vol)
			return kept
		},
		check: []string{"xfs_repair", "-n", "-f"},
		damage: []damage{
			{"zeroed free-space btree root", "has no AB3B magic", func(t *testing.T, vol string) {
				sb := readAt(t, vol, 0, 512)
				bs, sect := int64(binary.BigEndian.Uint32(sb[4:])), int64(binary.BigEndian.Uint16(sb[0x66:]))
				agf := readAt(t, vol, sect, 512)
				root := int64(binary.BigEndian.Uint32(agf[0x10:]))
				writeAt(t, vol, root*bs, make([]byte, bs))
			}},
			{"bad AGF magic", "has no XAGF magic", func(t *testing.T, vol string) {
				sect := int64(binary.BigEndian.Uint16(readAt(t, vol, 0, 512)[0x66:]))
				writeAt(t, vol, sect, []byte("XAGX"))
			}},
			badMagic(0, "XFSX"),
		},
	},
	{
		name: "btrfs", size: 256 << 20, method: "btrfs extent tree",
		tools: []string{"mkfs.btrfs", "btrfs", "mount", "umount"},
		make: func(t *testing.T, vol, dir string) []int {
			sh(t, "mkfs.btrfs", "-q", "-f", "-K", vol)
			dev := loop(t, vol)
			mnt := t.TempDir()
			sh(t, "mount", "-t", "btrfs", dev, mnt)
			defer exec.Command("umount", mnt).Run()
			// Old data of the filesystem's own: files written, synced
			// and deleted, then the files that stay.
			writeFiles(t, mnt, 100, 130)
			sh(t, "sync", "-f", mnt)
			for i := 100; i < 130; i++ {
				if err := os.Remove(filepath.Join(mnt, fmt.Sprintf("f%03d", i))); err != nil {
					t.Fatal(err)
				}
			}
			sh(t, "sync", "-f", mnt)
			writeFiles(t, mnt, 0, 40)
			sh(t, "umount", mnt)
			var kept []int
			for i := range 40 {
				kept = append(kept, i)
			}
			return kept
		},
		check: []string{"btrfs", "check", "--readonly"},
		damage: []damage{
			{"zeroed extent tree", "extent tree block at logical", func(t *testing.T, vol string) {
				for _, off := range btrfsNewestBlocks(t, vol, 2) {
					writeAt(t, vol, off, make([]byte, 4096))
				}
			}},
			{"chunk tree block of another filesystem", "chunk tree block at logical", func(t *testing.T, vol string) {
				for _, off := range btrfsNewestBlocks(t, vol, 3) {
					writeAt(t, vol, off+0x20, []byte("not this fsid!!!"))
				}
			}},
			badMagic(0x10040, "_BHRfS_X"),
		},
	},
	{
		name: "F2FS", size: 256 << 20, method: "F2FS SIT",
		tools: []string{"mkfs.f2fs", "sload.f2fs", "fsck.f2fs"},
		make: func(t *testing.T, vol, dir string) []int {
			// sload.f2fs fills it: the kernel here has no F2FS driver.
			src := filepath.Join(dir, "src")
			if err := os.Mkdir(src, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFiles(t, src, 0, 40)
			sh(t, "mkfs.f2fs", "-q", "-f", "-t", "0", vol)
			sh(t, "sload.f2fs", "-f", src, vol)
			var kept []int
			for i := range 40 {
				kept = append(kept, i)
			}
			return kept
		},
		check: []string{"fsck.f2fs", "--dry-run"},
		damage: []damage{
			{"zeroed SIT", "the SIT marks 0 blocks valid", func(t *testing.T, vol string) {
				sb := readAt(t, vol, 1024, 512)
				sit, n := int64(binary.LittleEndian.Uint32(sb[0x50:])), int64(binary.LittleEndian.Uint32(sb[0x38:]))
				writeAt(t, vol, sit*4096, make([]byte, n*512*4096))
			}},
			{"bad checkpoint", "neither checkpoint checks out", func(t *testing.T, vol string) {
				sb := readAt(t, vol, 1024, 512)
				cp := int64(binary.LittleEndian.Uint32(sb[0x4C:]))
				writeAt(t, vol, cp*4096+0x20, []byte{0xff, 0xff})
				writeAt(t, vol, (cp+512)*4096+0x20, []byte{0xff, 0xff})
			}},
			// The backup superblock (block 1) is left alone: asr reads only
			// the first, and the kernel would mount the volume by the
			// backup, so every non-zero byte must come back.
			badMagic(1024, "\x11\x20\xf5\xf2"),
		},
	},
}

func readAt(t *testing.T, p string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAt(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// btrfsNewestBlocks returns the device offsets of the newest tree blocks
// (highest generation) owned by tree owner: the live root and its DUP copy.
func btrfsNewestBlocks(t *testing.T, vol string, owner uint64) []int64 {
	t.Helper()
	b, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	fsid := b[0x10020:0x10030]
	var offs []int64
	var best uint64
	for off := 1 << 20; off+4096 <= len(b); off += 4096 {
		h := b[off:]
		if !bytes.Equal(h[0x20:0x30], fsid) || binary.LittleEndian.Uint64(h[0x58:]) != owner {
			continue
		}
		switch g := binary.LittleEndian.Uint64(h[0x50:]); {
		case g > best:
			best, offs = g, []int64{int64(off)}
		case g == best:
			offs = append(offs, int64(off))
		}
	}
	if len(offs) == 0 {
		t.Fatalf("no tree block of tree %d in %s", owner, vol)
	}
	return offs
}

func TestE2ETreeFilesystemsKeepOnlyUsedData(t *testing.T) {
	for _, fs := range treeFilesystems {
		t.Run(fs.name, func(t *testing.T) {
			testenv.Require(t, append([]string{"losetup"}, append(fs.tools, fs.check[0])...)...)
			dir := t.TempDir()
			vol := filepath.Join(dir, "vol.img")
			writeOld(t, vol, fs.size, 1)
			kept := fs.make(t, vol, dir)
			if out, err := exec.Command(fs.check[0], append(fs.check[1:], vol)...).CombinedOutput(); err != nil {
				t.Fatalf("%s on the source: %v\n%s", fs.check[0], err, out)
			}

			scanned, img, tfile, dev := scanRestore(t, vol, 9)
			if !strings.Contains(scanned, "by "+fs.method) || strings.Contains(scanned, "Warning") {
				t.Errorf("imagescan did not map the volume by its %s; got:\n%s", fs.method, scanned)
			}
			info := mustAsr(t, "info", "--source", img)
			if !regexp.MustCompile(`whole disk:\s+\S+ MiB at 0, ` + regexp.QuoteMeta(fs.method) + `: \S+ MiB used`).MatchString(info.stdout) {
				t.Errorf("asr info does not list the volume with its %s method; got:\n%s", fs.method, info.stdout)
			}
			var fileBytes int64
			for _, i := range kept {
				fileBytes += int64(fileSectors(i)) * 512
			}
			// The files are random: the image holds them, the metadata and
			// little else. Old data in the free space would double it.
			t.Logf("%s: %d bytes of files, image %d bytes", fs.name, fileBytes, fileSize(t, img))
			if st := fileSize(t, img); st > fileBytes+fileBytes/4+(4<<20) {
				t.Errorf("image is %d bytes for %d bytes of files: free space was kept", st, fileBytes)
			}
			// fsck.f2fs marks each failed check [Fail], and its exit status
			// says so too; both are held to it.
			if out, err := exec.Command(fs.check[0], append(fs.check[1:], dev)...).CombinedOutput(); err != nil || bytes.Contains(out, []byte("[Fail]")) {
				t.Fatalf("%s on the restored volume: %v\n%s", fs.check[0], err, out)
			}
			if n := checkFileSectors(t, tfile, kept); n == 0 {
				t.Fatalf("no file sectors to check")
			}
			if fs.name == "F2FS" {
				// No F2FS driver here: every file is read back with
				// dump.f2fs, from the source too, so that a helper that
				// finds nothing cannot pass.
				want := expectedFiles(kept)
				if diff := firstDiff(want, f2fsFiles(t, vol)); diff != "" {
					t.Fatalf("dump.f2fs does not read the source's files back as written: %s", diff)
				}
				if diff := firstDiff(want, f2fsFiles(t, tfile)); diff != "" {
					t.Errorf("restored files differ from those written: %s", diff)
				}
			}
			if fstype := strings.ToLower(fs.name); fstype == "btrfs" || fstype == "xfs" && kernelHas(fstype) {
				if diff := firstDiff(mountedFiles(t, vol, fstype), mountedFiles(t, tfile, fstype)); diff != "" {
					t.Errorf("restored files differ from the source's: %s", diff)
				}
			}
			checkFreeNotCopied(t, vol, tfile)
		})
	}
}

// expectedFiles lists test files as f2fsFiles lists a volume's: name and
// SHA-256 of the content, sorted.
func expectedFiles(files []int) []string {
	var out []string
	for _, i := range files {
		out = append(out, fmt.Sprintf("f%03d %x", i, sha256.Sum256(testFile(i, fileSectors(i)))))
	}
	sort.Strings(out)
	return out
}

// f2fsFiles lists the regular files of an F2FS volume with their SHA-256,
// read with f2fs-tools' dump.f2fs, which needs no kernel driver: the NAT
// dump (-n) names every node, and each inode (nid == ino) is dumped with
// -i, which writes a regular file's data under its name into lost_found
// (directories write nothing). The test volumes are flat, so names do not
// collide.
func f2fsFiles(t *testing.T, vol string) []string {
	t.Helper()
	dir := t.TempDir()
	run := func(stdin string, args ...string) {
		cmd := exec.Command("dump.f2fs", append(args, vol)...)
		cmd.Dir, cmd.Stdin = dir, strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dump.f2fs %s %s: %v\n%s", strings.Join(args, " "), vol, err, out)
		}
	}
	run("", "-n", "0~-1")
	nat, err := os.ReadFile(filepath.Join(dir, "dump_nat"))
	if err != nil {
		t.Fatal(err)
	}
	inodes := 0
	for _, m := range regexp.MustCompile(`(?m)^nid:\s*(\d+)\s+ino:\s*(\d+)\s+offset:\s*\d+\s+blkaddr:\s*(\d+)`).FindAllStringSubmatch(string(nat), -1) {
		if m[1] != m[2] || m[3] == "0" {
			continue // a node block of a file, or a free nid
		}
		ino, _ := strconv.ParseUint(m[1], 10, 32)
		run("y\n", "-i", fmt.Sprintf("0x%x", ino))
		inodes++
	}
	ents, err := os.ReadDir(filepath.Join(dir, "lost_found"))
	if err != nil {
		t.Fatalf("dump.f2fs dumped no file of %s (%d inodes): %v", vol, inodes, err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "lost_found", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %x", e.Name(), sha256.Sum256(b)))
	}
	sort.Strings(out)
	return out
}

// kernelHas reports whether this kernel mounts fstype.
func kernelHas(fstype string) bool {
	b, _ := os.ReadFile("/proc/filesystems")
	return strings.Contains(string(b), "\t"+fstype+"\n")
}

// mountedFiles mounts a volume read-only and lists its files with their
// SHA-256.
func mountedFiles(t *testing.T, vol, fstype string) []string {
	t.Helper()
	dev := loop(t, vol, "-r")
	mnt := t.TempDir()
	opts := "ro"
	if fstype == "xfs" {
		opts = "ro,norecovery"
	}
	sh(t, "mount", "-t", fstype, "-o", opts, dev, mnt)
	defer exec.Command("umount", mnt).Run()
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(mnt, e.Name())
		out = append(out, e.Name()+" "+hashRange(t, p, 0, fileSize(t, p)))
	}
	if len(out) < 40 {
		t.Fatalf("%s holds %d files, want 40", vol, len(out))
	}
	return out
}

// TestE2ETreeFilesystemsDamaged: XFS, btrfs and F2FS volumes whose metadata
// is damaged are imaged with a warning naming the area, and restored byte
// for byte.
func TestE2ETreeFilesystemsDamaged(t *testing.T) {
	for _, fs := range treeFilesystems {
		t.Run(fs.name, func(t *testing.T) {
			testenv.Require(t, append([]string{"losetup"}, fs.tools...)...)
			dir := t.TempDir()
			// No old data: the damaged volume is kept whole, and the test
			// is about the warning and the bytes, not about free space.
			vol := filepath.Join(dir, "vol.img")
			sh(t, "truncate", "-s", fmt.Sprint(fs.size), vol)
			fs.make(t, vol, dir)
			for _, d := range fs.damage {
				t.Run(d.name, func(t *testing.T) {
					bad := filepath.Join(t.TempDir(), "bad.img")
					sh(t, "cp", "--sparse=always", vol, bad)
					d.fn(t, bad)
					if d.note == "" { // no longer recognised: its non-zero chunks kept
						if scanned := checkRestoredExact(t, bad, "whole disk", "non-zero"); strings.Contains(scanned, "by "+fs.method) {
							t.Errorf("imagescan mapped the %s with the broken magic by its %s; got:\n%s", fs.name, fs.method, scanned)
						}
					} else {
						checkRestoredExact(t, bad, "Warning: whole disk: its filesystem metadata could not be used ("+fs.name, d.note)
					}
				})
			}
		})
	}
}

// fsSize reads the size an XFS, btrfs or F2FS superblock gives its
// filesystem.
func fsSize(t *testing.T, name, p string) int64 {
	t.Helper()
	switch name {
	case "XFS":
		sb := readAt(t, p, 0, 512)
		return int64(binary.BigEndian.Uint64(sb[8:])) * int64(binary.BigEndian.Uint32(sb[4:]))
	case "btrfs":
		return int64(binary.LittleEndian.Uint64(readAt(t, p, 0x10000+0xC9+8, 8)))
	}
	return int64(binary.LittleEndian.Uint64(readAt(t, p, 1024+0x24, 8))) * 4096
}

// TestE2ETreeFilesystemsGrow restores an image of an XFS, btrfs and F2FS
// volume onto a larger one with --grow: the filesystem must fill it, pass
// its checker and keep its files.
func TestE2ETreeFilesystemsGrow(t *testing.T) {
	for _, fs := range treeFilesystems {
		t.Run(fs.name, func(t *testing.T) {
			testenv.Require(t, append([]string{"losetup", "mount", "resize2fs", "xfs_growfs", "resize.f2fs"}, append(fs.tools, fs.check[0])...)...)
			dir := t.TempDir()
			vol := filepath.Join(dir, "vol.img")
			sh(t, "truncate", "-s", fmt.Sprint(fs.size), vol)
			kept := fs.make(t, vol, dir)
			img := filepath.Join(dir, "vol.asr")
			mustAsr(t, "imagescan", "--source", vol, "--output", img)
			const more = 128 << 20
			tfile := filepath.Join(dir, "target.img")
			fillRandom(t, tfile, fs.size+more, 3) // what the filesystem does not call used stays random
			dev := loop(t, tfile)
			r := mustAsr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt", "--grow")
			if !strings.Contains(r.stdout, "grown") {
				t.Errorf("restore --grow did not say it grew the %s; got:\n%s", fs.name, r.stdout)
			}
			if got := fsSize(t, fs.name, tfile); got < fs.size+more-(16<<20) {
				t.Errorf("%s is %d bytes after --grow, want it to fill the %d-byte target", fs.name, got, fs.size+more)
			}
			if out, err := exec.Command(fs.check[0], append(fs.check[1:], dev)...).CombinedOutput(); err != nil {
				t.Fatalf("%s on the grown volume: %v\n%s", fs.check[0], err, out)
			}
			checkFileSectors(t, tfile, kept)
		})
	}
}
