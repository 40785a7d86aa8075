package partition

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/asrlinux/asr/internal/testenv"
)

// headLen is how much of a disk the tests hand to Parse: the first chunk of
// an image at the default chunk size, as asr does.
const headLen = 1 << 20

// debPackage names the Debian package of each tool the tests run.
var debPackage = map[string]string{"sgdisk": "gdisk", "sfdisk": "fdisk", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools"}

// tool finds a partitioning or mkfs tool. They live in sbin, which is not
// always in PATH.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, ok := testenv.Tool(name)
	if !ok {
		testenv.Unavailable(t, "needs %s (Debian package %s; run scripts/deps.sh as root)", name, debPackage[name])
	}
	return p
}

// run runs a tool and fails the test with its output if it fails.
func run(t *testing.T, stdin string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// blankDisk makes a sparse file of size bytes under t.TempDir().
func blankDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// head returns the first n bytes of a file.
func head(t *testing.T, path string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[:min(n, len(b))]
}

func checkTable(t *testing.T, what string, got *Table, want Table) {
	t.Helper()
	if got == nil {
		t.Fatalf("Parse(%s) = nil, want a table", what)
	}
	if got.Scheme != want.Scheme || got.SectorSize != want.SectorSize || got.BackupLBA != want.BackupLBA {
		t.Errorf("Parse(%s) = scheme %s, sector size %d, backup LBA %d; want %s, %d, %d",
			what, got.Scheme, got.SectorSize, got.BackupLBA, want.Scheme, want.SectorSize, want.BackupLBA)
	}
	if len(got.Partitions) != len(want.Partitions) {
		t.Fatalf("Parse(%s) partitions = %+v, want %+v", what, got.Partitions, want.Partitions)
	}
	for i := range want.Partitions {
		if got.Partitions[i] != want.Partitions[i] {
			t.Errorf("Parse(%s) partition %d = %+v, want %+v", what, i, got.Partitions[i], want.Partitions[i])
		}
	}
}

const sgdiskDiskSize = 8 << 20 // 16384 sectors of 512 bytes

// sgdiskDisk makes an 8 MiB GPT disk with sgdisk: an EFI System partition and
// a Linux filesystem with a non-ASCII name.
func sgdiskDisk(t *testing.T) string {
	t.Helper()
	p := blankDisk(t, sgdiskDiskSize)
	run(t, "", "sgdisk",
		"-n", "1:2048:4095", "-t", "1:ef00", "-c", "1:EFI system partition",
		"-n", "2:4096:14335", "-t", "2:8300", "-c", "2:données",
		p)
	return p
}

func TestSgdiskGPT(t *testing.T) {
	p := sgdiskDisk(t)
	got := Parse(head(t, p, headLen))
	checkTable(t, "sgdisk GPT", got, Table{
		Scheme:     GPT,
		SectorSize: 512,
		BackupLBA:  sgdiskDiskSize/512 - 1,
		Partitions: []Partition{
			{Number: 1, Start: 2048 * 512, Size: 2048 * 512, Type: "EFI System", Name: "EFI system partition"},
			{Number: 2, Start: 4096 * 512, Size: 10240 * 512, Type: "Linux filesystem", Name: "données"},
		},
	})
	if s, want := got.Summary(), "GPT, 2 partitions"; s != want {
		t.Errorf("Summary() = %q, want %q", s, want)
	}
}

// TestSgdiskGPTEntriesCut hands Parse only the header sectors: the entries lie
// beyond what it was given, so it reports the GPT without partitions rather
// than reading out of bounds.
func TestSgdiskGPTEntriesCut(t *testing.T) {
	p := sgdiskDisk(t)
	b := head(t, p, headLen)
	for _, n := range []int{1024, 1024 + 128, 1024 + 200} {
		got := Parse(b[:n])
		want := 0
		if n >= 1024+128 {
			want = 1
		}
		if got.Scheme != GPT || len(got.Partitions) != want {
			t.Errorf("Parse(first %d bytes of a GPT disk) = %s with %d partitions, want GPT with %d", n, got.Scheme, len(got.Partitions), want)
		}
	}
}

func TestCorruptGPTHeader(t *testing.T) {
	p := sgdiskDisk(t)
	for _, tt := range []struct {
		name string
		off  int
	}{
		{"header CRC", 512 + 16},
		{"backup LBA", 512 + 32},
		{"disk GUID", 512 + 56},
		{"entry array LBA", 512 + 72},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := head(t, p, headLen)
			b[tt.off] ^= 0x10
			// The protective MBR is still there, but a protective MBR is
			// not a table of its own, and the GPT fails its CRC.
			if got := Parse(b); got.Scheme != None || len(got.Partitions) != 0 {
				t.Errorf("Parse(GPT with a flipped bit in its %s) = %s with %d partitions, want %s with none",
					tt.name, got.Scheme, len(got.Partitions), None)
			}
		})
	}
}

