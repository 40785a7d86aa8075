package blockmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// NTFS and exFAT made by their real tools, written through their FUSE
// drivers (ntfs-3g, exfat-fuse: this kernel has neither), and HFS+ as
// xorriso writes it (Debian 12 has no mkfs.hfsplus and no hfsplus module).

// populateFUSE writes the test files to the filesystem in img through the
// FUSE mount helper mountCmd and deletes every third one, as populate does
// for kernel filesystems.
func populateFUSE(t *testing.T, img, mountCmd string, seed uint64) population {
	t.Helper()
	files, kept := testFiles(seed)
	return population{keptSectors: kept, free: populateMount(t, img, files, mountCmd)}
}

func TestFUSEFilesystems(t *testing.T) {
	for _, tt := range []struct {
		name   string
		size   int64
		mkfs   []string
		mount  string
		method string
		// slack is how much of what the filesystem does not call free
		// the map may leave out: exFAT's alignment gaps before its FAT
		// and its cluster heap.
		slack int64
	}{
		{name: "NTFS 4k", size: 256 << 20, mkfs: []string{"mkntfs", "-F", "-q", "-f"}, mount: "mount.ntfs-3g", method: MethodNTFS},
		{name: "NTFS 512 clusters", size: 128 << 20, mkfs: []string{"mkntfs", "-F", "-q", "-f", "-c", "512"}, mount: "mount.ntfs-3g", method: MethodNTFS},
		{name: "NTFS 64k clusters", size: 256 << 20, mkfs: []string{"mkntfs", "-F", "-q", "-f", "-c", "65536"}, mount: "mount.ntfs-3g", method: MethodNTFS},
		{name: "exFAT", size: 256 << 20, mkfs: []string{"mkfs.exfat"}, mount: "mount.exfat-fuse", method: MethodExFAT, slack: 4 << 20},
		{name: "exFAT 4k clusters", size: 128 << 20, mkfs: []string{"mkfs.exfat", "-c", "4096"}, mount: "mount.exfat-fuse", method: MethodExFAT, slack: 4 << 20},
		{name: "exFAT packed bitmap", size: 128 << 20, mkfs: []string{"mkfs.exfat", "--pack-bitmap"}, mount: "mount.exfat-fuse", method: MethodExFAT, slack: 4 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testenv.Require(t, tt.mkfs[0], tt.mount, "losetup", "umount", "df", "sync")
			p := fsImage(t, tt.size, tt.mkfs...)
			pop := populateFUSE(t, p, tt.mount, uint64(len(tt.name)))
			m := buildFile(t, p)
			r := checkFSMap(t, tt.name, m, p, tt.method, pop, tt.slack)
			if tt.method == MethodNTFS && !allUsed(m, r.End()-512, 512) {
				t.Errorf("the backup boot sector at %d is free in the map", r.End()-512)
			}
		})
	}
}

// xorrisoHFS makes an HFS+ volume with xorriso (libisofs), holding the
// files of dir, and returns it cut out of the hybrid image: the volume
// whose header lies at 1024, as on a disk's HFS+ partition.
func xorrisoHFS(t *testing.T, dir string) string {
	t.Helper()
	iso := filepath.Join(t.TempDir(), "hfs.iso")
	testenv.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-V", "ASRHFS", "-o", iso, dir)
	b, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	// The hybrid image has an Apple partition map; the HFS+ volume is the
	// partition whose header says so.
	for off := 0; off+2048 <= len(b); off += 512 {
		if hfsKind(b[off:off+2048]) != "" {
			vol := filepath.Join(t.TempDir(), "hfs.img")
			if err := os.WriteFile(vol, b[off:], 0o644); err != nil {
				t.Fatal(err)
			}
			return vol
		}
	}
	t.Fatalf("xorriso -hfsplus wrote no HFS+ volume header into %s", iso)
	return ""
}

