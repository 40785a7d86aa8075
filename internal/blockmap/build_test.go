package blockmap

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// buildBytes maps b as a disk and checks the map's invariants.
func buildBytes(t *testing.T, b []byte) *Map {
	t.Helper()
	m, err := Build(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Build(%d bytes) = %v", len(b), err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Build(%d bytes) made an invalid map: %v", len(b), err)
	}
	return m
}

// wantRegion is what a test expects of a region: Used is checked when set.
type wantRegion struct {
	off, len int64
	method   string
	used     []Extent
	note     string // a part of the note
}

func checkRegions(t *testing.T, what string, m *Map, want []wantRegion) {
	t.Helper()
	if len(m.Regions) != len(want) {
		t.Fatalf("Build(%s) = %d regions, want %d:%s", what, len(m.Regions), len(want), describe(m))
	}
	for i, w := range want {
		r := m.Regions[i]
		if r.Off != w.off || r.Len != w.len || r.Method != w.method || r.NonZero != (w.method == MethodNonZero) ||
			!strings.Contains(r.Note, w.note) || (w.used != nil && !slices.Equal(r.Used, w.used)) {
			t.Errorf("Build(%s) region %d = [%d, +%d) %s %v nonzero=%v %q,\n\twant [%d, +%d) %s %v noting %q",
				what, i, r.Off, r.Len, r.Method, r.Used, r.NonZero, r.Note, w.off, w.len, w.method, w.used, w.note)
		}
	}
}

func TestTinyFilesystems(t *testing.T) {
	const k = 1024
	for _, tt := range []struct {
		name string
		disk []byte
		want []wantRegion
	}{
		{"ext2", tinyExt2(7), []wantRegion{
			{0, 8 * k, MethodExt2, []Extent{{0, 6 * k}, {7 * k, k}}, ""},
		}},
		{"ext2 in a larger area", append(tinyExt2(6, 7), make([]byte, 4*k)...), []wantRegion{
			{0, 8 * k, MethodExt2, []Extent{{0, 8 * k}}, ""},
			{8 * k, 4 * k, MethodNonZero, nil, "after the end of the ext2 filesystem"},
		}},
		{"FAT12", tinyFAT(12, 3, 4, 7), []wantRegion{
			{0, 8 * k, MethodFAT12, []Extent{{0, 2048}, {2560, 1024}, {4608, 512}}, ""},
		}},
		{"FAT32", tinyFAT(32, 5, 6), []wantRegion{
			{0, 8 * k, MethodFAT32, []Extent{{0, 2048}, {3072, 1024}}, ""},
		}},
		{"swap", tinySwap(4), []wantRegion{
			{0, 16 * k, MethodSwap, []Extent{{0, 4096}}, ""},
		}},
		{"swap in a larger area", append(tinySwap(2), make([]byte, 4096)...), []wantRegion{
			{0, 8 * k, MethodSwap, []Extent{{0, 4096}}, ""},
			{8 * k, 4 * k, MethodNonZero, nil, "after the end of the swap area"},
		}},
		{"zeros", make([]byte, 5000), []wantRegion{
			{0, 5000, MethodNonZero, nil, "no ext2/3/4 superblock, FAT boot sector or swap signature"},
		}},
		{"one byte", []byte{1}, []wantRegion{
			{0, 1, MethodNonZero, nil, "no ext2/3/4"},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkRegions(t, tt.name, buildBytes(t, tt.disk), tt.want)
		})
	}
}

// TestTinyGPT maps a hand-made GPT disk of 60 sectors:
//
//	0-2    protective MBR, header, four entries
//	3      not in any partition
//	4-19   1: ext2
//	20-23  not in any partition: random bytes
//	24-39  2: FAT12
//	40-55  3: swap
//	56-57  not in any partition
//	58-59  backup entries and header
func TestTinyGPT(t *testing.T) {
	checkRegions(t, "tiny GPT", buildBytes(t, tinyDisk()), []wantRegion{
		{0, 3 * 512, MethodPartitionTable, []Extent{{0, 3 * 512}}, ""},
		{3 * 512, 512, MethodNonZero, nil, "not in any partition"},
		{4 * 512, 8 << 10, MethodExt2, []Extent{{4 * 512, 6 << 10}, {4*512 + 7<<10, 1 << 10}}, ""},
		{20 * 512, 4 * 512, MethodNonZero, nil, "not in any partition"},
		{24 * 512, 8 << 10, MethodFAT12, []Extent{{24 * 512, 2048 + 512}}, ""},
		{40 * 512, 8 << 10, MethodSwap, []Extent{{40 * 512, 4096}}, ""},
		{56 * 512, 2 * 512, MethodNonZero, nil, "not in any partition"},
		{58 * 512, 2 * 512, MethodPartitionTable, nil, ""},
	})
}

// tinyDisk is the disk of TestTinyGPT.
func tinyDisk() []byte {
	disk := tinyGPT(60,
		gptPart{4, 19, linuxFS, tinyExt2(7)},
		gptPart{24, 39, linuxFS, tinyFAT(12, 2)},
		gptPart{40, 55, linuxFS, tinySwap(2)},
	)
	copy(disk[20*512:24*512], bytes.Repeat([]byte("noise"), 500))
	return disk
}

