package main

// End-to-end tests of LVM2 and encrypted volumes: a GPT disk whose one
// partition is an LVM2 physical volume made by the real pvcreate, vgcreate
// and lvcreate, with two ext4 logical volumes whose free space, like the
// volume group's unallocated extents, holds old data.
//
// LVM runs with a private configuration (LVM_SYSTEM_DIR) whose device
// filter accepts only the test's own loop device, so it never sees the
// host's volumes, and with udev, backups and monitoring off; every volume
// group is named after $ASR_LAB_PREFIX and the test, and is deactivated
// before its loop device is detached.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// lvmEnv runs LVM commands with a configuration that sees only dev.
type lvmEnv struct {
	t   *testing.T
	dir string
}

func newLVMEnv(t *testing.T, dev string) *lvmEnv {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`devices {
	filter = [ "a|^%[1]s$|", "r|.*|" ]
	global_filter = [ "a|^%[1]s$|", "r|.*|" ]
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
`, dev)
	if err := os.WriteFile(filepath.Join(dir, "lvm.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return &lvmEnv{t: t, dir: dir}
}

func (l *lvmEnv) run(name string, args ...string) string {
	l.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LVM_SYSTEM_DIR="+l.dir, "LVM_SUPPRESS_FD_WARNINGS=1", "DM_DISABLE_UDEV=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// activate activates vg and deactivates it when the test ends (before the
// loop device under it is detached: cleanups run last first).
func (l *lvmEnv) activate(vg string) {
	l.t.Helper()
	l.run("vgchange", "-ay", vg)
	l.t.Cleanup(func() {
		cmd := exec.Command("vgchange", "-an", vg)
		cmd.Env = append(os.Environ(), "LVM_SYSTEM_DIR="+l.dir, "DM_DISABLE_UDEV=1")
		cmd.Run()
	})
}

// vgName is a volume group name unique to this helper's lab and test.
func vgName() string {
	return fmt.Sprintf("%sasrvg%d", os.Getenv("ASR_LAB_PREFIX"), rand.IntN(1<<30))
}

// fillVolume mounts dev, writes old files and deletes them, then the files
// that stay, and unmounts it: its free space holds the old data.
func fillVolume(t *testing.T, dev string, seed uint64) {
	t.Helper()
	mnt := t.TempDir()
	sh(t, "mount", dev, mnt)
	defer exec.Command("umount", mnt).Run()
	for i := range 6 {
		fillRandom(t, filepath.Join(mnt, fmt.Sprintf("old%d", i)), 3<<20, seed*100+uint64(i))
	}
	sh(t, "sync", "-f", mnt)
	for i := range 6 {
		os.Remove(filepath.Join(mnt, fmt.Sprintf("old%d", i)))
	}
	sh(t, "sync", "-f", mnt)
	if err := os.MkdirAll(filepath.Join(mnt, "dir/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		fillRandom(t, filepath.Join(mnt, "dir", fmt.Sprintf("f%02d", i)), int64(20000+i*9000), seed*1000+uint64(i))
	}
	if err := os.WriteFile(filepath.Join(mnt, "dir/sub/text"), []byte(strings.Repeat("lvm text\n", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "umount", mnt)
}

// lvmDisk makes a 128 MiB GPT disk whose partition 1 (1 MiB to the end)
// was filled with random bytes, then made an LVM2 physical volume holding
// volume group vg with ext4 volumes one (40 MiB) and two (24 MiB), filled.
// It returns the disk and the sorted file listings of the two volumes.
func lvmDisk(t *testing.T, dir, vg string) (string, map[string][]string) {
	t.Helper()
	testenv.Require(t, "losetup", "sgdisk", "mkfs.ext4", "e2fsck", "pvcreate", "vgcreate", "lvcreate", "vgchange", "mount")
	disk := filepath.Join(dir, "lvm.img")
	fillRandom(t, disk, 128<<20, 77)
	sh(t, "sgdisk", "-Z", disk)
	sh(t, "sgdisk", "-n1:2048:0", "-t1:8e00", disk)
	poff, psize := firstPartition(t, disk)
	dev := partLoop(t, disk, poff, psize, false)
	l := newLVMEnv(t, dev)
	l.run("pvcreate", "-q", dev)
	l.run("vgcreate", "-q", "-s", "4M", vg, dev)
	l.run("lvcreate", "-q", "-an", "-Zn", "-L", "40M", "-n", "one", vg)
	l.run("lvcreate", "-q", "-an", "-Zn", "-L", "24M", "-n", "two", vg)
	l.activate(vg)
	trees := map[string][]string{}
	for i, lv := range []string{"one", "two"} {
		lvDev := "/dev/mapper/" + vg + "-" + lv
		sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", lvDev)
		fillVolume(t, lvDev, uint64(i+1))
		trees[lv] = treeDigest(t, lvDev, "ext4")
	}
	l.run("vgchange", "-an", vg)
	return disk, trees
}

func TestE2ELVMImageKeepsOnlyUsedData(t *testing.T) {
	dir := t.TempDir()
	vg := vgName()
	disk, trees := lvmDisk(t, dir, vg)
	if len(trees["one"]) < 40 || len(trees["two"]) < 40 {
		t.Fatalf("the volumes hold %d and %d entries: the test disk is not what this test needs", len(trees["one"]), len(trees["two"]))
	}
	img := disk + ".asr"
	r := mustAsr(t, "imagescan", "--source", disk, "--output", img)
	for _, want := range []string{"by LVM2 metadata", "by ext4 bitmap", "(LVM2 logical volume " + vg + "/one)", "(LVM2 logical volume " + vg + "/two)", "unallocated physical extents"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("imagescan output lacks %q; got:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "Warning") {
		t.Errorf("imagescan warned about the LVM disk:\n%s", r.stdout)
	}
	// About 2 x 1.3 MiB of files and the filesystems' metadata, out of
	// 128 MiB of random bytes.
	if st := fileSize(t, img); st > 24<<20 {
		t.Errorf("image is %d bytes, want under 24 MiB: free space or unallocated extents were stored", st)
	}

	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, fileSize(t, disk), 9)
	tdev := loop(t, tfile)
	mustAsr(t, "restore", "--source", img, "--target", tdev, "--erase", "--noprompt")
	checkFreeNotCopied(t, disk, tfile)

	// The restored volume group, seen by an LVM that sees only the
	// restored partition: its volumes pass e2fsck and hold the files.
	poff, psize := firstPartition(t, tfile)
	pdev := partLoop(t, tfile, poff, psize, false)
	l := newLVMEnv(t, pdev)
	l.activate(vg)
	for _, lv := range []string{"one", "two"} {
		lvDev := "/dev/mapper/" + vg + "-" + lv
		if out, err := exec.Command("e2fsck", "-fn", lvDev).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn on restored volume %s: %v\n%s", lv, err, out)
		}
		if diff := firstDiff(trees[lv], treeDigest(t, lvDev, "ext4")); diff != "" {
			t.Errorf("restored volume %s: files differ: %s", lv, diff)
		}
	}
}

// TestE2ELVMDamagedMetadata: a physical volume whose metadata text fails
// its checksum is copied whole with a warning, and restored byte for byte.
func TestE2ELVMDamagedMetadata(t *testing.T) {
	dir := t.TempDir()
	disk, _ := lvmDisk(t, dir, vgName())
	poff, _ := firstPartition(t, disk)
	// The metadata text starts in the metadata area at 4 KiB, after its
	// 512-byte header; the volume group's name is its first word.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, poff+4096+512+1); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, poff+4096+512+1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img := disk + ".asr"
	r := mustAsr(t, "imagescan", "--source", disk, "--output", img)
	if !strings.Contains(r.stdout, "Warning: partition 1") || !strings.Contains(r.stdout, "checksum") {
		t.Errorf("imagescan did not warn that partition 1's LVM metadata fails its checksum; got:\n%s", r.stdout)
	}
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, fileSize(t, disk), 5)
	tdev := loop(t, tfile)
	mustAsr(t, "restore", "--source", img, "--target", tdev, "--erase", "--noprompt")
	n := fileSize(t, disk)
	if got, want := hashRange(t, tdev, 0, n), hashRange(t, disk, 0, n); got != want {
		t.Errorf("restored disk has sha256 %s, want %s (the damaged source, byte for byte)", got, want)
	}
}

// TestE2ELUKS: a LUKS2 volume made by cryptsetup is recognised as
// encrypted by imagescan and info, kept whole, and restored byte for byte.
func TestE2ELUKS(t *testing.T) {
	testenv.Require(t, "cryptsetup", "losetup")
	dir := t.TempDir()
	vol := filepath.Join(dir, "luks.img")
	sh(t, "truncate", "-s", "48M", vol)
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("asr test key, not secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4", "--key-file", key, vol)
	// Some ciphertext beyond the header, as a used volume has.
	name := fmt.Sprintf("%sasrluks%d", os.Getenv("ASR_LAB_PREFIX"), rand.IntN(1<<30))
	sh(t, "cryptsetup", "open", "--key-file", key, vol, name)
	opened := true
	defer func() {
		if opened {
			exec.Command("cryptsetup", "close", name).Run()
		}
	}()
	sh(t, "dd", "if=/dev/zero", "of=/dev/mapper/"+name, "bs=1M", "count=8", "status=none", "conv=fsync")
	sh(t, "cryptsetup", "close", name)
	opened = false

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