func TestSfdiskMBR(t *testing.T) {
	p := blankDisk(t, 8<<20)
	run(t, "label: dos\nunit: sectors\nstart=2048, size=4096, type=83, bootable\nstart=6144, size=8192, type=82\n",
		"sfdisk", p)
	got := Parse(head(t, p, headLen))
	checkTable(t, "sfdisk MBR", got, Table{
		Scheme:     MBR,
		SectorSize: 512,
		Partitions: []Partition{
			{Number: 1, Start: 2048 * 512, Size: 4096 * 512, Type: "Linux (0x83)"},
			{Number: 2, Start: 6144 * 512, Size: 8192 * 512, Type: "Linux swap (0x82)"},
		},
	})
	if s, want := got.Summary(), "MBR, 2 partitions"; s != want {
		t.Errorf("Summary() = %q, want %q", s, want)
	}
}

func TestBareFilesystem(t *testing.T) {
	for _, tt := range []struct {
		mkfs string
		args []string
	}{
		{"mkfs.ext4", []string{"-q", "-F"}},
		{"mkfs.vfat", nil}, // a FAT boot sector ends in 55 AA like an MBR
	} {
		t.Run(tt.mkfs, func(t *testing.T) {
			p := blankDisk(t, 8<<20)
			run(t, "", tt.mkfs, append(tt.args, p)...)
			got := Parse(head(t, p, headLen))
			if got.Scheme != None || len(got.Partitions) != 0 {
				t.Errorf("Parse(bare %s filesystem) = %s with %d partitions, want %s", tt.mkfs, got.Scheme, len(got.Partitions), None)
			}
			if s, want := got.Summary(), "no partition table"; s != want {
				t.Errorf("Summary() = %q, want %q", s, want)
			}
		})
	}
}

func TestShortAndEmpty(t *testing.T) {
	for _, n := range []int{0, 1, 446, 511, 512, 1023} {
		if got := Parse(make([]byte, n)); got.Scheme != None {
			t.Errorf("Parse(%d zero bytes) = %s, want %s", n, got.Scheme, None)
		}
	}
}

// gptPart is a partition for the hand-made GPT builder.
type gptPart struct {
	typ         string // GUID text
	first, last uint64 // LBAs, inclusive
	name        string
}

// guidBytes encodes a GUID in its on-disk mixed-endian form.
func guidBytes(t testing.TB, s string) []byte {
	t.Helper()
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		t.Fatalf("bad GUID %q", s)
	}
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], binary.BigEndian.Uint32(raw[0:]))
	binary.LittleEndian.PutUint16(b[4:], binary.BigEndian.Uint16(raw[4:]))
	binary.LittleEndian.PutUint16(b[6:], binary.BigEndian.Uint16(raw[6:]))
	copy(b[8:], raw[8:])
	return b
}

// gptOpts tweaks the hand-made GPT header.
type gptOpts struct {
	entryLBA uint64 // 0: 2
	entries  uint32 // 0: 128
}

