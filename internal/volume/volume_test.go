package volume

import (
	"encoding/binary"
	"testing"
)

func TestSniff(t *testing.T) {
	ext := make([]byte, 4096)
	binary.LittleEndian.PutUint16(ext[1080:], 0xef53)
	fat32 := make([]byte, 4096)
	copy(fat32[82:], "FAT32   ")
	fat32[510], fat32[511] = 0x55, 0xaa
	fat16 := make([]byte, 4096)
	copy(fat16[54:], "FAT16   ")
	fat16[510], fat16[511] = 0x55, 0xaa
	// An MBR has the boot signature too, but no FAT type string.
	mbr := make([]byte, 4096)
	mbr[510], mbr[511] = 0x55, 0xaa
	xfs := append([]byte("XFSB"), make([]byte, 4092)...)
	btrfs := make([]byte, 0x10048)
	copy(btrfs[0x10040:], "_BHRfS_M")
	for _, c := range []struct {
		name string
		head []byte
		want string
	}{
		{"ext", ext, "ext4"},
		{"fat32", fat32, "vfat"},
		{"fat16", fat16, "vfat"},
		{"mbr", mbr, ""},
		{"xfs", xfs, "xfs"},
		{"btrfs", btrfs, "btrfs"},
		{"zeros", make([]byte, 1<<17), ""},
		{"short", []byte{1, 2, 3}, ""},
	} {
		if got := sniff(c.head); got != c.want {
			t.Errorf("sniff(%s) = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a\040b`:  "/mnt/a b",
		`/mnt/tab\011`: "/mnt/tab\t",
		`/plain`:       "/plain",
		`/trail\04`:    `/trail\04`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
