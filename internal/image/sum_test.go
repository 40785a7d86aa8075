package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

func TestSumSHA256InPiecesIsSHA256(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, sumPiece - 1, sumPiece, sumPiece + 1, 3*sumPiece + 17, 8 << 20} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := HashSHA256.Sum(b), sha256.Sum256(b); got != want {
			t.Errorf("SHA-256 Sum of %d bytes = %x, want %x", n, got, want)
		}
	}
}

// BLAKE3 sums are what b3sum, the reference implementation's tool, prints
// for the same bytes: an admin can check a chunk with it.
func TestSumBLAKE3IsB3sum(t *testing.T) {
	testenv.RequireTools(t, "b3sum")
	r := rand.New(rand.NewPCG(3, 4))
	dir := t.TempDir()
	for _, n := range []int{0, 1, 1024, 1025, 64 << 10, 8<<20 - 5} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		p := filepath.Join(dir, "chunk")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("b3sum", "--no-names", p).Output()
		if err != nil {
			t.Fatalf("b3sum: %v", err)
		}
		got := HashBLAKE3.Sum(b)
		if want := strings.TrimSpace(string(out)); hex.EncodeToString(got[:]) != want {
			t.Errorf("BLAKE3 Sum of %d bytes = %x, b3sum says %s", n, got, want)
		}
	}
}

// An image is written with BLAKE3 sums and its flag by default, with
// SHA-256 sums and no flag on request; both read back to the disk. The
// sums are of the chunks' bytes under the hash the header names.
func TestScanHashes(t *testing.T) {
	disk := synthDisk(mixedKinds, testChunk, mixedTail, 8)
	for _, sha := range []bool{false, true} {
		opts := scanOpts(2)
		opts.SHA256 = sha
		p, m, _ := scanFile(t, bytes.NewReader(disk), opts)
		im := mustOpen(t, p)
		want, flag := HashBLAKE3, true
		if sha {
			want, flag = HashSHA256, false
		}
		if im.Manifest.Hash != want || m.Hash != want || (im.Header[12]&byte(FlagBLAKE3) != 0) != flag {
			t.Fatalf("SHA256=%v: manifest hash %s (scan said %s), header flags %#x; want %s", sha, im.Manifest.Hash, m.Hash, im.Header[12], want)
		}
		for i, c := range im.Manifest.Chunks {
			orig := disk[i*testChunk : min((i+1)*testChunk, len(disk))]
			if c.Codec.Stored() && c.Sum != want.Sum(orig) {
				t.Errorf("SHA256=%v: chunk %d sum %x is not the %s of its bytes", sha, i, c.Sum, want)
			}
			got, _, err := im.ReadChunk(i, nil, nil)
			if err != nil || !bytes.Equal(got, orig) {
				t.Errorf("SHA256=%v: ReadChunk(%d) = %d bytes, %v; want the disk's %d bytes", sha, i, len(got), err, len(orig))
			}
		}
	}
}

// The hash flag is in the header, outside the manifest's digest: flipped
// (with the header's CRC made right again), it makes every stored chunk
// fail its check; none is returned as if good.
func TestFlippedHashFlagFailsEveryChunk(t *testing.T) {
	img, _, m := testImage(t)
	b := bytes.Clone(img)
	flags := binary.LittleEndian.Uint32(b[12:])
	binary.LittleEndian.PutUint32(b[12:], flags^FlagBLAKE3)
	binary.LittleEndian.PutUint32(b[56:], crc32.Checksum(b[:56], crcTable))
	im := mustOpen(t, writeImage(t, b))
	stored := 0
	for i, c := range m.Chunks {
		if !c.Codec.Stored() {
			continue
		}
		stored++
		if got, _, err := im.ReadChunk(i, nil, nil); !errors.Is(err, ErrCorrupt) || got != nil {
			t.Errorf("ReadChunk(%d) with the hash flag flipped = %d bytes, %v; want %v and no bytes", i, len(got), err, ErrCorrupt)
		}
	}
	if stored == 0 {
		t.Fatal("the test image stores no chunk")
	}
}