// buildGPT makes the first sectors of a disk of diskSectors sectors of ss
// bytes: a protective MBR, a GPT header with correct CRCs and the entry array.
func buildGPT(t testing.TB, ss int, diskSectors uint64, parts []gptPart, o gptOpts) []byte {
	t.Helper()
	entLBA := uint64(2)
	if o.entryLBA != 0 {
		entLBA = o.entryLBA
	}
	n := uint32(128)
	if o.entries != 0 {
		n = o.entries
	}
	const esz = 128
	entSectors := (int(n)*esz + ss - 1) / ss
	b := make([]byte, (2+entSectors)*ss)

	// Protective MBR.
	pm := b[446:]
	pm[4] = 0xEE
	binary.LittleEndian.PutUint32(pm[8:], 1)
	binary.LittleEndian.PutUint32(pm[12:], uint32(min(diskSectors-1, 0xFFFFFFFF)))
	b[510], b[511] = 0x55, 0xAA

	// Entries, at LBA 2 whatever the header says.
	ents := b[2*ss : 2*ss+int(n)*esz]
	for i, p := range parts {
		e := ents[i*esz:]
		copy(e[0:], guidBytes(t, p.typ))
		copy(e[16:], guidBytes(t, fmt.Sprintf("00000000-0000-4000-8000-%012X", i+1)))
		binary.LittleEndian.PutUint64(e[32:], p.first)
		binary.LittleEndian.PutUint64(e[40:], p.last)
		for j, c := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], c)
		}
	}

	h := b[ss:]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x00010000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], 1)
	binary.LittleEndian.PutUint64(h[32:], diskSectors-1)
	binary.LittleEndian.PutUint64(h[40:], uint64(2+entSectors))
	binary.LittleEndian.PutUint64(h[48:], diskSectors-2-uint64(entSectors))
	copy(h[56:], guidBytes(t, "12345678-9ABC-4DEF-8123-456789ABCDEF"))
	binary.LittleEndian.PutUint64(h[72:], entLBA)
	binary.LittleEndian.PutUint32(h[80:], n)
	binary.LittleEndian.PutUint32(h[84:], esz)
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(ents))
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	return b
}

const (
	efiGUID   = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	linuxGUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
)

// TestGUIDEncoding pins the builder's GUID encoding to the bytes sgdisk
// writes for the EFI System type, so the hand-made tables below are real.
func TestGUIDEncoding(t *testing.T) {
	want, _ := hex.DecodeString("28732ac11ff8d211ba4b00a0c93ec93b")
	if got := guidBytes(t, efiGUID); !bytes.Equal(got, want) {
		t.Errorf("guidBytes(%s) = %x, want %x", efiGUID, got, want)
	}
	if got := guid(want); got != efiGUID {
		t.Errorf("guid(%x) = %s, want %s", want, got, efiGUID)
	}
}

// TestGPT4K parses a GPT on a disk with 4096-byte sectors.
func TestGPT4K(t *testing.T) {
	const sectors = 1 << 20 // 4 GiB
	b := buildGPT(t, 4096, sectors, []gptPart{
		{typ: efiGUID, first: 256, last: 256 + 32767, name: "ESP"},
		{typ: linuxGUID, first: 65536, last: sectors - 6, name: "root"},
	}, gptOpts{})
	got := Parse(b)
	checkTable(t, "4K-sector GPT", got, Table{
		Scheme:     GPT,
		SectorSize: 4096,
		BackupLBA:  sectors - 1,
		Partitions: []Partition{
			{Number: 1, Start: 256 * 4096, Size: 32768 * 4096, Type: "EFI System", Name: "ESP"},
			{Number: 2, Start: 65536 * 4096, Size: (sectors - 5 - 65536) * 4096, Type: "Linux filesystem", Name: "root"},
		},
	})
	// With its header CRC broken it is no table at all: not a GPT, and its
	// protective MBR is not an MBR.
	b[4096+16] ^= 1
	if got := Parse(b); got.Scheme != None {
		t.Errorf("Parse(4K GPT with a bad header CRC) = %s, want %s", got.Scheme, None)
	}
}

// TestGPTUnknownTypeAndLongName checks a type GUID outside the table and a
// name that fills all 36 UTF-16 units.
func TestGPTUnknownTypeAndLongName(t *testing.T) {
	const other = "01234567-89AB-CDEF-0123-456789ABCDEF"
	long := strings.Repeat("n", 35) + "é"
	b := buildGPT(t, 512, 2048, []gptPart{{typ: other, first: 34, last: 2014, name: long}}, gptOpts{})
	got := Parse(b)
	checkTable(t, "GPT with an unknown type", got, Table{
		Scheme: GPT, SectorSize: 512, BackupLBA: 2047,
		Partitions: []Partition{{Number: 1, Start: 34 * 512, Size: 1981 * 512, Type: other, Name: long}},
	})
}

