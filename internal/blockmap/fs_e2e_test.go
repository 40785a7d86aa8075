package blockmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// These tests make filesystems with the real tools, write known files to
// them through the kernel, delete some, and check the map against the image:
// every sector of a kept file is used, every sector of a deleted one is not,
// and the used total agrees with df.

// Every 512-byte sector of a test file starts with a marker that says
// whether the file was kept or deleted, so the test can find file data in an
// image without knowing the filesystem.
var (
	keepMark = []byte("ASRKEEP\x00")
	delMark  = []byte("ASRDELE\x00")
)

// fsImage makes a sparse file of size bytes under t.TempDir() and runs mkfs
// (a command and its arguments; the image path is appended) on it.
func fsImage(t *testing.T, size int64, mkfs ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, mkfs[0], append(mkfs[1:], p)...)
	return p
}

// population is what populate wrote: the sectors it expects in the image,
// and the free bytes the filesystem reports afterwards.
type population struct {
	keptSectors int
	free        int64
}

// testFiles makes the contents of 30 files, every third one to be deleted.
func testFiles(seed uint64) (files [][]byte, keptSectors int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range 30 {
		sectors := 1 + rng.IntN(2048) // up to 1 MiB
		if i%10 == 9 {
			sectors = 8192 + rng.IntN(8192) // a few of 4 to 8 MiB: several groups
		}
		mark := keepMark
		if deleted(i) {
			mark = delMark
		} else {
			keptSectors += sectors
		}
		b := make([]byte, sectors*512)
		for s := range sectors {
			sec := b[s*512 : (s+1)*512]
			copy(sec, mark)
			binary.LittleEndian.PutUint32(sec[8:], uint32(i))
			binary.LittleEndian.PutUint32(sec[12:], uint32(s))
			for k := 16; k < 512; k += 8 {
				binary.LittleEndian.PutUint64(sec[k:], rng.Uint64())
			}
		}
		files = append(files, b)
	}
	return files, keptSectors
}

func deleted(i int) bool { return i%3 == 2 }

// populate writes the test files to the filesystem in img, syncs, deletes
// every third one and syncs again: through a loop mount with the given
// options, or with mtools for FAT (this kernel may have no vfat driver).
func populate(t *testing.T, img string, mtools bool, opts string, seed uint64) population {
	t.Helper()
	files, kept := testFiles(seed)
	pop := population{keptSectors: kept}
	if mtools {
		dir := t.TempDir()
		for i, b := range files {
			src := filepath.Join(dir, fmt.Sprintf("f%02d", i))
			if err := os.WriteFile(src, b, 0o644); err != nil {
				t.Fatal(err)
			}
			testenv.Run(t, "mcopy", "-i", img, src, "::/"+filepath.Base(src))
		}
		for i := range files {
			if deleted(i) {
				testenv.Run(t, "mdel", "-i", img, fmt.Sprintf("::/f%02d", i))
			}
		}
		// mdir ends with "  66 859 008 bytes free".
		out := strings.Split(testenv.Run(t, "mdir", "-i", img, "::"), "\n")
		last := strings.TrimSuffix(strings.TrimSpace(out[len(out)-1]), " bytes free")
		free, err := strconv.ParseInt(strings.ReplaceAll(last, " ", ""), 10, 64)
		if err != nil {
			t.Fatalf("mdir's last line %q has no free bytes: %v", out[len(out)-1], err)
		}
		pop.free = free
		return pop
	}

	mount := []string{"mount"}
	if opts != "" {
		mount = append(mount, "-o", opts)
	}
	pop.free = populateMount(t, img, files, mount...)
	return pop
}

