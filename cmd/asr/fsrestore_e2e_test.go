package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// The per-filesystem tests share one round trip: image a disk or volume
// file, restore it with --erase onto a target that holds other data, and
// look at what came back.

// scanRestore images src (a disk or volume file) with imagescan and
// restores the image onto a loop device over a file of src's size full of
// random data (from seed), as a used target disk is. It returns
// imagescan's output, the image, the target file and its loop device.
func scanRestore(t *testing.T, src string, seed uint64) (scanned, img, tfile, dev string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), filepath.Base(src)+".asr")
	scanned = mustAsr(t, "imagescan", "--source", src, "--output", img).stdout
	tfile = filepath.Join(t.TempDir(), "target.img")
	fillRandom(t, tfile, fileSize(t, src), seed)
	dev = loop(t, tfile)
	mustAsr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt")
	return scanned, img, tfile, dev
}

// checkRestoredExact is the round trip of a disk whose metadata was
// damaged on purpose: imagescan must say each of says (the warning, or that
// the area is kept as non-zero blocks), and the target must hold src byte
// for byte. It returns imagescan's output.
func checkRestoredExact(t *testing.T, src string, says ...string) string {
	t.Helper()
	scanned, _, _, dev := scanRestore(t, src, 5)
	for _, s := range says {
		if !strings.Contains(scanned, s) {
			t.Errorf("imagescan output lacks %q; got:\n%s", s, scanned)
		}
	}
	n := fileSize(t, src)
	if got, want := hashRange(t, dev, 0, n), hashRange(t, src, 0, n); got != want {
		t.Errorf("restored disk has sha256 %s, want %s (the damaged source, byte for byte)", got, want)
	}
	return scanned
}
