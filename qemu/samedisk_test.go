package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSameDisk: a disk holding the image (and more after it) passes; one
// byte changed anywhere, even in the first sector of an image that has no
// GPT, is found and named.
func TestSameDisk(t *testing.T) {
	dir := t.TempDir()
	img := make([]byte, 3<<20)
	for i := range img {
		img[i] = byte(i * 7)
	}
	ip := filepath.Join(dir, "image.raw")
	if err := os.WriteFile(ip, img, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		at   int // byte to change; -1: none
		want string
	}{
		{"equal", -1, ""},
		{"first sector differs", 100, "from byte 100"},
		{"last byte differs", len(img) - 1, "from byte 3145727"},
	} {
		d := append(append([]byte(nil), img...), make([]byte, 1<<20)...)
		if c.at >= 0 {
			d[c.at]++
		}
		dp := filepath.Join(dir, "disk.raw")
		if err := os.WriteFile(dp, d, 0o644); err != nil {
			t.Fatal(err)
		}
		err := SameDisk(ip, dp)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: SameDisk = %v, want nil", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: SameDisk = %v, want an error saying %q", c.name, err, c.want)
		}
	}
}
