package main

// End-to-end tests of LVM2 and encrypted volumes: a GPT disk whose one
// partition is an LVM2 physical volume made by the real pvcreate, vgcreate,
// lvcreate and lvextend, with two ext4 logical volumes (one in two
// segments) whose free space, like the volume group's unallocated extents,
// holds old data.
//
// This kernel has no device-mapper, so LVM runs with --driverloaded n: it
// writes the metadata, and the test writes each volume's bytes to the
// extents `lvs` reports for it, as dm-linear would. LVM runs with a private
// configuration (LVM_SYSTEM_DIR) whose device filter accepts only the
// test's own loop device, so it never sees the host's volumes; every volume
// group is named after $ASR_LAB_PREFIX.

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// lvmEnv runs LVM commands with a configuration that sees only one device.
type lvmEnv struct {
	t   *testing.T
	dir string
}

// lvmVG makes dir/lvm.img, 128 MiB of random bytes (seed) with one GPT
// partition that is an LVM physical volume of volume group vg (4 MiB
// extents), and returns the disk, the partition's loop device and offset,
// and the LVM environment that sees it.
func lvmVG(t *testing.T, dir, vg string, seed uint64) (disk, dev string, poff int64, l *lvmEnv) {
	t.Helper()
	disk = filepath.Join(dir, "lvm.img")
	fillRandom(t, disk, 128<<20, seed)
	sh(t, "sgdisk", "-Z", disk)
	sh(t, "sgdisk", "-n1:2048:0", "-t1:8e00", disk)
	poff, psize := firstPartition(t, disk)
	dev = partLoop(t, disk, poff, psize, false)
	l = newLVMEnv(t, dev)
	l.run("pvcreate", "-q", dev)
	l.run("vgcreate", "-q", "-s", "4M", vg, dev)
	return disk, dev, poff, l
}

