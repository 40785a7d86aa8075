package filecopy

// Unit tests on temporary trees, as any user: the source under the test's
// temporary folder, the target on /dev/shm (tmpfs), because a plan refuses
// two folders of one volume.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// twoVolumes returns an empty source folder and an empty target folder on
// another filesystem, or skips when the machine has no tmpfs at /dev/shm.
func twoVolumes(t *testing.T) (src, dst string) {
	t.Helper()
	src = t.TempDir()
	dst, err := os.MkdirTemp("/dev/shm", "asr-filecopy-test-")
	if err != nil {
		t.Skipf("no writable /dev/shm for a target on another volume: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dst) })
	var a, b unix.Stat_t
	if unix.Stat(src, &a) != nil || unix.Stat(dst, &b) != nil || a.Dev == b.Dev {
		t.Skipf("%s and %s are on one volume: a plan needs two", src, dst)
	}
	return src, dst
}

// tree makes files under root: a path ending in / is a folder, "->X" a
// symlink to X, "=X" a hard link to X, "|" a FIFO, else a file holding the
// text.
func tree(t *testing.T, root string, items [][2]string) {
	t.Helper()
	for _, it := range items {
		p := filepath.Join(root, it[0])
		var err error
		switch v := it[1]; {
		case strings.HasSuffix(it[0], "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(v, "->"):
			err = os.Symlink(v[2:], p)
		case strings.HasPrefix(v, "="):
			err = os.Link(filepath.Join(root, v[1:]), p)
		case v == "|":
			err = unix.Mkfifo(p, 0o644)
		default:
			err = os.WriteFile(p, []byte(v), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// sparse writes a file of a 1 MiB hole then 4 KiB of data.
func sparse(t *testing.T, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte("d"), 4096), 1<<20); err != nil {
		t.Fatal(err)
	}
}

func sampleTrees(t *testing.T) (src, dst string) {
	src, dst = twoVolumes(t)
	tree(t, src, [][2]string{
		{"etc/", ""}, {"etc/hosts", "127.0.0.1 new\n"}, {"etc/new.conf", "x"},
		{"bin/", ""}, {"bin/tool", strings.Repeat("t", 4096)}, {"bin/tool2", "=bin/tool"},
		{"lib", "->usr/lib"}, {"data", "a file where the target has a folder"}, {"fifo", "|"},
	})
	sparse(t, filepath.Join(src, "sparse.img"))
	if err := os.Chmod(filepath.Join(src, "bin/tool"), 0o755); err != nil {
		t.Fatal(err)
	}
	tree(t, dst, [][2]string{
		{"etc/", ""}, {"etc/hosts", "127.0.0.1 old\n"}, {"etc/local.conf", "mine"},
		{"data/", ""}, {"data/a", "a"}, {"data/b", "b"},
		{"home/", ""}, {"home/x", "x"},
	})
	return src, dst
}

// TestPlanCounts: the plan says, before anything is written, what the copy
// will replace, add, keep and remove, and how much data it moves.
func TestPlanCounts(t *testing.T) {
	src, dst := sampleTrees(t)
	before := snapshot(t, dst)
	p, err := NewPlan(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	got := [5]int{p.Items, p.Replaced, p.Added, p.Kept, p.Removed}
	// Replaced: etc, etc/hosts, data (a folder on the target). Added:
	// etc/new.conf, bin, bin/tool, bin/tool2, lib, fifo, sparse.img. Kept:
	// etc/local.conf, home. Removed: data/a and data/b.
	if want := [5]int{10, 3, 7, 2, 2}; got != want {
		t.Errorf("NewPlan: items, replaced, added, kept, removed = %v, want %v", got, want)
	}
	// The hard link's data is counted once.
	if want := int64(len("127.0.0.1 new\n") + 1 + 4096 + 1<<20 + 4096 + len("a file where the target has a folder")); p.Bytes != want {
		t.Errorf("Bytes = %d, want %d", p.Bytes, want)
	}
	if p.Need <= 0 || p.FAT || len(p.Unsupported) != 0 || len(p.SkippedMounts) != 0 {
		t.Errorf("plan = %+v, want Need > 0 and no FAT, unsupported items or mounts", p)
	}
	if after := snapshot(t, dst); after != before {
		t.Errorf("NewPlan changed the target:\nbefore %s\nafter  %s", before, after)
	}
}

// TestCopyAndVerify: the target ends up with the source's items, keeps
// its own, and Verify passes; a changed file afterwards fails Verify,
// naming it.
func TestCopyAndVerify(t *testing.T) {
	src, dst := sampleTrees(t)
	p, err := NewPlan(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var copied int64
	if err := p.Copy(ctx, Options{Workers: 3, Progress: func(n int64) { copied += n }}); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(ctx, Options{Workers: 3}); err != nil {
		t.Fatalf("Verify after Copy: %v", err)
	}
	for name, want := range map[string]string{
		"etc/hosts": "127.0.0.1 new\n", "etc/local.conf": "mine", "home/x": "x",
		"data": "a file where the target has a folder",
	} {
		if b, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(dst, "lib")); err != nil || l != "usr/lib" {
		t.Errorf("lib -> %q, %v; want usr/lib", l, err)
	}
	var a, b unix.Stat_t
	if unix.Stat(filepath.Join(dst, "bin/tool"), &a) != nil || unix.Stat(filepath.Join(dst, "bin/tool2"), &b) != nil ||
		a.Ino != b.Ino || a.Mode&0o777 != 0o755 {
		t.Errorf("bin/tool and bin/tool2: inodes %d, %d, mode %o; want one inode, mode 755", a.Ino, b.Ino, a.Mode&0o777)
	}
	var sp unix.Stat_t
	if unix.Stat(filepath.Join(dst, "sparse.img"), &sp) != nil || sp.Size != 1<<20+4096 || sp.Blocks*512 >= 1<<20 {
		t.Errorf("sparse.img: size %d, %d bytes allocated; want %d with the hole kept", sp.Size, sp.Blocks*512, 1<<20+4096)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dst, "*", tmpPrefix+"*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	if err := os.WriteFile(filepath.Join(dst, "etc/new.conf"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = p.Verify(ctx, Options{})
	var ie *ItemError
	if !errors.As(err, &ie) || ie.Item != "etc/new.conf" {
		t.Errorf("Verify after a change = %v, want an ItemError for etc/new.conf", err)
	}
}

func TestPlanRefuses(t *testing.T) {
	src, dst := twoVolumes(t)
	file := filepath.Join(src, "f")
	tree(t, src, [][2]string{{"f", "x"}, {"sub/", ""}})
	for _, c := range []struct{ src, dst, want string }{
		{src, filepath.Join(src, "sub"), "on the same volume"},
		{file, dst, "both must be directories"},
		{filepath.Join(src, "missing"), dst, "no such file"},
	} {
		if _, err := NewPlan(c.src, c.dst); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPlan(%s, %s) = %v, want %q", c.src, c.dst, err, c.want)
		}
	}
}

// snapshot lists a tree's paths, sizes and modes, to see that it is
// unchanged.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d;", p, fi.Mode(), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