// TestGPTHostileEntryLBA gives Parse GPT headers with valid CRCs whose
// partition entry LBA, multiplied by the sector size, overflows int64. Parse
// must report what it can, never panic: it reads the first chunk of any image
// it is handed, including hostile ones.
func TestGPTHostileEntryLBA(t *testing.T) {
	for _, lba := range []uint64{
		1 << 54,        // * 512 = 1<<63: negative offset
		^uint64(0),     // -1 as int64: offset -512
		^uint64(0) - 1, // -2
		1 << 55,        // * 512 wraps to 0
		1 << 40,        // far beyond the bytes handed over
	} {
		b := buildGPT(t, 512, 2048, []gptPart{{typ: linuxGUID, first: 34, last: 2014, name: "x"}}, gptOpts{entryLBA: lba})
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("Parse(GPT with partition entry LBA %#x) panicked: %v", lba, r)
				}
			}()
			if got := Parse(b); got.Scheme != GPT {
				t.Errorf("Parse(GPT with partition entry LBA %#x) = %s, want %s", lba, got.Scheme, GPT)
			}
		}()
	}
}

// mbrEntry is one primary entry for a hand-made MBR.
type mbrEntry struct {
	status, typ byte
	start, size uint32
}

func buildMBR(entries ...mbrEntry) []byte {
	b := make([]byte, 512)
	for i, e := range entries {
		p := b[446+16*i:]
		p[0], p[4] = e.status, e.typ
		binary.LittleEndian.PutUint32(p[8:], e.start)
		binary.LittleEndian.PutUint32(p[12:], e.size)
	}
	b[510], b[511] = 0x55, 0xAA
	return b
}

func TestHandmadeMBR(t *testing.T) {
	for _, tt := range []struct {
		name    string
		b       []byte
		scheme  Scheme
		numbers []int
	}{
		{"two entries", buildMBR(mbrEntry{0x80, 0x83, 2048, 100}, mbrEntry{0, 0x82, 4096, 100}), MBR, []int{1, 2}},
		{"gap keeps numbers", buildMBR(mbrEntry{0, 0x83, 2048, 100}, mbrEntry{}, mbrEntry{0, 0x83, 4096, 100}), MBR, []int{1, 3}},
		{"empty slots only", buildMBR(), None, nil},
		{"type without size", buildMBR(mbrEntry{0, 0x83, 2048, 0}), None, nil},
		{"protective only", buildMBR(mbrEntry{0, 0xEE, 1, 2047}), None, nil},
		{"bad status byte", buildMBR(mbrEntry{0x41, 0x83, 2048, 100}), None, nil},
		{"no signature", buildMBR(mbrEntry{0, 0x83, 2048, 100})[:510], None, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Parse(tt.b)
			var nums []int
			for _, p := range got.Partitions {
				nums = append(nums, p.Number)
			}
			if got.Scheme != tt.scheme || fmt.Sprint(nums) != fmt.Sprint(tt.numbers) {
				t.Errorf("Parse(%s) = %s with partitions %v, want %s with %v", tt.name, got.Scheme, nums, tt.scheme, tt.numbers)
			}
		})
	}
}

// TestMBRTypeNames checks the readable MBR type names: the type byte is always
// shown as two hex digits, as in "Linux (0x83)".
func TestMBRTypeNames(t *testing.T) {
	for _, tt := range []struct {
		typ  byte
		want string
	}{
		{0x83, "Linux (0x83)"},
		{0x82, "Linux swap (0x82)"},
		{0x8e, "Linux LVM (0x8e)"},
		{0x07, "NTFS/exFAT (0x07)"},
		{0xef, "EFI System (0xef)"},
		{0x0c, "FAT32 (0x0c)"},
		{0x0b, "FAT32 (0x0b)"},
		{0x06, "FAT (0x06)"},
		{0x0e, "FAT (0x0e)"},
		{0x05, "Extended (0x05)"},
		{0x85, "Extended (0x85)"},
		{0xa5, "0xa5"},
		{0x0a, "0x0a"},
	} {
		got := Parse(buildMBR(mbrEntry{0, tt.typ, 2048, 100}))
		if len(got.Partitions) != 1 {
			t.Errorf("Parse(MBR with one partition of type %#x) = %d partitions, want 1", tt.typ, len(got.Partitions))
			continue
		}
		if got.Partitions[0].Type != tt.want {
			t.Errorf("Parse(MBR with type %#x).Type = %q, want %q", tt.typ, got.Partitions[0].Type, tt.want)
		}
	}
}
