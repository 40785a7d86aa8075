package main

// End-to-end tests of the file-copy restore (asr restore without --erase) on
// real ext4 volumes on loop devices. Each volume is a 64 MiB ext4 image file,
// filled through a loop device mounted by the test and unmounted before asr
// runs, so asr mounts the volumes itself as it would on the appliance.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/testenv"
)

const volSize = 64 << 20

func requireVolumes(t *testing.T) { testenv.Require(t, "losetup", "mkfs.ext4", "chattr", "sgdisk") }

// ext4Volume makes an ext4 image file and, if fill is set, mounts it on a
// temporary folder, calls fill with that folder, and unmounts it.
func ext4Volume(t *testing.T, dir, name string, size int64, fill func(root string)) string {
	t.Helper()
	img := filepath.Join(dir, name)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", img)
	if fill != nil {
		withMounted(t, loop(t, img), fill)
	}
	return img
}

// withMounted mounts dev on a temporary folder for the span of fn.
func withMounted(t *testing.T, dev string, fn func(root string)) {
	t.Helper()
	mnt := t.TempDir()
	sh(t, "mount", dev, mnt)
	defer func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Fatalf("unmounting %s: %v", mnt, err)
		}
	}()
	fn(mnt)
}

// when is a fixed time for the files the tests make, so their times are
// checked against a known value.
func when(days int) time.Time {
	return time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC).AddDate(0, 0, days)
}

