package partition

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// fixGPTCRC returns a copy of b whose GPT header at sector size ss, if it has
// the signature and a sane size, carries a correct CRC. The fuzzer cannot
// find a CRC on its own: without this it never gets past the header check.
func fixGPTCRC(b []byte, ss int) []byte {
	if len(b) < 2*ss || string(b[ss:ss+8]) != "EFI PART" {
		return nil
	}
	h := b[ss:]
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < 92 || int(hsize) > ss {
		return nil
	}
	c := append([]byte(nil), b...)
	h = c[ss:]
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hsize]))
	return c
}

func FuzzPartition(f *testing.F) {
	parts := []gptPart{
		{typ: efiGUID, first: 2048, last: 4095, name: "EFI system partition"},
		{typ: linuxGUID, first: 4096, last: 14335, name: "données"},
	}
	// Small seeds: the fuzzer minimizes every new input, at a cost that
	// grows with the square of its size. TestGPT4K covers 4K sectors.
	f.Add(buildGPT(f, 512, 16384, parts, gptOpts{entries: 4}))
	f.Add(buildGPT(f, 512, 16384, parts, gptOpts{entries: 4, entryLBA: 1 << 40})) // entries far away
	f.Add(buildMBR(mbrEntry{0x80, 0x83, 2048, 4096}, mbrEntry{0, 0x82, 6144, 8192}))
	f.Add(buildMBR(mbrEntry{0, 0xEE, 1, 16383}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(tb *Table) {
			switch tb.Scheme {
			case None:
				if len(tb.Partitions) != 0 {
					t.Errorf("Parse = %s with %d partitions, want none", tb.Scheme, len(tb.Partitions))
				}
			case MBR:
				if tb.SectorSize != 512 || len(tb.Partitions) == 0 || len(tb.Partitions) > 4 {
					t.Errorf("Parse = MBR, sector size %d, %d partitions; want 512 and 1 to 4", tb.SectorSize, len(tb.Partitions))
				}
			case GPT:
				if tb.SectorSize != 512 && tb.SectorSize != 4096 {
					t.Errorf("Parse = GPT with sector size %d, want 512 or 4096", tb.SectorSize)
				}
			default:
				t.Errorf("Parse = scheme %q, want none, MBR or GPT", tb.Scheme)
			}
			_ = tb.Summary()
		}
		check(Parse(b))
		for _, ss := range []int{512, 4096} {
			if c := fixGPTCRC(b, ss); c != nil {
				tb := Parse(c)
				check(tb)
				if ss == 512 && tb.Scheme != GPT {
					t.Errorf("Parse(GPT header with a fixed CRC) = %s, want GPT", tb.Scheme)
				}
			}
		}
	})
}
