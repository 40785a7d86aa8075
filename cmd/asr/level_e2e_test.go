package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// textSize is small: the best level compresses text at a few MB/s.
const textSize = 8 << 20

// textDisk writes a size-byte disk of made-up log lines: words of a small
// vocabulary drawn with a skew, and numbers, like the text on real disks.
// makeDisk's text repeats one line, which every level compresses alike.
func textDisk(t *testing.T, p string, size int) {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{11}))
	words := make([]string, 2000)
	for i := range words {
		w := make([]byte, 2+rng.IntN(9))
		for j := range w {
			w[j] = 'a' + byte(rng.IntN(26))
		}
		words[i] = string(w)
	}
	var b bytes.Buffer
	for b.Len() < size {
		fmt.Fprintf(&b, "%06d %s:", rng.IntN(1e6), words[rng.IntN(20)])
		for n := 3 + rng.IntN(12); n > 0; n-- {
			// Squaring skews the draw towards the first words.
			r := rng.Float64()
			b.WriteString(" " + words[int(r*r*float64(len(words)))])
		}
		fmt.Fprintf(&b, " %x\n", rng.Uint32()>>rng.IntN(32))
	}
	if err := os.WriteFile(p, b.Bytes()[:size], 0o644); err != nil {
		t.Fatal(err)
	}
}

// Each --level gives a valid image that restores byte-exact; stronger
// levels are no larger on compressible data; the same level twice gives
// the same bytes.
func TestE2EImagescanLevels(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "text.img")
	textDisk(t, disk, textSize)
	want := hashRange(t, disk, 0, textSize)

	size := map[string]int64{}
	for _, lvl := range []string{"fast", "default", "best"} {
		img := filepath.Join(dir, lvl+".asr")
		mustAsr(t, "imagescan", "--source", disk, "--output", img, "--level", lvl)
		size[lvl] = fileSize(t, img)
		again := filepath.Join(dir, lvl+"-again.asr")
		mustAsr(t, "imagescan", "--source", disk, "--output", again, "--level", lvl)
		if a, b := hashRange(t, img, 0, size[lvl]), hashRange(t, again, 0, fileSize(t, again)); a != b {
			t.Errorf("--level %s: two scans of the same disk differ: %s vs %s", lvl, a, b)
		}
		out := filepath.Join(dir, lvl+".raw")
		mustAsr(t, "restore", "--source", img, "--file", out)
		if got := hashRange(t, out, 0, textSize); got != want || fileSize(t, out) != textSize {
			t.Errorf("--level %s: restored sha256 %s (%d bytes), want %s (%d bytes)", lvl, got, fileSize(t, out), want, textSize)
		}
		if err := os.Remove(out); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("image sizes: %v", size)
	if !(size["best"] <= size["default"] && size["default"] <= size["fast"] && size["best"] < size["fast"]) {
		t.Errorf("image sizes fast %d, default %d, best %d: want best <= default <= fast, best < fast", size["fast"], size["default"], size["best"])
	}
	// No --level is the default level, byte for byte.
	plain := filepath.Join(dir, "plain.asr")
	mustAsr(t, "imagescan", "--source", disk, "--output", plain)
	if a, b := hashRange(t, plain, 0, fileSize(t, plain)), hashRange(t, filepath.Join(dir, "default.asr"), 0, size["default"]); a != b {
		t.Errorf("imagescan without --level differs from --level default")
	}

	// An unknown level is a usage error naming the allowed values, and
	// nothing is written.
	for _, bad := range []string{"fastest", "Best", "9", ""} {
		bogus := filepath.Join(dir, "bogus.asr")
		r := asr(t, "imagescan", "--source", disk, "--output", bogus, "--level", bad)
		if r.code != 2 || r.err == nil || !strings.Contains(r.err.Error(), "fast, default or best") || !strings.Contains(r.err.Error(), "--level") {
			t.Errorf("--level %q: exit %d, %v; want exit 2 naming fast, default or best", bad, r.code, r.err)
		}
		if _, err := os.Stat(bogus); !os.IsNotExist(err) {
			t.Errorf("--level %q left %s behind (%v)", bad, bogus, err)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".bogus*")); len(m) > 0 {
		t.Errorf("a refused scan left %v", m)
	}
}