func TestTinyMBR(t *testing.T) {
	ext := tinyExt2()
	for _, tt := range []struct {
		name  string
		parts []mbrPart
		want  []wantRegion
	}{
		{"ext2 and an extended partition", []mbrPart{{0x83, 8, 16, ext}, {0x05, 40, 20, nil}}, []wantRegion{
			{0, 512, MethodPartitionTable, nil, ""},
			{512, 7 * 512, MethodNonZero, nil, "not in any partition"},
			{8 * 512, 16 * 512, MethodExt2, nil, ""},
			{24 * 512, 16 * 512, MethodNonZero, nil, "not in any partition"},
			{40 * 512, 20 * 512, MethodNonZero, nil, "partition 2 is an MBR extended partition"},
			{60 * 512, 4 * 512, MethodNonZero, nil, "not in any partition"},
		}},
		{"overlapping partitions", []mbrPart{{0x83, 8, 32, ext}, {0x83, 30, 20, nil}}, []wantRegion{
			{0, 512, MethodPartitionTable, nil, ""},
			{512, 7 * 512, MethodNonZero, nil, ""},
			{8 * 512, 42 * 512, MethodNonZero, nil, "partition 1, partition 2 overlap"},
			{50 * 512, 14 * 512, MethodNonZero, nil, ""},
		}},
		{"a partition over the table", []mbrPart{{0x83, 0, 8, nil}, {0x83, 8, 16, ext}}, []wantRegion{
			{0, 8 * 512, MethodNonZero, nil, "the partition table, partition 1 overlap"},
			{8 * 512, 16 * 512, MethodExt2, nil, ""},
			{24 * 512, 40 * 512, MethodNonZero, nil, ""},
		}},
		{"a partition past the end of the disk", []mbrPart{{0x83, 8, 1000, ext}, {0x83, 5000, 10, nil}}, []wantRegion{
			{0, 512, MethodPartitionTable, nil, ""},
			{512, 7 * 512, MethodNonZero, nil, ""},
			// The ext2 is only 8 KiB: it fits in what the disk holds.
			{8 * 512, 8 << 10, MethodExt2, nil, ""},
			{24 * 512, 40 * 512, MethodNonZero, nil, "after the end of the ext2 filesystem"},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkRegions(t, tt.name, buildBytes(t, tinyMBR(64, tt.parts...)), tt.want)
		})
	}
}

// TestSignatures checks that formats Build does not map are named, and that
// two signatures in one place are not believed.
func TestSignatures(t *testing.T) {
	with := func(b []byte, off int, s string) []byte { copy(b[off:], s); return b }
	for _, tt := range []struct {
		name string
		disk []byte
		note string
	}{
		{"NTFS name on a FAT BPB", with(tinyFAT(12), 3, "NTFS    "), "NTFS: volume of 0 sectors"},
		{"ext2 and HFS+", with(tinyExt2(), 1024, "H+\x00\x04"), "ambiguous: both ext2/3/4 superblock and HFS+ volume header"},
		{"XFS", with(make([]byte, 8192), 0, "XFSB"), "XFS: superblock version 0"},
		{"LUKS", with(make([]byte, 8192), 0, "LUKS\xba\xbe"), "LUKS (encrypted): kept whole"},
		{"LVM", with(make([]byte, 8192), 512, "LABELONE"), "LVM2: label in sector 1 says it is in sector 0"},
		{"hibernation", with(make([]byte, 8192), 4086, "S1SUSPEND"), "hibernation image: not mapped"},
		{"ext2 and FAT", with(tinyFAT(12), 1080, "\x53\xEF"), "ambiguous: both ext2/3/4 superblock and FAT boot sector"},
		{"ext2 and XFS", with(tinyExt2(), 0, "XFSB"), "ambiguous: both ext2/3/4 superblock and XFS superblock"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := buildBytes(t, tt.disk)
			if len(m.Regions) != 1 || !m.Regions[0].NonZero || !strings.Contains(m.Regions[0].Note, tt.note) {
				t.Errorf("Build(%s) = %s, want one non-zero region noting %q", tt.name, describe(m), tt.note)
			}
		})
	}
}

// failingReader fails every read that reaches past good bytes.
type failingReader struct {
	r    io.ReaderAt
	good int64
}

var errDisk = errors.New("disk on fire")

func (f failingReader) ReadAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > f.good {
		return 0, errDisk
	}
	return f.r.ReadAt(b, off)
}

// TestReadErrors checks that a failing reader is an error, not a fallback:
// a map built around an I/O error would call unread data free.
func TestReadErrors(t *testing.T) {
	disk := tinyDisk()
	big := tinyGPT(512, gptPart{4, 19, linuxFS, tinyExt2(7)}) // larger than what Build reads first
	for _, tt := range []struct {
		name string
		r    io.ReaderAt
		size int64
		want string
	}{
		{"short disk", bytes.NewReader(disk[:20<<10]), int64(len(disk)), "blockmap: reading the first bytes of the disk"},
		{"failing head", failingReader{bytes.NewReader(disk), 100}, int64(len(disk)), "disk on fire"},
		{"failing backup header", failingReader{bytes.NewReader(big), 200 << 10}, int64(len(big)), "backup GPT header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Build(tt.r, tt.size)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build(%s) = %v, %v; want an error saying %q", tt.name, m, err, tt.want)
			}
		})
	}
	// A bitmap that cannot be read fails the whole map.
	ext := tinyExt2(7)
	m, err := Build(failingReader{bytes.NewReader(ext), 3 << 10}, int64(len(ext)))
	if !errors.Is(err, errDisk) {
		t.Errorf("Build(ext2 whose bitmap cannot be read) = %v, %v; want %v", m, err, errDisk)
	}
	if _, err := Build(bytes.NewReader(nil), -1); err == nil {
		t.Errorf("Build(size -1) = nil error, want one")
	}
	if m, err := Build(bytes.NewReader(nil), 0); err != nil || m.Size != 0 || len(m.Regions) != 0 {
		t.Errorf("Build(size 0) = %+v, %v; want an empty map", m, err)
	}
}
