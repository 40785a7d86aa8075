package blockmap

import (
	"encoding/binary"
	"io"
)

// Encrypted volumes are recognised and kept whole: what they use is
// known only to whoever holds the key. Their ciphertext looks random, so
// every chunk of them is stored; the note says why.

// encryptedNote names the encryption of the area whose first bytes are
// head ("LUKS2 (encrypted): kept whole"), or returns "". It is checked
// before any filesystem: a BitLocker volume starts with a boot sector that
// a FAT probe would believe, and a LUKS header may hide a stale superblock.
func encryptedNote(r io.ReaderAt, n int64, head []byte) string {
	at := func(off int, s string) bool { return len(head) >= off+len(s) && string(head[off:off+len(s)]) == s }
	const kept = " (encrypted): kept whole"
	switch {
	case at(0, "LUKS\xba\xbe") && len(head) >= 8:
		switch v := binary.BigEndian.Uint16(head[6:]); v {
		case 1, 2:
			return "LUKS" + string(rune('0'+v)) + kept
		}
		return "LUKS" + kept
	case at(3, "-FVE-FS-"):
		return "BitLocker" + kept
	case at(0, "\xeb\x58\x90MSWIN4.1") && len(head) >= 448:
		// BitLocker To Go: a FAT boot sector whose field at 440 points at
		// the FVE metadata block; a plain FAT with that OEM name has none.
		p := int64(binary.LittleEndian.Uint64(head[440:]))
		if p > 0 && p <= n-8 {
			var sig [8]byte
			if _, err := r.ReadAt(sig[:], p); err == nil && string(sig[:]) == "-FVE-FS-" {
				return "BitLocker To Go" + kept
			}
		}
	}
	// A LUKS2 volume whose primary header was wiped still has its
	// secondary one, at one of the offsets cryptsetup uses.
	for _, o := range []int{0x4000, 0x8000, 0x10000} {
		if at(o, "SKUL\xba\xbe") {
			return "LUKS2" + kept
		}
	}
	return ""
}
