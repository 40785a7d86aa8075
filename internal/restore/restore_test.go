package restore

import (
	"bytes"
	"context"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/aligned"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/target"
)

// A target whose bytes changed after they were written (or, for a chunk a
// delta restore kept, after it was compared) fails verification, and the
// message names the byte range of the chunk that differs.
func TestVerifyNamesTheChunkThatDiffers(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 5*cs+1000)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data[:3*cs] { // two chunks stay zero
		data[i] = byte(rng.Uint32())
	}
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	info := source.Info{Size: int64(len(data)), ChunkSize: cs}
	sums := make([]sum, 6)
	for i := range sums {
		c := data[i*cs : min(len(data), (i+1)*cs)]
		switch {
		case i == 5: // held back and written last (a first chunk with an adjusted table too): byte for byte
			sums[i] = sum{held: bytes.Clone(c)}
		case i >= 3:
			sums[i] = sum{zero: true}
		case i == 2: // kept by a delta restore, next to a write: checked by its CRC-32C
			sums[i] = sum{kept: true, recheck: true, hasCRC: true, crc: crc32.Checksum(c, castagnoli)}
		case i == 1: // kept, next to a chunk that did not match: no CRC-32C, its sum
			sums[i] = sum{kept: true, recheck: true, sha: info.Hash().Sum(c)}
		default:
			sums[i] = sum{sha: info.Hash().Sum(c)}
		}
	}
	tgt, err := target.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	out := progress.New(io.Discard, false)
	if _, err := verify(context.Background(), tgt, info, sums, 4, aligned.NewPool(int(cs), 4), out); err != nil {
		t.Fatalf("verify(intact) = %v", err)
	}
	for _, off := range []int64{5, cs + 17, 2*cs + 9, 4*cs + 3, 5*cs + 100} { // a written chunk, two kept ones, a zero chunk, a held one
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		f.WriteAt([]byte{0xAA}, off)
		f.Close()
		_, err := verify(context.Background(), tgt, info, sums, 4, aligned.NewPool(int(cs), 4), out)
		chunk := off / cs
		want := "bytes " + itoa(chunk*cs) + " to " + itoa(min(int64(len(data)), (chunk+1)*cs))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("verify after changing byte %d = %v, want an error naming %q", off, err, want)
		}
		f, _ = os.OpenFile(p, os.O_RDWR, 0)
		f.WriteAt(data[off:off+1], off)
		f.Close()
	}
}

// A delta restore's verify pass reads again the kept chunks next to a range
// the run changed (written, zeroed, discarded, or the GPT backup past the
// image's end for the last chunk), and no other kept chunk; where the
// comparison did not read past the page cache, every kept chunk.
func TestMarkRechecksReadsKeptChunksNextToWrites(t *testing.T) {
	const cs = 4096
	// 0 the first chunk (matched, written back last), 1-3 kept, 4 free
	// space (discarded), 5-6 kept, 7 a zero chunk found zero (untouched),
	// 8 kept, 9 fetched and written, 10-11 kept, 11 the last.
	const n = 12
	w := newWriter(nil, source.Info{Size: n * cs, ChunkSize: cs}, false, aligned.NewPool(cs, 2))
	w.have = newChunkSet(n)
	kept := []int{1, 2, 3, 5, 6, 8, 10, 11}
	for _, i := range kept {
		w.sums[i] = sum{kept: true}
	}
	w.sums[0] = sum{} // written: compared with its SHA-256
	w.sums[4] = sum{unused: true}
	w.sums[7] = sum{zero: true}
	w.have.add(7)
	w.sums[9] = sum{readBack: true}
	check := func(all bool, extra []patch, want []int) {
		t.Helper()
		w.extra = extra
		got := w.markRechecks(all)
		var re []int
		for i, s := range w.sums {
			if s.recheck {
				re = append(re, i)
			}
		}
		if !slices.Equal(re, want) || got != int64(len(kept)-len(want))*cs {
			t.Errorf("markRechecks(%v) with %d patches past the image: rechecks %v and %d bytes verified by the comparison alone, want %v and %d",
				all, len(extra), re, got, want, (len(kept)-len(want))*cs)
		}
	}
	check(false, nil, []int{1, 3, 5, 8, 10})
	check(false, []patch{{off: n * cs, data: []byte{1}}}, []int{1, 3, 5, 8, 10, 11})
	check(true, nil, kept)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1 << 30: "1.0 GiB", 3 << 39: "1.5 TiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