// TestHFSPlus maps xorriso's HFS+: every file's data is used. xorriso packs
// the volume full, so its free space is only what the test frees: it
// clears the allocation file's bits (and raises the free count) of the
// blocks of one file, which then must be free in the map.
func TestHFSPlus(t *testing.T) {
	testenv.Require(t, "xorriso")
	dir := t.TempDir()
	files, _ := testFiles(5)
	for i, b := range files[:12] {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := xorrisoHFS(t, dir)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := b[hfsHeaderOff:]
	bs := int64(binary.BigEndian.Uint32(h[0x28:]))
	total := int64(binary.BigEndian.Uint32(h[0x2C:]))
	m, err := Build(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	r := fsRegion(t, m)
	if r.Method != MethodHFSPlus || r.Off != 0 || r.Len != total*bs {
		t.Fatalf("Build(xorriso HFS+) = %s, want %s over %d blocks of %d", describe(m), MethodHFSPlus, total, bs)
	}
	// Every marked sector (all kept: none was deleted) is used.
	kept := 0
	for s := int64(0); s+512 <= int64(len(b)); s += 512 {
		if bytes.HasPrefix(b[s:], keepMark) || bytes.HasPrefix(b[s:], delMark) {
			kept++
			if !allUsed(m, s, 512) {
				t.Fatalf("sector at %d holds file data but is free in the map", s)
			}
		}
	}
	want := 0
	for _, f := range files[:12] {
		want += len(f) / 512
	}
	if kept != want {
		t.Errorf("found %d sectors of file data, want %d", kept, want)
	}

	// Free the blocks of file 3: find its first sector, then its blocks.
	first := bytes.Index(b, files[3][:16])
	if first < 0 || int64(first)%bs != 0 {
		t.Fatalf("file 3's data not found at a block boundary (at %d)", first)
	}
	b2 := bytes.Clone(b)
	nblk := (int64(len(files[3])) + bs - 1) / bs
	alloc := readHFSFork(h[hfsForkAlloc:])
	abm := b2[alloc.extents[0].Off*bs:]
	for blk := int64(first) / bs; blk < int64(first)/bs+nblk; blk++ {
		abm[blk/8] &^= 0x80 >> (blk % 8)
	}
	binary.BigEndian.PutUint32(b2[hfsHeaderOff+0x30:], uint32(int64(binary.BigEndian.Uint32(h[0x30:]))+nblk))
	m2, err := Build(bytes.NewReader(b2), int64(len(b2)))
	if err != nil {
		t.Fatal(err)
	}
	r2 := fsRegion(t, m2)
	if got := r.UsedBytes() - r2.UsedBytes(); got != nblk*bs {
		t.Errorf("freeing %d blocks of %d bytes freed %d bytes in the map, want %d", nblk, bs, got, nblk*bs)
	}
	if m2.Used(int64(first), int64(len(files[3]))) {
		t.Errorf("the freed file's blocks at %d are still used in the map", first)
	}
}

// TestForeignCorrupt damages NTFS, exFAT and HFS+ volumes in memory: each
// must fall back to a NonZero region over the whole area, with a note that
// says why.
func TestForeignCorrupt(t *testing.T) {
	testenv.Require(t, "mkntfs", "mkfs.exfat", "xorriso")
	const size = 64 << 20
	images := map[string][]byte{}
	for name, mkfs := range map[string][]string{
		"NTFS":  {"mkntfs", "-F", "-q", "-f"},
		"exFAT": {"mkfs.exfat"},
	} {
		b, err := os.ReadFile(fsImage(t, size, mkfs...))
		if err != nil {
			t.Fatal(err)
		}
		images[name] = b
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), bytes.Repeat([]byte("hfs"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	hb, err := os.ReadFile(xorrisoHFS(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	images["HFS+"] = hb

	le16 := binary.LittleEndian.PutUint16
	// Where the allocation bitmaps are, read from the metadata the way the
	// mappers do, so a test zeroes exactly them.
	zeroNTFSBitmap := func(b []byte) {
		v, err := parseNTFSBoot(b, int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		// Records 0 to 6 are contiguous on a fresh volume.
		rec, err := v.readRecord(bytes.NewReader(b), ntfsRecBitmap, v.mftLCN*v.cs+ntfsRecBitmap*v.recSize)
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := v.attrs(rec, ntfsRecBitmap)
		if err != nil {
			t.Fatal(err)
		}
		a, err := unnamedAttr(attrs, ntfsAttrData, ntfsRecBitmap)
		if err != nil || a.resident {
			t.Fatalf("$Bitmap's data: %v", err)
		}
		for _, run := range a.runs {
			clear(b[run.lcn*v.cs : (run.lcn+run.n)*v.cs])
		}
	}
	zeroExFATBitmap := func(b []byte) {
		v, err := parseExFATBoot(b, int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		c, n, _, err := v.findBitmap(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		clear(b[v.clusterOff(c) : v.clusterOff(c)+n])
	}
	zeroHFSBitmap := func(b []byte) {
		h := b[hfsHeaderOff:]
		bs := int64(binary.BigEndian.Uint32(h[0x28:]))
		for _, e := range readHFSFork(h[hfsForkAlloc:]).extents {
			clear(b[e.Off*bs : e.End()*bs])
		}
	}
	for _, tt := range []struct {
		name, fs string
		mutate   func(b []byte)
		note     string
	}{
		{"zeroed bitmap", "NTFS", zeroNTFSBitmap, "NTFS: $Bitmap marks cluster 0 of the boot sector free"},
		{"bad magic", "NTFS", func(b []byte) { copy(b[3:], "NTFX") }, "FAT: no reserved sectors"}, // now it reads as a FAT boot sector
		{"MFT record magic", "NTFS", func(b []byte) {
			v, _ := parseNTFSBoot(b, int64(len(b)))
			copy(b[v.mftLCN*v.cs:], "BAAD")
		}, `MFT record 0 at byte`},
		{"larger than its area", "NTFS", func(b []byte) { binary.LittleEndian.PutUint64(b[0x28:], 1<<30) }, "does not fit its"},
		{"zeroed bitmap", "exFAT", zeroExFATBitmap, "exFAT: the allocation bitmap marks its own cluster"},
		{"bad magic", "exFAT", func(b []byte) { copy(b[3:], "EXFAX") }, "no ext2/3/4 superblock"},
		{"dirty", "exFAT", func(b []byte) { le16(b[0x6A:], exfatDirty) }, "exFAT: marked dirty"},
		{"cluster heap past the end", "exFAT", func(b []byte) { binary.LittleEndian.PutUint32(b[0x5C:], 1<<24) }, "runs past the volume"},
		{"zeroed bitmap", "HFS+", zeroHFSBitmap, "HFS+: the allocation file marks"},
		{"bad magic", "HFS+", func(b []byte) { copy(b[hfsHeaderOff:], "H-") }, "no ext2/3/4 superblock"},
		{"not unmounted", "HFS+", func(b []byte) { b[hfsHeaderOff+6] &^= 1 }, "HFS+: not cleanly unmounted"},
		{"free count", "HFS+", freeHFSBlocks, "HFS+: the allocation file marks"},
	} {
		t.Run(tt.fs+" "+tt.name, func(t *testing.T) {
			b := bytes.Clone(images[tt.fs])
			tt.mutate(b)
			m := checkFallsBack(t, tt.fs, tt.name, b, tt.note)
			if strings.Contains(tt.note, ":") && !m.Regions[0].Fallback {
				t.Errorf("Build(%s with %s): region not marked Fallback, so no warning is given", tt.fs, tt.name)
			}
		})
	}
}

// freeHFSBlocks clears the bits of 40 blocks before the volume's last in
// an xorriso HFS+ volume's allocation file, and counts none free in the
// header: the bitmap then calls more blocks free than the header allows.
func freeHFSBlocks(b []byte) {
	h := b[hfsHeaderOff:]
	bs := int64(binary.BigEndian.Uint32(h[0x28:]))
	total := int64(binary.BigEndian.Uint32(h[0x2C:]))
	abm := b[readHFSFork(h[hfsForkAlloc:]).extents[0].Off*bs:]
	for blk := total - 41; blk < total-1; blk++ {
		abm[blk/8] &^= 0x80 >> (blk % 8)
	}
	binary.BigEndian.PutUint32(h[0x30:], 0)
}

// TestNTFSDirty: no ntfs-3g tool sets the dirty flag (ntfsfix -d clears
// it), so the test sets it where Windows does, in $Volume's information.
func TestNTFSDirty(t *testing.T) {
	testenv.Require(t, "mkntfs")
	b, err := os.ReadFile(fsImage(t, 32<<20, "mkntfs", "-F", "-q", "-f"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := parseNTFSBoot(b, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	off := v.mftLCN*v.cs + ntfsRecVolume*v.recSize
	rec, err := v.readRecord(bytes.NewReader(b), ntfsRecVolume, off)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := v.attrs(rec, ntfsRecVolume)
	if err != nil {
		t.Fatal(err)
	}
	vi, err := unnamedAttr(attrs, ntfsAttrVolumeInfo, ntfsRecVolume)
	if err != nil {
		t.Fatal(err)
	}
	// vi.value aliases rec, a fixed-up copy: find the flags' offset in the
	// record and set them in the image (outside any fixup position).
	at := int64(bytes.Index(rec, vi.value)) + 0x0A
	if at < 0x0A || at%512 >= 510 {
		t.Fatalf("$Volume flags at %d of the record: cannot patch", at)
	}
	b[off+at] |= ntfsVolumeDirty
	m, err := Build(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Regions) != 1 || !m.Regions[0].Fallback || !strings.Contains(m.Regions[0].Note, "NTFS: marked dirty") {
		t.Errorf("Build(dirty NTFS) = %s, want a fallback noting it is dirty", describe(m))
	}
}