func writeFile(t *testing.T, p, content string, mode os.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// acl is a system.posix_acl_access value: owner rwx, user 1000 r-x, group
// r-x, mask r-x, others ---.
func acl() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range [][3]uint32{{1, 7, 0xffffffff}, {2, 5, 1000}, {4, 5, 0xffffffff}, {0x10, 5, 0xffffffff}, {0x20, 0, 0xffffffff}} {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// fillSource makes the source tree: plain files, owners and modes, a
// symlink, hard links, xattrs, an ACL, a sparse file, a FIFO, a device node.
func fillSource(t *testing.T, root string) {
	t.Helper()
	writeFile(t, filepath.Join(root, "etc/hostname"), "lab-pc\n", 0o644, when(1))
	writeFile(t, filepath.Join(root, "etc/shadow"), "root:*:1:0:99999:7:::\n", 0o640, when(2))
	writeFile(t, filepath.Join(root, "usr/bin/tool"), strings.Repeat("binary ", 50000), 0o4755, when(3))
	writeFile(t, filepath.Join(root, "replace-me"), "new content from the source\n", 0o600, when(-100)) // older than the target's
	writeFile(t, filepath.Join(root, "was-a-dir"), "a file where the target has a folder\n", 0o644, when(4))
	writeFile(t, filepath.Join(root, "was-a-file/inside"), "a folder where the target has a file\n", 0o644, when(5))
	must(t, os.Chown(filepath.Join(root, "etc/shadow"), 0, 42))
	must(t, os.Chown(filepath.Join(root, "usr/bin/tool"), 1000, 1000))
	must(t, unix.Chmod(filepath.Join(root, "usr/bin/tool"), 0o4755)) // after chown, which clears setuid
	must(t, os.Symlink("../usr/bin/tool", filepath.Join(root, "etc/tool-link")))
	must(t, os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool-hardlink")))
	must(t, os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "etc/tool-hardlink2")))
	must(t, unix.Setxattr(filepath.Join(root, "etc/hostname"), "user.asr.note", []byte("kept by asr"), 0))
	must(t, unix.Setxattr(filepath.Join(root, "etc/hostname"), "trusted.asr.t", []byte{0, 1, 2, 255}, 0))
	must(t, os.MkdirAll(filepath.Join(root, "srv/shared"), 0o750))
	must(t, unix.Setxattr(filepath.Join(root, "srv/shared"), "system.posix_acl_access", acl(), 0))
	// A 32 MiB file with 8 KiB of data at 1 MiB and 4 KiB at the very end.
	sp, err := os.Create(filepath.Join(root, "var/sparse.img"))
	if os.IsNotExist(err) {
		must(t, os.MkdirAll(filepath.Join(root, "var"), 0o755))
		sp, err = os.Create(filepath.Join(root, "var/sparse.img"))
	}
	must(t, err)
	must(t, sp.Truncate(32<<20))
	_, err = sp.WriteAt([]byte(strings.Repeat("S", 8192)), 1<<20)
	must(t, err)
	_, err = sp.WriteAt([]byte(strings.Repeat("E", 4096)), 32<<20-4096)
	must(t, err)
	must(t, sp.Close())
	must(t, unix.Mkfifo(filepath.Join(root, "var/fifo"), 0o620))
	must(t, unix.Mknod(filepath.Join(root, "var/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Chmod(filepath.Join(root, "var/fifo"), 0o620)) // past the umask
	must(t, unix.Chmod(filepath.Join(root, "var/null"), 0o666))
	for i := range 200 {
		writeFile(t, filepath.Join(root, fmt.Sprintf("many/f%03d", i)), strings.Repeat(fmt.Sprint(i), i*37), 0o644, when(i))
	}
	// Directory times last: adding entries changed them.
	for _, d := range []string{"etc", "usr/bin", "usr", "srv/shared", "srv", "var", "many", "was-a-file"} {
		must(t, os.Chtimes(filepath.Join(root, d), when(7), when(7)))
	}
}

// fillTarget makes the target's tree before the restore: items to keep,
// same-name items to replace (newer than the source's), a folder the
// source replaces with a file, and a file it replaces with a folder.
func fillTarget(t *testing.T, root string) {
	t.Helper()
	writeFile(t, filepath.Join(root, "home/alice/notes.txt"), "alice's data, to keep\n", 0o600, when(10))
	writeFile(t, filepath.Join(root, "etc/hostname"), "old-name\n", 0o666, when(200))
	writeFile(t, filepath.Join(root, "etc/local.conf"), "a local setting, to keep\n", 0o644, when(11))
	writeFile(t, filepath.Join(root, "replace-me"), "old content, newer than the source's\n", 0o644, when(300))
	writeFile(t, filepath.Join(root, "was-a-dir/old/deep"), "inside a folder the source replaces by a file\n", 0o644, when(12))
	writeFile(t, filepath.Join(root, "was-a-file"), "a file the source replaces by a folder\n", 0o644, when(13))
	must(t, os.Chown(filepath.Join(root, "home/alice/notes.txt"), 1001, 1001))
	must(t, unix.Setxattr(filepath.Join(root, "etc/hostname"), "user.old", []byte("gone after the restore"), 0))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tree describes every item under root (except lost+found, which mkfs
// makes): kind, mode, owner, mtime, size, content hash, link target,
// device number, xattrs, and which hard-link group it belongs to.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	groups := map[uint64]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "lost+found" {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		d := fmt.Sprintf("mode=%o uid=%d gid=%d mtime=%d.%09d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			d += fmt.Sprintf(" size=%d sha256=%s", st.Size, fileHash(t, p))
			if st.Nlink > 1 {
				if _, ok := groups[st.Ino]; !ok {
					groups[st.Ino] = rel
				}
				d += " linked-with=" + groups[st.Ino]
			}
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			d += " -> " + l
		case unix.S_IFCHR, unix.S_IFBLK:
			d += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		d += " xattrs=" + xattrs(t, p)
		out[rel] = d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileHash(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func xattrs(t *testing.T, p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listing xattrs of %s: %v", p, err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("reading xattr %s of %s: %v", name, p, err)
		}
		fmt.Fprintf(&b, "%s=%x;", name, v[:m])
	}
	return b.String()
}

// expected is what the target must hold after laying src over tgt: every
// source item; every target item not under a source item's name, except
// what was inside a target folder that a source non-folder replaced.
func expected(src, tgt map[string]string) map[string]string {
	want := map[string]string{}
	for k, v := range src {
		want[k] = v
	}
	for k, v := range tgt {
		if _, ok := src[k]; ok {
			continue
		}
		replaced := false
		for dir := filepath.Dir(k); dir != "."; dir = filepath.Dir(dir) {
			var mode uint32
			if s, ok := src[dir]; ok {
				if _, err := fmt.Sscanf(s, "mode=%o", &mode); err == nil && mode&unix.S_IFMT != unix.S_IFDIR {
					replaced = true
				}
			}
		}
		if !replaced {
			want[k] = v
		}
	}
	return want
}

func compareTrees(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("target lacks %s (want %s)", k, w)
		} else if g != w {
			t.Errorf("target %s:\n  got  %s\n  want %s", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("target holds unexpected %s (%s)", k, g)
		}
	}
}

func noAsrMounts(t *testing.T) {
	t.Helper()
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "/asr-source-") || strings.Contains(l, "/asr-target-") {
			t.Errorf("asr left a mount behind: %s", l)
		}
	}
}

// TestE2EFileCopyLaysSourceOverTarget: the target keeps its own items, gets
// every source item (replacing same-name ones whatever their age, a folder by
// a file and a file by a folder), and ends up exactly as the reference tree
// built from both says, content and metadata. The source is given as a raw
// image, a prepared image, a read-only block device, and a read-only
// mounted volume (with the target given as the folder it is mounted on).
func TestE2EFileCopyLaysSourceOverTarget(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	srcImg := ext4Volume(t, dir, "source.img", volSize, func(r string) { fillSource(t, r) })
	var srcTree map[string]string
	withMounted(t, loop(t, srcImg, "-r"), func(r string) { srcTree = tree(t, r) })
	prepared := scan(t, srcImg)
	// mountedRO mounts the source read-only for the span of the test.
	mountedRO := func(t *testing.T) string {
		mnt := t.TempDir()
		sh(t, "mount", "-o", "ro", loop(t, srcImg, "-r"), mnt)
		t.Cleanup(func() { unix.Unmount(mnt, 0) })
		return mnt
	}
	for _, c := range []struct {
		name      string
		source    func(t *testing.T) string
		targetDir bool // give the target as the folder it is mounted on
	}{
		{"raw image", func(*testing.T) string { return srcImg }, false},
		{"prepared image", func(*testing.T) string { return prepared }, false},
		{"block device", func(t *testing.T) string { return loop(t, srcImg, "-r") }, false},
		{"mounted volumes", mountedRO, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tgtImg := ext4Volume(t, t.TempDir(), "target.img", volSize, func(r string) { fillTarget(t, r) })
			tgt := loop(t, tgtImg)
			var before map[string]string
			withMounted(t, tgt, func(r string) { before = tree(t, r) })

			var r result
			if c.targetDir {
				withMounted(t, tgt, func(dir string) { r = mustAsr(t, "restore", "--source", c.source(t), "--target", dir) })
			} else {
				r = mustAsr(t, "restore", "--source", c.source(t), "--target", tgt)
			}
			noAsrMounts(t)
			// The summary: 6 replaced (lost+found, etc, etc/hostname,
			// replace-me, was-a-dir, was-a-file), the rest added, 2 kept
			// (home, etc/local.conf).
			for _, want := range []string{"Verified", ": 6 replaced, ", " added, 2 kept"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("output lacks %q:\n%s", want, r.stdout)
				}
			}
			withMounted(t, tgt, func(root string) {
				compareTrees(t, tree(t, root), expected(srcTree, before))
				// The sparse file kept its holes: 12 KiB of data, not 32 MiB.
				var st unix.Stat_t
				must(t, unix.Stat(filepath.Join(root, "var/sparse.img"), &st))
				if st.Blocks*512 > 64<<10 {
					t.Errorf("var/sparse.img takes %d bytes on the target, want its 12 KiB of data (holes kept)", st.Blocks*512)
				}
			})
		})
	}
}