// populateMount attaches img to a loop device, mounts it with mount (a
// command and its options, to which the device and mount point are added:
// mount itself or a FUSE mount helper), writes files, syncs, deletes every
// third one, syncs again, unmounts, and returns what df then called free.
func populateMount(t *testing.T, img string, files [][]byte, mount ...string) int64 {
	t.Helper()
	dev := testenv.Loop(t, img)
	mnt := t.TempDir()
	testenv.Run(t, mount[0], append(mount[1:], dev, mnt)...)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	})
	for i, b := range files {
		if err := os.WriteFile(filepath.Join(mnt, fmt.Sprintf("f%02d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Run(t, "sync", "-f", mnt)
	for i := range files {
		if deleted(i) {
			if err := os.Remove(filepath.Join(mnt, fmt.Sprintf("f%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	testenv.Run(t, "sync", "-f", mnt)
	// df's size leaves out the filesystem's own overhead; size - used is
	// its free blocks.
	out := strings.Fields(testenv.Run(t, "df", "-B1", "--output=size,used", mnt))
	if len(out) != 4 {
		t.Fatalf("df output %q, want a header and two figures", out)
	}
	size, err1 := strconv.ParseInt(out[2], 10, 64)
	used, err2 := strconv.ParseInt(out[3], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("df output %q: want two numbers", out)
	}
	// A FUSE filesystem's unmount returns once the daemon has written
	// everything: the image is whole after it, as a kernel one's is.
	testenv.Run(t, "umount", mnt)
	mounted = false
	return size - used
}

// buildFile maps an image file.
func buildFile(t *testing.T, p string) *Map {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Build(f, fi.Size())
	if err != nil {
		t.Fatalf("Build(%s) = %v", p, err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Build(%s) made an invalid map: %v", p, err)
	}
	return m
}

// allUsed reports whether every byte of [off, off+n) is used.
func allUsed(m *Map, off, n int64) bool {
	for _, r := range m.Regions {
		lo, hi := max(off, r.Off), min(off+n, r.End())
		if lo >= hi {
			continue
		}
		ok := false
		for _, e := range r.Used {
			if e.Off <= lo && hi <= e.End() {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// checkMarks scans the image for marked sectors: every kept one must be
// used, and none deleted one may be unless deletedMayBeUsed (a map that fell
// back to non-zero keeps them). It returns the number of kept sectors found.
func checkMarks(t *testing.T, m *Map, p string, deletedMayBeUsed bool) int {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	kept, deleted, deletedUsed, bad := 0, 0, 0, 0
	for off := int64(0); ; off += int64(len(buf)) {
		n, err := io.ReadFull(f, buf)
		for s := 0; s+512 <= n; s += 512 {
			sec := buf[s : s+512]
			at := off + int64(s)
			switch {
			case bytes.HasPrefix(sec, keepMark):
				kept++
				if !allUsed(m, at, 512) {
					if bad++; bad <= 5 {
						t.Errorf("sector at %d holds kept file %d's sector %d, but the map has it free",
							at, binary.LittleEndian.Uint32(sec[8:]), binary.LittleEndian.Uint32(sec[12:]))
					}
				}
			case bytes.HasPrefix(sec, delMark):
				deleted++
				if m.Used(at, 512) {
					deletedUsed++
				}
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if bad > 5 {
		t.Errorf("... %d kept sectors free in all", bad)
	}
	if !deletedMayBeUsed && deletedUsed > 0 {
		t.Errorf("%d of %d sectors of deleted files are used, want none", deletedUsed, deleted)
	}
	if deleted == 0 {
		t.Errorf("no sectors of deleted files in the image: the test checks nothing about free space")
	}
	return kept
}

// fsRegion returns the one region of m that is not NonZero.
func fsRegion(t *testing.T, m *Map) Region {
	t.Helper()
	var found []Region
	for _, r := range m.Regions {
		if !r.NonZero {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("map regions = %s, want one mapped by a filesystem", describe(m))
	}
	return found[0]
}

// describe lists a map's regions for failure messages.
func describe(m *Map) string {
	var b strings.Builder
	for _, r := range m.Regions {
		fmt.Fprintf(&b, "\n  [%d, +%d) %s used %d", r.Off, r.Len, r.Method, r.UsedBytes())
		if r.Note != "" {
			fmt.Fprintf(&b, " (%s)", r.Note)
		}
	}
	return b.String()
}

// checkFSMap checks m, the map of the image p that pop was written to: one
// region, mapped by method from the start; every kept file's sector used and
// no deleted one's; and as many bytes used as the filesystem does not call
// free (its own metadata included), less at most 64 KiB and slack. It
// returns the region.
func checkFSMap(t *testing.T, name string, m *Map, p, method string, pop population, slack int64) Region {
	t.Helper()
	r := fsRegion(t, m)
	if r.Method != method || r.Off != 0 {
		t.Errorf("Build(%s) region = %s at %d, want %s at 0%s", name, r.Method, r.Off, method, describe(m))
	}
	if kept := checkMarks(t, m, p, false); kept != pop.keptSectors {
		t.Errorf("found %d sectors of kept files in the image, want %d", kept, pop.keptSectors)
	}
	// FAT's sectors after the last whole cluster are neither used nor
	// free: hence the 64 KiB.
	got, want := r.UsedBytes(), r.Len-pop.free
	t.Logf("%s: map used %d, filesystem %d less %d free = %d (%+d)", name, got, r.Len, pop.free, want, got-want)
	if d := got - want; d < -slack-64<<10 || d > 0 {
		t.Errorf("map used %d bytes, filesystem %d less %d free = %d: off by %d", got, r.Len, pop.free, want, d)
	}
	if got > r.Len/2 {
		t.Errorf("map used %d of %d bytes: most of the free space is marked used", got, r.Len)
	}
	return r
}

func TestFilesystems(t *testing.T) {
	for _, tt := range []struct {
		name   string
		size   int64
		mkfs   []string
		mount  string
		method string
		// fallback, when set, is what the Note of the NonZero region
		// must say: the filesystem is one Build does not map.
		fallback string
	}{
		{name: "ext4 4k flex_bg", size: 512 << 20, mkfs: []string{"mkfs.ext4", "-F", "-q", "-b", "4096"}, mount: "noinit_itable", method: MethodExt4},
		{name: "ext4 4k no flex_bg 32-bit", size: 256 << 20, mkfs: []string{"mkfs.ext4", "-F", "-q", "-b", "4096", "-g", "8192", "-O", "^flex_bg,^64bit"}, mount: "noinit_itable", method: MethodExt4},
		{name: "ext4 1k meta_bg", size: 256 << 20, mkfs: []string{"mkfs.ext4", "-F", "-q", "-b", "1024", "-O", "meta_bg,^resize_inode"}, mount: "noinit_itable", method: MethodExt4},
		{name: "ext4 sparse_super2", size: 256 << 20, mkfs: []string{"mkfs.ext4", "-F", "-q", "-b", "4096", "-g", "8192", "-O", "sparse_super2"}, mount: "noinit_itable", method: MethodExt4},
		{name: "ext4 no group checksums", size: 256 << 20, mkfs: []string{"mkfs.ext4", "-F", "-q", "-b", "4096", "-g", "8192", "-O", "^metadata_csum,^uninit_bg"}, mount: "noinit_itable", method: MethodExt4},
		{name: "ext3 1k", size: 64 << 20, mkfs: []string{"mkfs.ext3", "-F", "-q", "-b", "1024"}, method: MethodExt3},
		{name: "ext2 1k", size: 64 << 20, mkfs: []string{"mkfs.ext2", "-F", "-q", "-b", "1024"}, method: MethodExt2},
		{name: "ext4 bigalloc", size: 256 << 20, mkfs: []string{"mkfs.ext4", "-F", "-q", "-b", "4096", "-O", "bigalloc", "-C", "16384"}, mount: "noinit_itable", fallback: "bigalloc"},
		{name: "FAT12", size: 64 << 20, mkfs: []string{"mkfs.vfat", "-F", "12", "-s", "64"}, method: MethodFAT12},
		{name: "FAT16", size: 64 << 20, mkfs: []string{"mkfs.vfat", "-F", "16"}, method: MethodFAT16},
		{name: "FAT32", size: 64 << 20, mkfs: []string{"mkfs.vfat", "-F", "32"}, method: MethodFAT32},
		{name: "FAT32 4k clusters", size: 300 << 20, mkfs: []string{"mkfs.vfat", "-F", "32", "-s", "8"}, method: MethodFAT32},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// FAT is written with mtools: the kernel may have no vfat.
			mtools := strings.HasPrefix(tt.name, "FAT")
			if mtools {
				testenv.Require(t, tt.mkfs[0], "mcopy", "mdel", "mdir")
			} else {
				testenv.Require(t, tt.mkfs[0], "dumpe2fs", "losetup", "mount", "umount", "df", "sync")
			}
			p := fsImage(t, tt.size, tt.mkfs...)
			if tt.name == "ext4 4k flex_bg" {
				// The case is there for groups whose bitmap was never
				// written: make sure mke2fs still leaves some.
				if out := testenv.Run(t, "dumpe2fs", p); !strings.Contains(out, "BLOCK_UNINIT") {
					t.Fatalf("dumpe2fs shows no BLOCK_UNINIT group: the test does not cover them")
				}
			}
			pop := populate(t, p, mtools, tt.mount, uint64(len(tt.name)))
			m := buildFile(t, p)
			if tt.fallback != "" {
				if len(m.Regions) != 1 || !m.Regions[0].NonZero || !strings.Contains(m.Regions[0].Note, tt.fallback) {
					t.Fatalf("Build(%s) regions = %s, want one non-zero region noting %q", tt.name, describe(m), tt.fallback)
				}
				checkMarks(t, m, p, true)
				return
			}
			checkFSMap(t, tt.name, m, p, tt.method, pop, 0)
		})
	}
}

// copyInto writes the file src into dst at off.
func copyInto(t *testing.T, dst string, off int64, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestGPTDisk maps a whole disk made by sgdisk:
//
//	LBA 0-33           protective MBR, GPT header and entries
//	1 MiB   +64 MiB    1: ext4 with files, some deleted
//	65 MiB  +4 MiB     a gap holding random bytes
//	69 MiB  +48 MiB    2: FAT16 with files, some deleted
//	117 MiB +8 MiB     3: swap
//	125 MiB +4 MiB     4: random bytes (an unknown format)
//	129 MiB to 160 MiB free, then the backup entries and header
func TestGPTDisk(t *testing.T) {
	testenv.Require(t, "sgdisk", "mkfs.ext4", "mkfs.vfat", "mkswap", "losetup", "mount", "umount", "df", "sync", "mcopy", "mdel", "mdir")
	const mib = 1 << 20
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 160*mib); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "sgdisk",
		"-n1:2048:+64M", "-t1:8300",
		"-n2:141312:+48M", "-t2:0700",
		"-n3:239616:+8M", "-t3:8200",
		"-n4:256000:+4M", "-t4:8e00",
		disk)

	ext := fsImage(t, 64*mib, "mkfs.ext4", "-F", "-q", "-b", "4096")
	extPop := populate(t, ext, false, "noinit_itable", 1)
	copyInto(t, disk, 1*mib, ext)
	fat := fsImage(t, 48*mib, "mkfs.vfat", "-F", "16")
	fatPop := populate(t, fat, true, "", 2)
	copyInto(t, disk, 69*mib, fat)
	copyInto(t, disk, 117*mib, fsImage(t, 8*mib, "mkswap"))
	rng := rand.New(rand.NewPCG(3, 3))
	noise := make([]byte, 4*mib)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	rnd := filepath.Join(t.TempDir(), "noise")
	if err := os.WriteFile(rnd, noise, 0o644); err != nil {
		t.Fatal(err)
	}
	copyInto(t, disk, 65*mib, rnd)
	copyInto(t, disk, 125*mib, rnd)

	m := buildFile(t, disk)
	const end = 160 * mib
	want := []struct {
		off, len int64
		method   string
		note     string // a part of the note, when NonZero
	}{
		{0, 34 * 512, MethodPartitionTable, ""},
		{34 * 512, mib - 34*512, MethodNonZero, "not in any partition"},
		{1 * mib, 64 * mib, MethodExt4, ""},
		{65 * mib, 4 * mib, MethodNonZero, "not in any partition"},
		{69 * mib, 48 * mib, MethodFAT16, ""},
		{117 * mib, 8 * mib, MethodSwap, ""},
		{125 * mib, 4 * mib, MethodNonZero, "no ext2/3/4 superblock"},
		{129 * mib, end - 33*512 - 129*mib, MethodNonZero, "not in any partition"},
		{end - 33*512, 33 * 512, MethodPartitionTable, ""},
	}
	if len(m.Regions) != len(want) {
		t.Fatalf("Build(GPT disk) = %d regions, want %d:%s", len(m.Regions), len(want), describe(m))
	}
	for i, w := range want {
		r := m.Regions[i]
		if r.Off != w.off || r.Len != w.len || r.Method != w.method || r.NonZero != (w.method == MethodNonZero) || !strings.Contains(r.Note, w.note) {
			t.Errorf("region %d = [%d, +%d) %s nonzero=%v %q, want [%d, +%d) %s noting %q",
				i, r.Off, r.Len, r.Method, r.NonZero, r.Note, w.off, w.len, w.method, w.note)
		}
	}
	if got := checkMarks(t, m, disk, false); got != extPop.keptSectors+fatPop.keptSectors {
		t.Errorf("found %d sectors of kept files on the disk, want %d", got, extPop.keptSectors+fatPop.keptSectors)
	}
	if !allUsed(m, 65*mib, 4*mib) || !allUsed(m, 125*mib, 4*mib) {
		t.Errorf("the random bytes in the gap and in partition 4 are not all used")
	}
	if got := m.Regions[5].UsedBytes(); got != 4096 {
		t.Errorf("swap region uses %d bytes, want its 4096-byte header page", got)
	}
}

// TestSmallFAT32 maps the FAT32 mkfs.fat makes on 32 MiB: fewer clusters
// than Microsoft's rule wants for FAT32 (65525), but a FAT32 BPB, which is
// how Linux reads it. (mtools refuses it, so it holds no files.)
func TestSmallFAT32(t *testing.T) {
	testenv.Require(t, "mkfs.vfat")
	p := fsImage(t, 32<<20, "mkfs.vfat", "-F", "32")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	reserved := int64(binary.LittleEndian.Uint16(b[14:]))
	fatSz := int64(binary.LittleEndian.Uint32(b[36:]))
	dataStart := (reserved + int64(b[16])*fatSz) * 512
	m := buildFile(t, p)
	r := fsRegion(t, m)
	// The reserved sectors and FATs, then the root directory's cluster.
	want := []Extent{{0, dataStart + 512*int64(b[13])}}
	if r.Method != MethodFAT32 || !slices.Equal(r.Used, want) {
		t.Errorf("Build(small FAT32) = %s %v, want %s %v", r.Method, r.Used, MethodFAT32, want)
	}
}

func TestSwap(t *testing.T) {
	testenv.Require(t, "mkswap")
	for _, ps := range []int64{4096, 65536} {
		t.Run(fmt.Sprint(ps), func(t *testing.T) {
			p := fsImage(t, 16<<20, "mkswap", "--pagesize", fmt.Sprint(ps), "-L", "swaptest")
			m := buildFile(t, p)
			r := fsRegion(t, m)
			if r.Method != MethodSwap || r.Off != 0 || r.Len != 16<<20 || r.UsedBytes() != ps || !allUsed(m, 0, ps) {
				t.Errorf("Build(%d-byte-page swap) = %s, want one swap region using the first %d bytes", ps, describe(m), ps)
			}
		})
	}
}

// TestCorrupt damages real filesystems in memory: each must fall back to a
// NonZero region over the whole area, with a note that says why.
func TestCorrupt(t *testing.T) {
	testenv.Require(t, "mkfs.ext4", "mkfs.vfat")
	const size = 32 << 20
	images := map[string][]byte{}
	for name, mkfs := range map[string][]string{
		// 4 groups of 2048 4 KiB blocks; group 0 is never BLOCK_UNINIT.
		"ext4":  {"mkfs.ext4", "-F", "-q", "-b", "4096", "-g", "2048"},
		"FAT16": {"mkfs.vfat", "-F", "16"},
		"FAT32": {"mkfs.vfat", "-F", "32"},
	} {
		b, err := os.ReadFile(fsImage(t, size, mkfs...))
		if err != nil {
			t.Fatal(err)
		}
		images[name] = b
	}
	le32 := binary.LittleEndian.PutUint32
	le16 := binary.LittleEndian.PutUint16
	const sb, gdt = 1024, 4096 // superblock; descriptors (64 bytes) in block 1
	for _, tt := range []struct {
		name, fs string
		mutate   func(b []byte)
		note     string
	}{
		{"bad magic", "ext4", func(b []byte) { b[sb+0x38] ^= 0xFF }, "no ext2/3/4 superblock"},
		{"bitmap outside the filesystem", "ext4", func(b []byte) { le32(b[gdt+64:], 8192+100) }, "block bitmap of group 1 at block 8292 is outside"},
		{"bitmap on a free block", "ext4", func(b []byte) { le32(b[gdt:], 8192-1) }, "block bitmap of group 0 (block 8191) marks"},
		{"inode table outside", "ext4", func(b []byte) { le32(b[gdt+3*64+8:], 8192-3) }, "inode table of group 3"},
		{"BLOCK_UNINIT on group 0", "ext4", func(b []byte) { b[gdt+0x12] |= extBGBlockUninit }, "group 0 is marked BLOCK_UNINIT"},
		{"needs recovery", "ext4", func(b []byte) { b[sb+0x60] |= extIncompatRecover }, "needs journal recovery"},
		{"errors", "ext4", func(b []byte) { b[sb+0x3A] |= extStateErrors }, "having errors"},
		{"not clean", "ext4", func(b []byte) { b[sb+0x3A] &^= extStateValid }, "not cleanly unmounted"},
		{"unknown feature", "ext4", func(b []byte) { b[sb+0x63] |= 0x80 }, "unknown incompatible features 0x80000000"},
		{"larger than its area", "ext4", func(b []byte) { le32(b[sb+0x4:], 8192+2048) }, "larger than its 33554432-byte area"},
		{"blocks per group", "ext4", func(b []byte) { le32(b[sb+0x20:], 100) }, "100 blocks per group"},
		{"block size", "ext4", func(b []byte) { le32(b[sb+0x18:], 7) }, "block size"},
		{"inode count", "ext4", func(b []byte) { le32(b[sb:], 12345) }, "12345 inodes"},
		{"bytes per sector", "FAT16", func(b []byte) { le16(b[11:], 3) }, "3 bytes per sector"},
		{"sectors per cluster", "FAT16", func(b []byte) { b[13] = 3 }, "3 sectors per cluster"},
		{"FAT too small", "FAT16", func(b []byte) { le16(b[22:], 1) }, "cannot hold"},
		{"FAT not at its place", "FAT16", func(b []byte) { le16(b[14:], 2) }, "media byte"},
		{"volume larger than its area", "FAT16", func(b []byte) { le16(b[19:], 0); le32(b[32:], 1<<20) }, "larger than"},
		{"root cluster", "FAT32", func(b []byte) { le32(b[44:], 1) }, "root directory cluster 1"},
		{"root cluster free", "FAT32", func(b []byte) { le32(b[44:], 1000) }, "root directory's cluster 1000 is free"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(images[tt.fs])
			tt.mutate(b)
			checkFallsBack(t, tt.fs, tt.name, b, tt.note)
		})
	}
}

// checkFallsBack maps b, a filesystem fs damaged by how, and checks that
// the map is valid and is one non-zero region whose note says note. It
// returns the map.
func checkFallsBack(t *testing.T, fs, how string, b []byte, note string) *Map {
	t.Helper()
	m, err := Build(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Build(%s with %s) = %v, want a map", fs, how, err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(m.Regions) != 1 || !m.Regions[0].NonZero || !strings.Contains(m.Regions[0].Note, note) {
		t.Errorf("Build(%s with %s) = %s; want one non-zero region noting %q", fs, how, describe(m), note)
	}
	return m
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r     io.ReaderAt
	n     int64
	reads int
}

func (c *countingReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(b, off)
	c.n += int64(n)
	c.reads++
	return n, err
}

// TestReadsOnlyMetadata maps a 2 GiB ext4 and counts what Build reads:
// bitmaps and descriptors, not data. Without group checksums no bitmap is
// left uninitialized, so Build reads all 16.
func TestReadsOnlyMetadata(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"every bitmap", []string{"-O", "^metadata_csum,^uninit_bg"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mkfs := append([]string{"mkfs.ext4", "-F", "-q", "-b", "4096"}, tt.args...)
			m := checkReadsOnlyMetadata(t, "ext4 ("+tt.name+")", 512<<10, mkfs...)
			if r := fsRegion(t, m); r.Method != MethodExt4 {
				t.Errorf("Build = %s, want %s", describe(m), MethodExt4)
			}
		})
	}
}

// checkReadsOnlyMetadata makes a 2 GiB filesystem with mkfs (a command and
// its arguments), maps it, and fails the test if Build read more than limit
// bytes of it: a mapper reads metadata, never data. It returns the map.
func checkReadsOnlyMetadata(t *testing.T, name string, limit int64, mkfs ...string) *Map {
	t.Helper()
	testenv.Require(t, mkfs[0])
	const size = 2 << 30
	p := fsImage(t, size, mkfs...)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &countingReader{r: f}
	m, err := Build(c, size)
	if err != nil {
		t.Fatal(err)
	}
	r := fsRegion(t, m)
	t.Logf("2 GiB %s: read %d bytes in %d reads; %d bytes used", name, c.n, c.reads, r.UsedBytes())
	if c.n > limit {
		t.Errorf("Build read %d bytes of a 2 GiB %s, want at most %d: metadata only", c.n, name, limit)
	}
	return m
}
