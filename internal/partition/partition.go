// Package partition reads MBR and GPT partition tables from the first bytes
// of a disk.
//
// It parses, and computes the table a larger disk needs (Resize); it never
// writes to a disk. It reads only what it is handed (the
// first chunk of an image or a device), so it works the same on a local file,
// an HTTP source and a multicast stream.
package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf16"
)

// Scheme names a partitioning scheme.
type Scheme string

const (
	None Scheme = "none"
	MBR  Scheme = "MBR"
	GPT  Scheme = "GPT"
)

// Partition is one entry of a table, in bytes.
type Partition struct {
	Number int
	Start  int64
	Size   int64
	Type   string // a readable type: "Linux filesystem", "EFI System", "0x83"
	Name   string // GPT partition name, if any
}

// Table is a parsed partition table.
type Table struct {
	Scheme     Scheme
	SectorSize int
	// BackupLBA is the sector of the GPT backup header (normally the disk's
	// last sector); zero for MBR.
	BackupLBA  int64
	Partitions []Partition
}

// Summary is one line for people: "GPT, 2 partitions".
func (t *Table) Summary() string {
	if t.Scheme == None {
		return "no partition table"
	}
	return fmt.Sprintf("%s, %d partition%s", t.Scheme, len(t.Partitions), plural(len(t.Partitions)))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Parse reads the partition table from b, the first bytes of a disk. A GPT is
// looked for at 512- and 4096-byte sectors and must pass its header CRC; an
// MBR that is only a protective one for a GPT is not reported as MBR.
// Anything unrecognised is a Table with Scheme None, not an error: a
// partition image or a bare filesystem has no table.
func Parse(b []byte) *Table {
	for _, ss := range []int{512, 4096} {
		if t := parseGPT(b, ss); t != nil {
			return t
		}
	}
	if t := parseMBR(b); t != nil {
		return t
	}
	return &Table{Scheme: None}
}

func parseMBR(b []byte) *Table {
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xAA {
		return nil
	}
	t := &Table{Scheme: MBR, SectorSize: 512}
	for i := range 4 {
		e := b[446+16*i:]
		typ := e[4]
		start := int64(binary.LittleEndian.Uint32(e[8:]))
		size := int64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0 || size == 0 {
			continue
		}
		if typ == 0xEE {
			return nil // a protective MBR with no valid GPT behind it
		}
		if e[0] != 0 && e[0] != 0x80 {
			return nil // not a partition table (a boot sector of a bare filesystem)
		}
		t.Partitions = append(t.Partitions, Partition{
			Number: i + 1, Start: start * 512, Size: size * 512, Type: mbrType(typ),
		})
	}
	if len(t.Partitions) == 0 {
		return nil
	}
	return t
}

func mbrType(t byte) string {
	switch t {
	case 0x83:
		return "Linux (0x83)"
	case 0x82:
		return "Linux swap (0x82)"
	case 0x8e:
		return "Linux LVM (0x8e)"
	case 0x07:
		return "NTFS/exFAT (0x07)"
	case 0x0b, 0x0c:
		return fmt.Sprintf("FAT32 (%#02x)", t)
	case 0x06, 0x0e, 0x04, 0x01:
		return fmt.Sprintf("FAT (%#02x)", t)
	case 0xef:
		return "EFI System (0xef)"
	case 0x05, 0x0f, 0x85:
		return fmt.Sprintf("Extended (%#02x)", t)
	}
	return fmt.Sprintf("%#02x", t)
}

func parseGPT(b []byte, ss int) *Table {
	if len(b) < 2*ss {
		return nil
	}
	h := b[ss:]
	if string(h[:8]) != "EFI PART" {
		return nil
	}
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < 92 || int(hsize) > ss {
		return nil
	}
	hdr := bytes.Clone(h[:hsize])
	want := binary.LittleEndian.Uint32(hdr[16:])
	clear(hdr[16:20])
	if crc32.ChecksumIEEE(hdr) != want {
		return nil
	}
	t := &Table{Scheme: GPT, SectorSize: ss, BackupLBA: int64(binary.LittleEndian.Uint64(h[32:]))}
	entLBA := int64(binary.LittleEndian.Uint64(h[72:]))
	n := int(binary.LittleEndian.Uint32(h[80:]))
	esz := int(binary.LittleEndian.Uint32(h[84:]))
	// The entries must start inside what we were handed: a hostile LBA
	// would otherwise overflow the offset arithmetic below.
	if esz < 128 || esz > 4096 || n > 1024 || entLBA < 0 || entLBA > int64(len(b)/ss) {
		return t
	}
	for i := range n {
		off := entLBA*int64(ss) + int64(i*esz)
		if off+int64(esz) > int64(len(b)) {
			break // the entries lie beyond what we were handed
		}
		e := b[off : off+int64(esz)]
		var zero [16]byte
		if bytes.Equal(e[:16], zero[:]) {
			continue
		}
		first := int64(binary.LittleEndian.Uint64(e[32:]))
		last := int64(binary.LittleEndian.Uint64(e[40:]))
		t.Partitions = append(t.Partitions, Partition{
			Number: i + 1,
			Start:  first * int64(ss),
			Size:   (last - first + 1) * int64(ss),
			Type:   gptType(e[:16]),
			Name:   utf16Name(e[56:128]),
		})
	}
	return t
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// guid formats a GPT GUID in its mixed-endian text form.
func guid(b []byte) string {
	return strings.ToUpper(fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16]))
}

var gptTypes = map[string]string{
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
	"21686148-6449-6E6F-744E-656564454649": "BIOS boot",
	"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
	"A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
	"48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS+",
	"7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
}

func gptType(b []byte) string {
	g := guid(b)
	if name, ok := gptTypes[g]; ok {
		return name
	}
	return g
}