// TestE2EFileCopyPreservesSpecialItems checks each special kind of item on
// the target by itself: hard links share an inode, the symlink points where
// it did, xattrs and the ACL are there, the sparse file is sparse, the FIFO
// and the device node are what they were, setuid survived the chown.
func TestE2EFileCopyPreservesSpecialItems(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	srcImg := ext4Volume(t, dir, "source.img", volSize, func(r string) { fillSource(t, r) })
	tgt := loop(t, ext4Volume(t, dir, "target.img", volSize, nil))
	mustAsr(t, "restore", "--source", srcImg, "--target", tgt)
	withMounted(t, tgt, func(root string) {
		var a, b, c unix.Stat_t
		must(t, unix.Lstat(filepath.Join(root, "usr/bin/tool"), &a))
		must(t, unix.Lstat(filepath.Join(root, "usr/bin/tool-hardlink"), &b))
		must(t, unix.Lstat(filepath.Join(root, "etc/tool-hardlink2"), &c))
		if a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3 {
			t.Errorf("hard links: inodes %d, %d, %d with %d links; want one inode with 3 links", a.Ino, b.Ino, c.Ino, a.Nlink)
		}
		if a.Mode&0o7777 != 0o4755 || a.Uid != 1000 || a.Gid != 1000 {
			t.Errorf("usr/bin/tool: mode %o owner %d:%d, want 4755 1000:1000", a.Mode&0o7777, a.Uid, a.Gid)
		}
		if l, err := os.Readlink(filepath.Join(root, "etc/tool-link")); err != nil || l != "../usr/bin/tool" {
			t.Errorf("etc/tool-link -> %q (%v), want ../usr/bin/tool", l, err)
		}
		v := make([]byte, 256)
		if n, err := unix.Getxattr(filepath.Join(root, "etc/hostname"), "user.asr.note", v); err != nil || string(v[:n]) != "kept by asr" {
			t.Errorf("etc/hostname user.asr.note = %q (%v), want \"kept by asr\"", v[:max(n, 0)], err)
		}
		if n, err := unix.Getxattr(filepath.Join(root, "srv/shared"), "system.posix_acl_access", v); err != nil || string(v[:n]) != string(acl()) {
			t.Errorf("srv/shared ACL = %x (%v), want %x", v[:max(n, 0)], err, acl())
		}
		var sp unix.Stat_t
		must(t, unix.Stat(filepath.Join(root, "var/sparse.img"), &sp))
		if sp.Size != 32<<20 || sp.Blocks*512 > 64<<10 {
			t.Errorf("var/sparse.img: %d bytes taking %d; want 32 MiB taking about 12 KiB", sp.Size, sp.Blocks*512)
		}
		var fifo, null unix.Stat_t
		must(t, unix.Lstat(filepath.Join(root, "var/fifo"), &fifo))
		must(t, unix.Lstat(filepath.Join(root, "var/null"), &null))
		if fifo.Mode != unix.S_IFIFO|0o620 {
			t.Errorf("var/fifo mode %o, want a FIFO with 620", fifo.Mode)
		}
		if null.Mode != unix.S_IFCHR|0o666 || null.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("var/null mode %o rdev %d:%d, want a character device 1:3", null.Mode, unix.Major(null.Rdev), unix.Minor(null.Rdev))
		}
	})
}

