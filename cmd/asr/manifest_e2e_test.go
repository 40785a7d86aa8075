package main

// Images whose manifest declares millions of chunks (issue 11 #6): asr
// refuses them, or refuses the too-small target, within its memory budget
// and before writing anything. The images are sparse files of zero-codec
// entries, so each is a valid image as far as its bytes go.

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/testenv"
)

// hugeManifest writes an image of count zero chunks of cs bytes: header,
// the manifest's fixed fields, empty name and tool, then count all-zero
// entries (a hole), with the manifest's true digest.
func hugeManifest(t *testing.T, dir string, count int, cs uint32) string {
	t.Helper()
	mlen := 32 + 4 + count*48
	fixed := make([]byte, 36)
	binary.LittleEndian.PutUint64(fixed[0:], uint64(count)*uint64(cs))
	binary.LittleEndian.PutUint32(fixed[8:], cs)
	binary.LittleEndian.PutUint32(fixed[12:], uint32(count))
	binary.LittleEndian.PutUint64(fixed[16:], 1700000000)
	binary.LittleEndian.PutUint64(fixed[24:], uint64(image.HeaderSize+mlen+4095)&^4095)
	h := sha256.New()
	h.Write(fixed)
	if _, err := io.CopyN(h, zeroReader{}, int64(count*48)); err != nil {
		t.Fatal(err)
	}
	hdr := image.Header{Version: image.Version, ManifestLen: uint64(mlen)}
	copy(hdr.ManifestDigest[:], h.Sum(nil))
	p := filepath.Join(dir, "huge.asr")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(image.MarshalHeader(hdr))
	f.Write(fixed)
	// The file ends where its (absent) data would start.
	if err := f.Truncate(int64(image.HeaderSize+mlen+4095) &^ 4095); err != nil {
		t.Fatal(err)
	}
	return p
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// runMeasured runs asr under GNU time and returns its exit status, stderr
// and peak RSS. (The rusage of a child of the test itself would count the
// test's own RSS, which a child keeps across fork and exec.)
func runMeasured(t *testing.T, args ...string) (int, string, int64) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "rss")
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", out, testenv.Asr(t)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b)) // "Command exited with non-zero status 1" first, if it did
	kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		t.Fatalf("GNU time wrote %q: %v", b, err)
	}
	return code, stderr.String(), kib << 10
}

func TestE2EHugeManifest(t *testing.T) {
	requireRoot(t)
	testenv.Require(t, "/usr/bin/time")
	dir := t.TempDir()
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, diskSize, 31)
	dev := loop(t, tfile)
	before := hashRange(t, dev, 0, diskSize)
	const budget = 256 << 20

	// As many chunks as the 256 MiB manifest limit allows: more than an
	// image may have. Refused from its first 36 bytes of manifest.
	over := hugeManifest(t, t.TempDir(), 5_000_000, 64<<10)
	// The most chunks an image may have: read, then the target is too small.
	most := hugeManifest(t, t.TempDir(), image.MaxChunks, 64<<10)
	newFile := filepath.Join(dir, "new.img")

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"info, too many chunks", []string{"info", "--source", over}, "5000000 chunks of 65536 bytes, more than the 524288 this asr reads"},
		{"restore, too many chunks", []string{"restore", "--source", over, "--target", dev, "--erase", "--noprompt"}, "more than the 524288 this asr reads"},
		{"restore --file, too many chunks", []string{"restore", "--source", over, "--file", newFile}, "more than the 524288 this asr reads"},
		{"restore, most chunks, small target", []string{"restore", "--source", most, "--target", dev, "--erase", "--noprompt"}, "is too small"},
	} {
		code, stderr, rss := runMeasured(t, c.args...)
		t.Logf("%s: exit %d, peak RSS %.1f MiB: %s", c.name, code, float64(rss)/(1<<20), strings.TrimSpace(stderr))
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", c.name, code, stderr, c.want)
		}
		if rss > budget/2 {
			t.Errorf("%s: peak RSS %.1f MiB, want well under the %d MiB budget", c.name, float64(rss)/(1<<20), budget>>20)
		}
	}
	if after := hashRange(t, dev, 0, diskSize); after != before {
		t.Error("the target changed, though every restore was refused")
	}
	if _, err := os.Stat(newFile); !os.IsNotExist(err) {
		t.Errorf("a refused --file restore left %s behind (stat: %v)", newFile, err)
	}
}

// A --file restore that fails after creating its file removes it; one that
// overwrote a file the person already had leaves it, first chunk blanked.
func TestE2EFailedFileRestore(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 32)
	img := scan(t, disk)
	corruptChunk(t, img)

	newFile := filepath.Join(dir, "new.img")
	r := asr(t, "restore", "--source", img, "--file", newFile)
	if r.code != 1 || !strings.Contains(r.err.Error(), "image is corrupt") || !strings.Contains(r.err.Error(), "the new file "+newFile+" was removed") {
		t.Errorf("restore of a corrupt image to a new file: exit %d, %v; want 1, the corrupt chunk and the file's removal", r.code, r.err)
	}
	if _, err := os.Stat(newFile); !os.IsNotExist(err) {
		t.Errorf("%s is still there after a failed restore (stat: %v)", newFile, err)
	}

	old := filepath.Join(dir, "old.img")
	fillRandom(t, old, diskSize, 32)
	r = asr(t, "restore", "--source", img, "--file", old, "--erase", "--noprompt")
	if r.code != 1 || !strings.Contains(r.err.Error(), "first chunk has been blanked") {
		t.Errorf("restore of a corrupt image over an existing file: exit %d, %v; want 1 and its first chunk blanked", r.code, r.err)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("the existing file %s was removed: %v", old, err)
	} else if got := hashRange(t, old, 0, 1<<20); got != testenv.ZeroHash(1<<20) {
		t.Errorf("the first chunk of %s is not blank after a failed restore", old)
	}
}