func newLVMEnv(t *testing.T, devs ...string) *lvmEnv {
	t.Helper()
	dir := t.TempDir()
	var accept string
	for _, d := range devs {
		accept += fmt.Sprintf(`"a|^%s$|", `, d)
	}
	conf := fmt.Sprintf(`devices {
	filter = [ %[1]s"r|.*|" ]
	global_filter = [ %[1]s"r|.*|" ]
	use_devicesfile = 0
	obtain_device_list_from_udev = 0
	external_device_info_source = "none"
}
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
}
backup {
	backup = 0
	archive = 0
}
global {
	use_lvmpolld = 0
}
`, accept)
	if err := os.WriteFile(filepath.Join(dir, "lvm.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return &lvmEnv{t: t, dir: dir}
}

func (l *lvmEnv) run(name string, args ...string) string {
	l.t.Helper()
	cmd := exec.Command(name, append([]string{"--driverloaded", "n"}, args...)...)
	cmd.Env = append(os.Environ(), "LVM_SYSTEM_DIR="+l.dir, "LVM_SUPPRESS_FD_WARNINGS=1")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		l.t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// lvSegment is a stretch of a logical volume on the physical volume, in
// bytes: lvOff in the volume, pvOff in the physical volume's device.
type lvSegment struct{ lvOff, pvOff, size int64 }

// segments asks lvs where each volume of vg lies on dev (segments on
// other physical volumes are left out).
func (l *lvmEnv) segments(vg, dev string) map[string][]lvSegment {
	l.t.Helper()
	peStart, err := strconv.ParseInt(strings.TrimSpace(l.run("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", dev)), 10, 64)
	if err != nil {
		l.t.Fatalf("pvs pe_start: %v", err)
	}
	const extent = 4 << 20 // vgcreate -s 4M
	segs := map[string][]lvSegment{}
	out := l.run("lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_name,seg_start,seg_size,seg_pe_ranges", vg)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var name, ranges string
		var start, size, pe0, pe1 int64
		if _, err := fmt.Sscan(line, &name, &start, &size, &ranges); err != nil {
			l.t.Fatalf("lvs line %q: %v", line, err)
		}
		colon := strings.LastIndexByte(ranges, ':')
		if colon < 0 || ranges[:colon] != dev {
			continue
		}
		if _, err := fmt.Sscanf(ranges[colon+1:], "%d-%d", &pe0, &pe1); err != nil || (pe1-pe0+1)*extent != size {
			l.t.Fatalf("lvs line %q: extents %d-%d for %d bytes (%v)", line, pe0, pe1, size, err)
		}
		segs[name] = append(segs[name], lvSegment{lvOff: start, pvOff: peStart + pe0*extent, size: size})
	}
	return segs
}

// vgName is a volume group name unique to this helper's lab and test.
func vgName() string {
	return fmt.Sprintf("%sasrvg%d", os.Getenv("ASR_LAB_PREFIX"), rand.IntN(1<<30))
}

// fillVolume mounts the filesystem image fs, writes old files and deletes
// them, then the files that stay, and unmounts it: its free space holds the
// old data. It returns the listing of its files.
func fillVolume(t *testing.T, fs string, seed uint64) []string {
	t.Helper()
	dev := loop(t, fs)
	mnt := t.TempDir()
	sh(t, "mount", dev, mnt)
	defer exec.Command("umount", mnt).Run()
	for i := range 4 {
		fillRandom(t, filepath.Join(mnt, fmt.Sprintf("old%d", i)), 3<<20, seed*100+uint64(i))
	}
	sh(t, "sync", "-f", mnt)
	for i := range 4 {
		os.Remove(filepath.Join(mnt, fmt.Sprintf("old%d", i)))
	}
	sh(t, "sync", "-f", mnt)
	if err := os.MkdirAll(filepath.Join(mnt, "dir/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		fillRandom(t, filepath.Join(mnt, "dir", fmt.Sprintf("f%02d", i)), int64(20000+i*2000), seed*1000+uint64(i))
	}
	if err := os.WriteFile(filepath.Join(mnt, "dir/sub/text"), []byte(strings.Repeat("lvm text\n", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "umount", mnt)
	return treeDigest(t, dev, "ext4")
}

// copySegments copies a logical volume between its own file and the
// partition at poff of disk: toDisk writes the volume's extents, else they
// are read back into the file.
func copySegments(t *testing.T, lvFile, disk string, poff int64, segs []lvSegment, toDisk bool) {
	t.Helper()
	lf, err := os.OpenFile(lvFile, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	df, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	for _, s := range segs {
		b := make([]byte, s.size)
		var src io.ReaderAt = lf
		var dst io.WriterAt = df
		from, to := s.lvOff, poff+s.pvOff
		if !toDisk {
			src, dst, from, to = df, lf, poff+s.pvOff, s.lvOff
		}
		if _, err := src.ReadAt(b, from); err != nil {
			t.Fatal(err)
		}
		if _, err := dst.WriteAt(b, to); err != nil {
			t.Fatal(err)
		}
	}
}

// lvmDisk makes a 128 MiB GPT disk whose partition 1 (1 MiB to the end)
// was filled with random bytes, then made an LVM2 physical volume holding
// volume group vg with ext4 volumes one (20 MiB, extended by 8 MiB after
// two was made, so in two segments) and two (24 MiB), filled. It returns
// the disk, the volumes' segments and their file listings.
func lvmDisk(t *testing.T, dir, vg string) (string, map[string][]lvSegment, map[string][]string) {
	t.Helper()
	testenv.Require(t, "losetup", "sgdisk", "mkfs.ext4", "e2fsck", "pvcreate", "vgcreate", "lvcreate", "lvextend", "lvs", "pvs", "mount")
	disk, dev, poff, l := lvmVG(t, dir, vg, 77)
	l.run("lvcreate", "-q", "-an", "-Zn", "-L", "20M", "-n", "one", vg)
	l.run("lvcreate", "-q", "-an", "-Zn", "-L", "24M", "-n", "two", vg)
	l.run("lvextend", "-q", "-L", "+8M", vg+"/one")
	segs := l.segments(vg, dev)
	if len(segs["one"]) != 2 || len(segs["two"]) != 1 {
		t.Fatalf("lvs reports segments %v, want two for one and one for two", segs)
	}
	trees := map[string][]string{}
	for i, lv := range []string{"one", "two"} {
		var size int64
		for _, s := range segs[lv] {
			size = max(size, s.lvOff+s.size)
		}
		fs := filepath.Join(dir, lv+".ext4")
		sh(t, "truncate", "-s", fmt.Sprint(size), fs)
		sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", fs)
		trees[lv] = fillVolume(t, fs, uint64(i+1))
		copySegments(t, fs, disk, poff, segs[lv], true)
	}
	return disk, segs, trees
}

func TestE2ELVMImageKeepsOnlyUsedData(t *testing.T) {
	dir := t.TempDir()
	vg := vgName()
	disk, segs, trees := lvmDisk(t, dir, vg)
	if len(trees["one"]) < 40 || len(trees["two"]) < 40 {
		t.Fatalf("the volumes hold %d and %d entries: the test disk is not what this test needs", len(trees["one"]), len(trees["two"]))
	}
	scanned, img, tfile, _ := scanRestore(t, disk, 9)
	for _, want := range []string{"by LVM2 metadata", "by ext4 bitmap", "(LVM2 logical volume " + vg + "/one)", "(LVM2 logical volume " + vg + "/two)", "unallocated physical extents"} {
		if !strings.Contains(scanned, want) {
			t.Errorf("imagescan output lacks %q; got:\n%s", want, scanned)
		}
	}
	if strings.Contains(scanned, "Warning") {
		t.Errorf("imagescan warned about the LVM disk:\n%s", scanned)
	}
	// About 2 x 1.6 MiB of files and the filesystems' metadata, out of
	// 128 MiB of random bytes.
	if st := fileSize(t, img); st > 16<<20 {
		t.Errorf("image is %d bytes, want under 16 MiB: free space or unallocated extents were stored", st)
	}
	info := mustAsr(t, "info", "--source", img)
	if !strings.Contains(info.stdout, "LVM2 metadata") || !strings.Contains(info.stdout, "LVM2 logical volume "+vg+"/one") {
		t.Errorf("asr info does not list the LVM areas; got:\n%s", info.stdout)
	}
	checkFreeNotCopied(t, disk, tfile)

	// LVM, seeing only the restored partition, reads the same volumes;
	// each volume read back from its extents passes e2fsck and holds the
	// same files.
	poff, psize := firstPartition(t, tfile)
	pdev := partLoop(t, tfile, poff, psize, true)
	if got := newLVMEnv(t, pdev).segments(vg, pdev); !reflect.DeepEqual(got, segs) {
		t.Errorf("lvs on the restored disk reports %v, want %v", got, segs)
	}
	for _, lv := range []string{"one", "two"} {
		fs := filepath.Join(dir, lv+".restored")
		copySegments(t, fs, tfile, poff, segs[lv], false)
		if out, err := exec.Command("e2fsck", "-fn", fs).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn on restored volume %s: %v\n%s", lv, err, out)
		}
		if diff := firstDiff(trees[lv], treeDigest(t, loop(t, fs, "-r"), "ext4")); diff != "" {
			t.Errorf("restored volume %s: files differ: %s", lv, diff)
		}
	}
}

// TestE2ELVMTwoPhysicalVolumes: a volume group on two disks. The image of
// the first maps the volume lying wholly on it by its filesystem and keeps
// whole the extents of the volume that spans both, with a note.
func TestE2ELVMTwoPhysicalVolumes(t *testing.T) {
	testenv.Require(t, "losetup", "mkfs.ext4", "e2fsck", "pvcreate", "vgcreate", "lvcreate", "lvs", "pvs", "mount")
	dir := t.TempDir()
	vg := vgName()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	fillRandom(t, a, 64<<20, 31)
	fillRandom(t, b, 64<<20, 32)
	da, db := loop(t, a), loop(t, b)
	l := newLVMEnv(t, da, db)
	l.run("pvcreate", "-q", da, db)
	l.run("vgcreate", "-q", "-s", "4M", vg, da, db)
	l.run("lvcreate", "-q", "-an", "-Zn", "-L", "24M", "-n", "solo", vg, da)
	l.run("lvcreate", "-q", "-an", "-Zn", "-L", "80M", "-n", "span", vg, da, db)
	segs := l.segments(vg, da)
	if len(segs["solo"]) != 1 || len(segs["span"]) != 1 {
		t.Fatalf("lvs reports segments %v on %s, want one of solo and one of span", segs, da)
	}
	fs := filepath.Join(dir, "solo.ext4")
	sh(t, "truncate", "-s", "24M", fs)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", fs)
	tree := fillVolume(t, fs, 5)
	copySegments(t, fs, a, 0, segs["solo"], true)

	img := a + ".asr"
	r := mustAsr(t, "imagescan", "--source", a, "--output", img)
	for _, want := range []string{"(LVM2 logical volume " + vg + "/solo)", "LVM2 logical volume " + vg + "/span: lies partly on another physical volume, kept whole"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("imagescan output lacks %q; got:\n%s", want, r.stdout)
		}
	}
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, fileSize(t, a), 33)
	mustAsr(t, "restore", "--source", img, "--target", loop(t, tfile), "--erase", "--noprompt")
	sp := segs["span"][0]
	if got, want := hashRange(t, tfile, sp.pvOff, sp.size), hashRange(t, a, sp.pvOff, sp.size); got != want {
		t.Errorf("the spanning volume's extents on the first disk were not restored byte for byte")
	}
	restored := filepath.Join(dir, "solo.restored")
	copySegments(t, restored, tfile, 0, segs["solo"], false)
	if out, err := exec.Command("e2fsck", "-fn", restored).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn on the restored volume: %v\n%s", err, out)
	}
	if diff := firstDiff(tree, treeDigest(t, loop(t, restored, "-r"), "ext4")); diff != "" {
		t.Errorf("restored volume solo: files differ: %s", diff)
	}
	checkFreeNotCopied(t, a, tfile)
}

// TestE2ELVMDamagedMetadata: a physical volume whose metadata text fails
// its checksum is copied whole with a warning, one whose label has lost its
// LABELONE magic (no longer a physical volume) as non-zero blocks; both are
// restored byte for byte.
func TestE2ELVMDamagedMetadata(t *testing.T) {
	dir := t.TempDir()
	disk, _, _ := lvmDisk(t, dir, vgName())
	poff, _ := firstPartition(t, disk)
	for _, tt := range []struct {
		name string
		// damage returns where to write what in the disk.
		damage func(f *os.File) (int64, []byte)
		want   []string // what imagescan must say
	}{
		{"metadata text checksum", func(f *os.File) (int64, []byte) {
			// The metadata area starts 4 KiB into the volume; its
			// header's first raw_locn (at byte 40) says where the
			// current text lies in it.
			hdr := make([]byte, 512)
			if _, err := f.ReadAt(hdr, poff+4096); err != nil {
				t.Fatal(err)
			}
			at := poff + 4096 + int64(binary.LittleEndian.Uint64(hdr[40:])) + 1
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, at); err != nil {
				t.Fatal(err)
			}
			return at, []byte{b[0] ^ 0x20}
		}, []string{"Warning: partition 1", "checksum"}},
		{"bad label magic", func(f *os.File) (int64, []byte) {
			sec := make([]byte, 8)
			if _, err := f.ReadAt(sec, poff+512); err != nil || string(sec) != "LABELONE" {
				t.Fatalf("no LABELONE in sector 1 of the physical volume (%q, %v)", sec, err)
			}
			return poff + 512, []byte("LABELTWO")
		}, []string{"non-zero"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.img")
			sh(t, "cp", "--sparse=always", disk, bad)
			f, err := os.OpenFile(bad, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			at, b := tt.damage(f)
			if _, err := f.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if scanned := checkRestoredExact(t, bad, tt.want...); strings.Contains(scanned, "by LVM") {
				t.Errorf("imagescan mapped the damaged physical volume by its LVM metadata; got:\n%s", scanned)
			}
		})
	}
}

// TestE2ELUKS: a LUKS2 volume made by cryptsetup is recognised as
// encrypted by imagescan and info, kept whole, and restored byte for byte.
func TestE2ELUKS(t *testing.T) {
	testenv.Require(t, "cryptsetup", "losetup")
	dir := t.TempDir()
	vol := filepath.Join(dir, "luks.img")
	// Random bytes first: a used volume's ciphertext looks like them
	// (this kernel has no device-mapper to write through dm-crypt), and
	// luksFormat overwrites only its header.
	fillRandom(t, vol, 48<<20, 21)
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("asr test key, not secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4", "--key-file", key, vol)
	img := vol + ".asr"
	r := mustAsr(t, "imagescan", "--source", vol, "--output", img)
	if !strings.Contains(r.stdout, "LUKS2 (encrypted): kept whole") {
		t.Errorf("imagescan did not say the volume is encrypted; got:\n%s", r.stdout)
	}
	info := mustAsr(t, "info", "--source", img)
	if !strings.Contains(info.stdout, "LUKS2 (encrypted): kept whole") {
		t.Errorf("asr info did not say the volume is encrypted; got:\n%s", info.stdout)
	}
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, fileSize(t, vol), 6)
	tdev := loop(t, tfile)
	mustAsr(t, "restore", "--source", img, "--target", tdev, "--erase", "--noprompt")
	n := fileSize(t, vol)
	if got, want := hashRange(t, tdev, 0, n), hashRange(t, vol, 0, n); got != want {
		t.Errorf("restored volume has sha256 %s, want %s (the LUKS volume, byte for byte)", got, want)
	}
	sh(t, "cryptsetup", "luksDump", tdev) // the restored header reads as LUKS
}