// TestE2EFileCopyRefusals: what must be refused is refused before anything
// changes, with a message that says why.
func TestE2EFileCopyRefusals(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	srcImg := ext4Volume(t, dir, "source.img", volSize, func(r string) { fillSource(t, r) })

	// A target with 256 KiB free, too little for the source's 2 MB of data.
	fullImg := ext4Volume(t, dir, "full.img", volSize, func(r string) {
		var fs unix.Statfs_t
		must(t, unix.Statfs(r, &fs))
		f, err := os.Create(filepath.Join(r, "ballast"))
		must(t, err)
		must(t, unix.Fallocate(int(f.Fd()), 0, 0, int64(fs.Bavail)*fs.Bsize-256<<10))
		f.Close()
	})
	full := loop(t, fullImg)

	// A source mounted read-write.
	rwDev := loop(t, ext4Volume(t, dir, "rw.img", volSize, nil))
	rwMnt := t.TempDir()
	sh(t, "mount", rwDev, rwMnt)
	t.Cleanup(func() { unix.Unmount(rwMnt, 0) })
	tgt := loop(t, ext4Volume(t, dir, "target.img", volSize, nil))

	// A disk image with two partitions, raw and prepared.
	twoParts := filepath.Join(dir, "two.img")
	must(t, os.WriteFile(twoParts, nil, 0o644))
	must(t, os.Truncate(twoParts, 8<<20))
	sh(t, "sgdisk", "-n1:2048:+2M", "-n2:0:0", twoParts)
	twoPrepared := scan(t, twoParts)

	cases := []struct {
		name   string
		args   []string
		device string // must be unchanged afterwards
		want   string
	}{
		{"full target", []string{"--source", srcImg, "--target", full}, full, "free up"},
		{"running root as target", []string{"--source", srcImg, "--target", "/"}, tgt, "running system's root"},
		{"source mounted read-write", []string{"--source", rwMnt, "--target", tgt}, tgt, "mounted read-write"},
		{"source device mounted read-write", []string{"--source", rwDev, "--target", tgt}, tgt, "mounted read-write"},
		{"source is the target", []string{"--source", tgt, "--target", tgt}, tgt, "same volume"},
		{"source with two partitions", []string{"--source", twoParts, "--target", tgt}, tgt, "is a disk image with 2 partitions"},
		{"prepared image with two partitions", []string{"--source", twoPrepared, "--target", tgt}, tgt, "holds a disk with several partitions"},
		{"target without a filesystem", []string{"--source", srcImg, "--target", loop(t, writeZeros(t, dir, "blank.img"))}, "", "holds no filesystem"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before string
			if c.device != "" {
				before = hashRange(t, c.device, 0, fileSize(t, c.device))
			}
			r := asr(t, append([]string{"restore"}, c.args...)...)
			if r.code != 1 || r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Errorf("asr restore %v: exit %d, %v; want exit 1 saying %q", c.args, r.code, r.err, c.want)
			}
			if c.device != "" && hashRange(t, c.device, 0, fileSize(t, c.device)) != before {
				t.Errorf("refused restore changed %s", c.device)
			}
			noAsrMounts(t)
		})
	}
}

