package blockmap

import (
	"encoding/binary"
)

// IsZero reports whether every byte of b is zero.
//
// It compares eight bytes at a time: on a multi-gigabyte scan this loop is hot.
func IsZero(b []byte) bool {
	for len(b) >= 64 {
		// Or-ing the words first keeps the loop free of branches per word.
		v := binary.LittleEndian.Uint64(b[0:]) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:]) |
			binary.LittleEndian.Uint64(b[32:]) | binary.LittleEndian.Uint64(b[40:]) |
			binary.LittleEndian.Uint64(b[48:]) | binary.LittleEndian.Uint64(b[56:])
		if v != 0 {
			return false
		}
		b = b[64:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
