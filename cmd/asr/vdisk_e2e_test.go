package main

// End-to-end tests of VM disk images as imagescan sources: the same used
// ext4 disk as a raw file and converted by qemu-img to qcow2, VMDK, VHDX,
// VDI and VHD must give the same prepared image, digest included.

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

var digestLine = regexp.MustCompile(`digest sha256:([0-9a-f]{64})`)

// scanDigest scans src into out and returns the image's digest.
func scanDigest(t *testing.T, src, out string) string {
	t.Helper()
	r := mustAsr(t, "imagescan", "--source", src, "--output", out)
	m := digestLine.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("imagescan of %s printed no digest:\n%s", src, r.stdout)
	}
	return m[1]
}

func TestE2EVirtualDiskSources(t *testing.T) {
	testenv.Require(t, "qemu-img")
	dir := t.TempDir()
	raw := usedDisk(t, dir, "64M")
	// Every copy is named "disk" in a directory of its own, with the same
	// modification time: the image records both, and must come out the same.
	mtime := time.Unix(1700000000, 0)
	place := func(kind string) string {
		d := filepath.Join(dir, kind)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(d, "disk")
	}
	rawCopy := place("raw")
	sh(t, "cp", "--sparse=always", raw, rawCopy)
	if err := os.Chtimes(rawCopy, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	want := scanDigest(t, rawCopy, filepath.Join(dir, "raw.asr"))
	for _, tt := range []struct {
		kind string
		args []string
	}{
		{"qcow2", []string{"-O", "qcow2"}},
		{"qcow2-compressed", []string{"-O", "qcow2", "-c"}},
		{"vmdk", []string{"-O", "vmdk"}},
		{"vmdk-stream", []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}},
		{"vhdx", []string{"-O", "vhdx"}},
		{"vdi", []string{"-O", "vdi"}},
		{"vhd", []string{"-O", "vpc", "-o", "force_size=on"}},
		{"vhd-fixed", []string{"-O", "vpc", "-o", "subformat=fixed,force_size=on"}},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			p := place(tt.kind)
			sh(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, tt.args...), raw, p)...)
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(filepath.Dir(p), "out.asr")
			if got := scanDigest(t, p, out); got != want {
				t.Errorf("image of the %s disk has digest %s, want the raw disk's %s", tt.kind, got, want)
			}
			// The raw copy qemu-img wrote beside the output is gone.
			if names := dirNames(t, filepath.Dir(p)); !slices.Equal(names, []string{"disk", "out.asr"}) {
				t.Errorf("after the scan %s holds %v, want only the disk and the image", filepath.Dir(p), names)
			}
		})
	}

	// A restore from a VM disk image is refused: it is not a raw disk.
	qcow := filepath.Join(dir, "qcow2", "disk")
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, fileSize(t, raw), 3)
	before := hashRange(t, tfile, 0, fileSize(t, tfile))
	r := asr(t, "restore", "--source", qcow, "--target", tfile, "--erase", "--noprompt")
	if r.err == nil || !strings.Contains(r.stderr, "is a qcow2 image, not a raw disk") || !strings.Contains(r.stderr, "asr imagescan") {
		t.Errorf("restore from a qcow2 file: err %v, stderr %q; want a refusal pointing at imagescan", r.err, r.stderr)
	}
	if after := hashRange(t, tfile, 0, fileSize(t, tfile)); after != before {
		t.Errorf("the refused restore changed the target")
	}
}

// TestE2EVirtualDiskBackingFileRefused: a qcow2 overlay names its backing
// file; asr refuses it (it never opens files an image names) and says how
// to flatten it, writing nothing.
func TestE2EVirtualDiskBackingFileRefused(t *testing.T) {
	testenv.Require(t, "qemu-img")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	overlay := filepath.Join(dir, "overlay.qcow2")
	sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := asr(t, "imagescan", "--source", overlay, "--output", filepath.Join(outDir, "o.asr"))
	if r.err == nil || r.code == 0 {
		t.Fatalf("imagescan of a qcow2 overlay succeeded; stdout:\n%s", r.stdout)
	}
	for _, want := range []string{"backing file", base, "qemu-img convert -O qcow2"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("imagescan's error lacks %q: %q", want, r.stderr)
		}
	}
	if names := dirNames(t, outDir); len(names) != 0 {
		t.Errorf("imagescan left %v in the output directory, want nothing", names)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestE2EVirtualDiskDamaged: a qcow2 cut short fails in qemu-img; the
// error says so, and neither an image nor the raw copy is left behind.
func TestE2EVirtualDiskDamaged(t *testing.T) {
	testenv.Require(t, "qemu-img", "mkfs.ext4")
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.img")
	fillRandom(t, raw, 32<<20, 8)
	qcow := filepath.Join(dir, "disk.qcow2")
	sh(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow)
	if err := os.Truncate(qcow, fileSize(t, qcow)/2); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := asr(t, "imagescan", "--source", qcow, "--output", filepath.Join(outDir, "o.asr"))
	if r.err == nil || !strings.Contains(r.stderr, "qemu-img") || !strings.Contains(r.stderr, qcow) {
		t.Errorf("imagescan of a truncated qcow2: err %v, stderr %q; want a failure naming the file and qemu-img", r.err, r.stderr)
	}
	if names := dirNames(t, outDir); len(names) != 0 {
		t.Errorf("imagescan left %v in the output directory, want nothing", names)
	}
}
