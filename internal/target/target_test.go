package target

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckNew(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "a.raw")
	os.WriteFile(existing, []byte("keep"), 0o644)
	for _, c := range []struct {
		path      string
		overwrite bool
		want      string
	}{
		{filepath.Join(dir, "new.raw"), false, ""},
		{existing, false, "already exists"},
		{existing, true, ""},
		{filepath.Join(dir, "no", "such", "x.raw"), false, "does not exist"},
		{dir, true, "not a regular file"},
	} {
		err := CheckNew(c.path, c.overwrite)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckNew(%s, %v) = %v, want %q", c.path, c.overwrite, err, c.want)
		}
	}
}

func TestMountInfoUnescape(t *testing.T) {
	if got := unescape(`/mnt/with\040space`); got != "/mnt/with space" {
		t.Errorf("unescape = %q, want %q", got, "/mnt/with space")
	}
	dir := t.TempDir()
	mi := filepath.Join(dir, "mountinfo")
	os.WriteFile(mi, []byte("36 35 7:3 / /mnt/a\\040b rw - ext4 /dev/loop3 rw\n"), 0o644)
	ms, err := System{MountInfo: mi}.mounts()
	if err != nil || len(ms) != 1 || ms[0].point != "/mnt/a b" || ms[0].dev != unix.Mkdev(7, 3) || ms[0].source != "/dev/loop3" {
		t.Errorf("mounts() = %+v, %v", ms, err)
	}
}
