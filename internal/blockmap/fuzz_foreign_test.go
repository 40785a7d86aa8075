package blockmap

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// The NTFS, exFAT and HFS+ mappers are fuzzed on the smallest volumes their
// real tools make (hand-made ones would test the parser against itself),
// patched where their metadata lies: the volume is a MiB or two, and a
// patch at a random offset would almost always land in file data.

// hotVolume is a volume to patch and the byte ranges of its metadata.
type hotVolume struct {
	b   []byte
	hot []Extent
}

// patchHot applies patch, as records of a region number, a little-endian
// offset in it and the byte to put there, to a copy of v cut by cut bytes.
func (v hotVolume) patchHot(cut uint16, patch []byte) []byte {
	b := bytes.Clone(v.b)
	b = b[:len(b)-int(cut)%len(b)]
	for ; len(patch) >= 4; patch = patch[4:] {
		e := v.hot[int(patch[0])%len(v.hot)]
		off := e.Off + int64(binary.LittleEndian.Uint16(patch[1:]))%e.Len
		if off < int64(len(b)) {
			b[off] = patch[3]
		}
	}
	return b
}

func mkVolume(f *testing.F, size int64, mkfs ...string) []byte {
	f.Helper()
	testenv.Require(f, mkfs[0])
	p := filepath.Join(f.TempDir(), "fs.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		f.Fatal(err)
	}
	testenv.Run(f, mkfs[0], append(mkfs[1:], p)...)
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func fuzzHot(f *testing.F, v hotVolume) {
	f.Add(uint16(0), []byte{})
	for i := range v.hot {
		f.Add(uint16(0), []byte{byte(i), 0, 0, 0})
	}
	f.Add(uint16(4096), []byte{})
	f.Fuzz(func(t *testing.T, cut uint16, patch []byte) {
		check(t, v.patchHot(cut, patch))
	})
}

// FuzzNTFS patches an mkntfs volume's boot sector, its first MFT records
// (with their fixups), $Bitmap and the start of $LogFile.
func FuzzNTFS(f *testing.F) {
	b := mkVolume(f, 2<<20, "mkntfs", "-F", "-q", "-f")
	vol, err := parseNTFSBoot(b, int64(len(b)))
	if err != nil {
		f.Fatal(err)
	}
	mft := vol.mftLCN * vol.cs
	hot := []Extent{{0, 512}, {mft, 8 * vol.recSize}, {(vol.sectors) * vol.bps, 512}}
	for _, rec := range []int64{ntfsRecBitmap, ntfsRecLogFile} {
		r, err := vol.readRecord(bytes.NewReader(b), rec, mft+rec*vol.recSize)
		if err != nil {
			f.Fatal(err)
		}
		attrs, err := vol.attrs(r, rec)
		if err != nil {
			f.Fatal(err)
		}
		a, err := unnamedAttr(attrs, ntfsAttrData, rec)
		if err != nil || a.resident {
			f.Fatalf("record %d's data: %v", rec, err)
		}
		hot = append(hot, Extent{a.runs[0].lcn * vol.cs, 512})
	}
	fuzzHot(f, hotVolume{b, hot})
}

// FuzzExFAT patches an mkfs.exfat volume's boot sector, FAT, root
// directory and allocation bitmap.
func FuzzExFAT(f *testing.F) {
	b := mkVolume(f, 1<<20, "mkfs.exfat", "-b", "4096", "-c", "4096")
	v, err := parseExFATBoot(b, int64(len(b)))
	if err != nil {
		f.Fatal(err)
	}
	c, _, _, err := v.findBitmap(bytes.NewReader(b))
	if err != nil {
		f.Fatal(err)
	}
	fuzzHot(f, hotVolume{b, []Extent{{0, 512}, {v.fatOff * v.bps, 64}, {v.clusterOff(v.rootCluster), 256}, {v.clusterOff(c), 64}}})
}

// FuzzHFSPlus patches an xorriso HFS+ volume's header and allocation
// file.
func FuzzHFSPlus(f *testing.F) {
	testenv.Require(f, "xorriso")
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), bytes.Repeat([]byte("hfs+"), 20000), 0o644); err != nil {
		f.Fatal(err)
	}
	iso := filepath.Join(f.TempDir(), "hfs.iso")
	testenv.Run(f, "xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-o", iso, dir)
	b, err := os.ReadFile(iso)
	if err != nil {
		f.Fatal(err)
	}
	for off := 0; off+2048 <= len(b); off += 512 {
		if hfsKind(b[off:off+2048]) != "" {
			b = b[off:]
			h := b[hfsHeaderOff:]
			bs := int64(binary.BigEndian.Uint32(h[0x28:]))
			alloc := readHFSFork(h[hfsForkAlloc:]).extents[0]
			fuzzHot(f, hotVolume{b, []Extent{{hfsHeaderOff, 512}, {alloc.Off * bs, 64}}})
			return
		}
	}
	f.Fatal("xorriso -hfsplus wrote no HFS+ volume header")
}
