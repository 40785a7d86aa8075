package image

import (
	"crypto/sha256"
	"fmt"

	"github.com/zeebo/blake3"
)

// Hash is the function a manifest's chunk sums are made with: SHA-256 in
// images whose header lacks FlagBLAKE3, BLAKE3-256 in those that have it.
// Both give 32 bytes and are cryptographic: a chunk that matches its sum
// holds the scanned bytes, whichever. BLAKE3 is what imagescan writes: on
// this project's machines it hashes 3.2 GB/s on one core against SHA-256's
// 1.6 GB/s with the CPU's SHA instructions, and every restore hashes every
// chunk at least once (a delta restore's comparison does little else).
type Hash uint8

const (
	HashSHA256 Hash = 0
	HashBLAKE3 Hash = 1
)

// ParseHash reads a hash's name as imagescan --hash takes it.
func ParseHash(s string) (Hash, error) {
	switch s {
	case "blake3":
		return HashBLAKE3, nil
	case "sha256":
		return HashSHA256, nil
	}
	return 0, fmt.Errorf("chunk hash %q: use blake3 (the default) or sha256 (readable by asr before BLAKE3 images)", s)
}

func (h Hash) String() string {
	if h == HashBLAKE3 {
		return "BLAKE3-256"
	}
	return "SHA-256"
}

// sumPiece is how much of a chunk Sum hands SHA-256 at a time.
const sumPiece = 256 << 10

// Sum returns the hash of a chunk. SHA-256 is fed in pieces of sumPiece
// bytes: its assembly cannot be preempted, and a whole 8 MiB chunk in one
// call is 5 ms during which the garbage collector, stopping every goroutine
// at the start of a cycle, spins on a core waiting for this one (a profile
// of a restore: 4-8% of its CPU in that spin). A piece is 150 us. The
// BLAKE3 package calls its assembly a few KiB at a time from Go already.
func (h Hash) Sum(b []byte) [32]byte {
	if h == HashBLAKE3 {
		return blake3.Sum256(b)
	}
	if len(b) <= sumPiece {
		return sha256.Sum256(b)
	}
	d := sha256.New()
	for len(b) > 0 {
		n := min(len(b), sumPiece)
		d.Write(b[:n])
		b = b[n:]
	}
	var s [32]byte
	d.Sum(s[:0])
	return s
}
