package blockmap

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// fixGPTCRC returns a copy of b whose GPT header at LBA 1 (512-byte
// sectors), if it has the signature and a sane size, carries a correct CRC:
// the fuzzer cannot find a CRC on its own.
func fixGPTCRC(b []byte) []byte {
	if len(b) < 1024 || string(b[512:520]) != "EFI PART" {
		return nil
	}
	n := binary.LittleEndian.Uint32(b[512+12:])
	if n < 92 || n > 512 {
		return nil
	}
	c := bytes.Clone(b)
	h := c[512 : 512+n]
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	return c
}

// FuzzBuild maps the input as a tiny disk. Build must never panic, never
// fail (every read it makes lies inside the disk: it checks metadata before
// following it), and always return a valid map whose filesystem regions
// keep their own first byte.
//
// Its seeds are partition tables and boot sectors of at most 1.5 KiB: the
// fuzzer minimizes every new input at a cost that grows with the square of
// its size, and stalls on inputs of a few KiB. Filesystems, which need more,
// are fuzzed by FuzzBuildPatched.
func FuzzBuild(f *testing.F) {
	// A GPT whose backup and partitions lie past the end of the disk.
	f.Add(tinyGPT(5, gptPart{2, 2, linuxFS, nil}, gptPart{1, 100, linuxFS, nil})[:1536])
	f.Add(tinyMBR(1, mbrPart{0x83, 1, 16, nil}, mbrPart{0x05, 0, 10, nil}, mbrPart{0xEE, 3, 2, nil}))
	f.Add(tinyFAT(12)[:1024])
	f.Add(tinyExt2()[:1536])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, b)
		if c := fixGPTCRC(b); c != nil {
			check(t, c)
		}
	})
}

// patchBases are the disks FuzzBuildPatched patches.
var patchBases = [][]byte{
	tinyExt2(7),
	tinyFAT(12, 3, 4, 7),
	tinyFAT(32, 5, 6),
	tinySwap(2),
	tinyDisk(),
	tinyMBR(40, mbrPart{0x83, 8, 16, tinyExt2(6)}, mbrPart{0x05, 30, 10, nil}),
}

// FuzzBuildPatched fuzzes the filesystems through small inputs: a tiny disk
// (an ext2, a FAT12, a FAT32, a swap area, a GPT disk holding the three, an
// MBR disk), cut by cut bytes, with patch applied as three-byte records: a
// little-endian offset (modulo the size) and the byte to put there. The
// same checks as FuzzBuild hold.
func FuzzBuildPatched(f *testing.F) {
	for i := range patchBases {
		f.Add(uint8(i), uint16(0), []byte{})
	}
	// Seeds that reach some fallbacks: a bitmap pointer moved, a FAT size
	// shrunk, the superblock cut.
	f.Add(uint8(0), uint16(0), []byte{0x00, 0x08, 0x07}) // block bitmap at block 7
	f.Add(uint8(1), uint16(0), []byte{0x16, 0x00, 0x00}) // no sectors per FAT
	f.Add(uint8(0), uint16(7000), []byte{})
	f.Fuzz(func(t *testing.T, base uint8, cut uint16, patch []byte) {
		b := bytes.Clone(patchBases[int(base)%len(patchBases)])
		b = b[:len(b)-int(cut)%len(b)]
		for ; len(patch) >= 3; patch = patch[3:] {
			b[int(binary.LittleEndian.Uint16(patch))%len(b)] = patch[2]
		}
		check(t, b)
		if c := fixGPTCRC(b); c != nil {
			check(t, c)
		}
	})
}

func check(t *testing.T, b []byte) {
	m, err := Build(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Build(%d bytes) = %v, want a map: every read should lie inside the disk", len(b), err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Build(%d bytes) made an invalid map: %v", len(b), err)
	}
	for _, r := range m.Regions {
		if !r.NonZero && !m.Used(r.Off, 1) {
			t.Errorf("Build(%d bytes): region [%d, +%d) %s has its first byte free", len(b), r.Off, r.Len, r.Method)
		}
	}
}
