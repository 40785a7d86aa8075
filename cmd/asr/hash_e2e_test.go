package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// imagescan --hash sha256 makes an image with SHA-256 chunk sums (for asr
// versions before BLAKE3 images): asr info names the hash, and a restore
// of it with --delta onto a disk that holds it compares, reuses and
// verifies under that hash. The default image says BLAKE3-256, and b3sum
// on a chunk of the disk prints the sum the restore checked.
func TestE2EImagescanHash(t *testing.T) {
	requireRoot(t)
	testenv.Require(t, "b3sum")
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 91)
	for _, c := range []struct{ flag, name string }{{"sha256", "SHA-256"}, {"blake3", "BLAKE3-256"}} {
		img := filepath.Join(dir, c.flag+".asr")
		mustAsr(t, "imagescan", "--source", disk, "--output", img, "--hash", c.flag)
		if r := mustAsr(t, "info", "--source", img); !strings.Contains(r.stdout, "Chunk hash:    "+c.name+"\n") {
			t.Errorf("asr info of a --hash %s image does not say %q:\n%s", c.flag, c.name, r.stdout)
		}
		tfile := filepath.Join(dir, c.flag+"-target.img")
		fillRandom(t, tfile, diskSize, 91)
		dev := loop(t, tfile)
		mustAsr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt")
		r := mustAsr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt", "--delta")
		if !strings.Contains(r.stdout, "Delta: ") || !strings.Contains(r.stdout, " 0 fetched") || !strings.Contains(r.stdout, "Verified ") {
			t.Errorf("--delta restore of a --hash %s image onto its own restore: want every chunk reused and Verified:\n%s", c.flag, r.stdout)
		}
		if got, want := hashRange(t, dev, 0, diskSize), hashRange(t, disk, 0, diskSize); got != want {
			t.Errorf("--hash %s: target sha256 %s, want the disk's %s", c.flag, got, want)
		}
	}
	if r := asr(t, "imagescan", "--source", disk, "--output", filepath.Join(dir, "md5.asr"), "--hash", "md5"); r.code != 2 || !strings.Contains(r.stderr, "use blake3 (the default) or sha256") {
		t.Errorf("imagescan --hash md5: exit %d, stderr %q; want 2 and the hashes it takes", r.code, r.stderr)
	}
	// What an admin can check by hand: b3sum of a chunk of the disk is
	// the sum the default image holds for it.
	m := manifest(t, filepath.Join(dir, "blake3.asr"))
	checked := 0
	for i, ch := range m.Chunks {
		if !ch.Codec.Stored() || checked == 3 {
			continue
		}
		checked++
		b := make([]byte, m.ChunkLen(i))
		d, err := os.Open(disk)
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.ReadAt(b, int64(i)*int64(m.ChunkSize))
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("b3sum", "--no-names")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("b3sum: %v", err)
		}
		if got := strings.TrimSpace(string(out)); got != hex.EncodeToString(ch.Sum[:]) {
			t.Errorf("chunk %d: the image's sum %x, b3sum of the disk's bytes %s", i, ch.Sum, got)
		}
	}
	if checked == 0 {
		t.Fatal("the image stores no chunk")
	}
}
