package image

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

func TestSumChunkIsSHA256(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, sumPiece - 1, sumPiece, sumPiece + 1, 3*sumPiece + 17, 8 << 20} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := SumChunk(b), sha256.Sum256(b); got != want {
			t.Errorf("SumChunk of %d bytes = %x, want %x", n, got, want)
		}
	}
}
