package main

import (
	"crypto/sha256"
	"os"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/image"
)

// renameImage rewrites the manifest of img with another Name and Tool, and
// its header with the new digest: an image made by someone who chose them.
func renameImage(t *testing.T, img, name, tool string) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := image.Open(f, fileSize(t, img))
	if err != nil {
		t.Fatal(err)
	}
	m := im.Manifest
	im.Close()
	m.Name, m.Tool = name, tool
	mb := image.MarshalManifest(m)
	if int64(image.HeaderSize+len(mb)) > m.DataOffset {
		t.Fatalf("new manifest of %d bytes does not fit before the data at %d", len(mb), m.DataOffset)
	}
	old, err := image.ParseHeader(im.Header)
	if err != nil {
		t.Fatal(err)
	}
	// The flags (unused chunks, the chunk hash) stay as they were.
	h := image.Header{Version: image.Version, Flags: old.Flags, ManifestLen: uint64(len(mb)), ManifestDigest: sha256.Sum256(mb)}
	if _, err := f.WriteAt(append(image.MarshalHeader(h), mb...), 0); err != nil {
		t.Fatal(err)
	}
}

// asr info prints what the image says about itself escaped: its Name and
// Tool, and the names in its partition table, can hold escape sequences,
// carriage returns and whole forged lines.
func TestE2EInfoEscapesImageText(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 41)
	sh(t, "sgdisk", "-c1:x\x1b[2Jy\rz", disk)
	img := scan(t, disk)
	renameImage(t, img, "lab\x1b]0;owned\x07\r\nasr: Verified 40 MiB", "asr 1.0\x1b[31m\u202e")
	for _, args := range [][]string{{"info", "--source", img}, {"info", "--source", img, "--plist"}} {
		r := mustAsr(t, args...)
		for _, bad := range []string{"\x1b", "\r", "\x07", "\u202e", "\nasr: Verified"} {
			if strings.Contains(r.stdout, bad) {
				t.Errorf("asr %s printed %q raw:\n%s", strings.Join(args, " "), bad, r.stdout)
			}
		}
		for _, want := range []string{`lab\x1b]0;owned\a\r\nasr: Verified 40 MiB`, `asr 1.0\x1b[31m\u202e`, `x\x1b[2Jy\rz`} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("asr %s does not show %q escaped:\n%s", strings.Join(args, " "), want, r.stdout)
			}
		}
	}
}
