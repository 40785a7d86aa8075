package initramfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/u-root/mkuimage/cpio"
)

// TestTools: a program is carried with its ELF interpreter and every
// library it loads, directly or through another library; a program the
// machine lacks is named, not an error.
func TestTools(t *testing.T) {
	testenv.RequireTools(t, "e2fsck")
	s, err := Tools("/", []string{"/usr/sbin/e2fsck", "/usr/sbin/no-such-tool"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Programs, []string{"/usr/sbin/e2fsck"}) || !slices.Equal(s.Missing, []string{"/usr/sbin/no-such-tool"}) {
		t.Errorf("programs %v, missing %v", s.Programs, s.Missing)
	}
	for _, want := range []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libext2fs.so.2", "/lib/x86_64-linux-gnu/libblkid.so.1"} {
		if !slices.Contains(s.Libraries, want) {
			t.Errorf("e2fsck's libraries %v lack %s", s.Libraries, want)
		}
	}
	if _, err := Tools("/", []string{"usr/sbin/e2fsck"}); err == nil {
		t.Errorf("a relative path was taken")
	}
}

// TestGrowToolsRun builds the initramfs and runs each grow tool it carries
// from the unpacked archive (chroot), so that a missing library shows as
// the loader's error here rather than on a machine being imaged: e2fsck
// and resize2fs check and grow a real ext4 image inside it, the others
// print their version. It logs what the tools add to the initramfs.
func TestGrowToolsRun(t *testing.T) {
	testenv.RequireTools(t, "mkfs.ext4", "chroot", "e2fsck", "resize2fs", "losetup", "mount", "ntfsresize", "xfs_growfs", "btrfs", "resize.f2fs")
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "chroot needs root")
	}
	k, err := FindKernel("/", "")
	if err != nil {
		testenv.Unavailable(t, "needs an installed kernel: %v", err)
	}
	dir := t.TempDir()
	with, err := Build(Options{Output: filepath.Join(dir, "with.cpio.gz"), Kernel: k, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	without, err := Build(Options{Output: filepath.Join(dir, "without.cpio.gz"), Kernel: k, Version: "test", NoGrowTools: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initramfs: %.2f MiB with the grow tools (%d programs, %d libraries, modules %v), %.2f MiB without: +%.2f MiB",
		float64(with.Size)/(1<<20), len(with.Tools), len(with.ToolLibraries), GrowModules, float64(without.Size)/(1<<20), float64(with.Size-without.Size)/(1<<20))
	if len(with.MissingTools) > 0 || len(with.Tools) != len(GrowTools) {
		t.Fatalf("tools carried %v, missing %v", with.Tools, with.MissingTools)
	}
	if len(without.Tools) > 0 || without.Size >= with.Size {
		t.Errorf("NoGrowTools carried %v (%d bytes against %d)", without.Tools, without.Size, with.Size)
	}
	gz, err := os.ReadFile(with.Path)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, gz)
	for _, m := range GrowModules {
		if !slices.ContainsFunc(with.Modules, func(n string) bool { return n == m }) {
			t.Errorf("module %s not carried: %v", m, with.Modules)
		}
	}
	root := filepath.Join(dir, "root")
	for name, f := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch f.Mode & cpio.S_IFMT {
		case cpio.S_IFREG:
			err = os.WriteFile(p, f.data, os.FileMode(f.Mode&0o777))
		case cpio.S_IFLNK:
			err = os.Symlink(string(f.data), p)
		case cpio.S_IFDIR:
			err = os.MkdirAll(p, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(root, "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "mkfs.ext4", "-q", "-F", img, "16M")
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"/usr/sbin/e2fsck", "-f", "-p", "/fs.img"},
		{"/usr/sbin/resize2fs", "/fs.img"},
		{"/usr/sbin/losetup", "--version"},
		{"/usr/bin/mount", "--version"},
		{"/usr/bin/umount", "--version"},
		{"/usr/sbin/ntfsresize", "--version"},
		{"/usr/sbin/xfs_growfs", "-V"},
		{"/usr/bin/btrfs", "--version"},
		{"/usr/sbin/resize.f2fs", "-V"},
	} {
		// /proc as the appliance has it (e2fsck looks at etc/mtab, a
		// link to /proc/self/mounts), in a mount namespace of its own.
		out, err := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`mount -t proc proc "$0/proc" && exec chroot "$0" "$@"`, root}, c...)...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "error while loading shared libraries") {
			t.Errorf("%s in the initramfs: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	if out := testenv.Run(t, "dumpe2fs", "-h", img); !strings.Contains(out, "Block count:              65536") {
		t.Errorf("the carried resize2fs did not grow the 16 MiB filesystem to 64 MiB:\n%s", out)
	}
}