func writeZeros(t *testing.T, dir, name string) string {
	p := filepath.Join(dir, name)
	must(t, os.WriteFile(p, make([]byte, 1<<20), 0o644))
	return p
}

// TestE2EFileCopyFailureNamesItem: a copy that fails midway (here an
// immutable folder on the target refuses the new item) names the item, and
// leaves every item either as it was or complete, with no temporary files.
func TestE2EFileCopyFailureNamesItem(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	srcImg := ext4Volume(t, dir, "source.img", volSize, func(r string) { fillSource(t, r) })
	var srcTree map[string]string
	withMounted(t, loop(t, srcImg, "-r"), func(r string) { srcTree = tree(t, r) })
	tgt := loop(t, ext4Volume(t, dir, "target.img", volSize, func(r string) {
		fillTarget(t, r)
		must(t, os.MkdirAll(filepath.Join(r, "usr/bin"), 0o755))
		sh(t, "chattr", "+i", filepath.Join(r, "usr/bin"))
	}))
	var before map[string]string
	withMounted(t, tgt, func(r string) { before = tree(t, r) })

	res := asr(t, "restore", "--source", srcImg, "--target", tgt)
	if res.code != 1 || res.err == nil || !strings.Contains(res.err.Error(), "/usr/bin/tool") {
		t.Errorf("restore into an immutable folder: exit %d, %v; want exit 1 naming /usr/bin/tool", res.code, res.err)
	}
	noAsrMounts(t)
	withMounted(t, tgt, func(root string) {
		defer sh(t, "chattr", "-i", filepath.Join(root, "usr/bin"))
		for k, g := range tree(t, root) {
			if strings.Contains(filepath.Base(k), ".asr-tmp-") {
				t.Errorf("temporary file %s left behind", k)
			}
			if fi, err := os.Lstat(filepath.Join(root, k)); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			// A file is the target's old one or the source's whole new one
			// (its metadata may still be the old folder's for directories).
			if g != before[k] && g != srcTree[k] && !strings.Contains(srcTree[k], "linked-with") {
				t.Errorf("%s is neither the old item nor the source's:\n  got %s\n  old %s\n  new %s", k, g, before[k], srcTree[k])
			}
		}
	})
}
