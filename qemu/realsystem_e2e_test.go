package qemu_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// realSystemCache is where testdata/mkrealsys.sh keeps the Debian system it
// builds between runs ($ASR_TEST_CACHE overrides /var/cache/asr-test).
func realSystemCache() string {
	if d := os.Getenv("ASR_TEST_CACHE"); d != "" {
		return filepath.Join(d, "realsys")
	}
	return "/var/cache/asr-test/realsys"
}

// TestMatrixRealSystem is the "real system" row of the VM matrix: a Debian
// 12 system made by mmdebstrap (systemd, Debian's kernel and initramfs,
// GRUB for BIOS on a GPT disk with an ext4 root), as a qcow2 image like a
// cloud image, imaged by asr imagescan, served by nginx, restored by the
// appliance with asr.grow onto a disk 1 GiB larger, then booted from that
// disk by the BIOS. It must reach systemd's multi-user target, and its root
// filesystem must fill the larger disk: the superblock on the disk and the
// size the booted system reports (statfs) both show it grown.
func TestMatrixRealSystem(t *testing.T) {
	testenv.RequireVM(t, "mmdebstrap", "qemu-img", "sgdisk", "partx", "losetup", "mkfs.ext4", "unshare", "nginx", "dnsmasq")
	watch := tailOnFailure(t)
	dir := t.TempDir()

	// The system, built once and cached (3-15 minutes cold, most of it
	// mmdebstrap's downloads and package installs).
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../testdata/mkrealsys.sh", realSystemCache())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		testenv.Unavailable(t, "cannot build the Debian system (testdata/mkrealsys.sh): %v\n%s", err, stderr.String())
	}
	qcow := strings.TrimSpace(string(out))
	t.Logf("the Debian system: %s in %.0f s%s", qcow, time.Since(start).Seconds(), indent(stderr.String()))

	// Its root filesystem as built: the superblock of partition 2.
	raw := filepath.Join(dir, "system.img")
	testenv.Run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow, raw)
	imageSize := testenv.Size(t, raw)
	origBlocks, bs := ext4Blocks(t, raw, partStart(t, raw, 2))
	t.Logf("image: %d MiB disk, root filesystem %d blocks of %d (%d MiB)", imageSize>>20, origBlocks, bs, origBlocks*bs>>20)

	l := newVMLab(t, "rs")
	l.nginx(t)
	start = time.Now()
	testenv.Run(t, testenv.Asr(t), "imagescan", "--source", qcow, "--output", filepath.Join(l.srvDir, "realsys.asr"))
	st, err := os.Stat(filepath.Join(l.srvDir, "realsys.asr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("asr imagescan of the qcow2: %d MiB image in %.0f s", st.Size()>>20, time.Since(start).Seconds())

	const extra = 1 << 30
	target := emptyDisk(t, dir, "target.img", imageSize+extra)
	vm := qemu.StartT(t, "hr-realsys-restore", vmOpts(t, qemu.WithDisk(target), qemu.WithNIC(l.lab, 1),
		// no_timer_check: a busy host can make TCG miss the ticks the
		// kernel counts at boot, and panic it ("IO-APIC + timer").
		qemu.WithAppend("asr.source=http://198.18.0.1:8080/realsys.asr", "asr.grow", "asr.after=poweroff", "no_timer_check"))...)
	watch(vm)
	guest, wall := restoreStarts(t, vm, 5*time.Minute)
	t.Logf("appliance: restore starts %.1f s after power-on (guest clock), %.1f s after QEMU started", guest, wall)
	m, err := vm.Console.Expect(`asr-appliance: RESULT success: .*, verified; grew partition 2 to ([^:]+): filesystem resized to (\d+) blocks`, 20*time.Minute)
	if err != nil {
		t.Fatalf("%s: %v", vm.Name, err)
	}
	t.Logf("appliance: restored and grew partition 2 to %s (%s blocks) %.0f s after QEMU started", m[1], m[2], time.Since(vm.Started).Seconds())
	if err := vm.WaitTimeout(60 * time.Second); err != nil {
		t.Fatalf("after its success line: %v", err)
	}

	// On the disk: partition 2 ends at the last whole MiB before GPT's
	// backup (33 sectors), and its filesystem fills it.
	pstart := partStart(t, target, 2)
	grown, gbs := ext4Blocks(t, target, pstart)
	pend := partEnd(t, target, 2)
	if want := ((pend+1)*512 - pstart) / gbs; grown != want || gbs != bs {
		t.Errorf("restored root filesystem: %d blocks of %d, want %d of %d (partition 2: sectors %d-%d)", grown, gbs, want, bs, pstart/512, pend)
	}
	if want := ((imageSize+extra)/512-33)/2048*2048 - 1; pend != want {
		t.Errorf("partition 2 ends at sector %d, want %d (the last whole MiB before the backup GPT)", pend, want)
	}
	if n, _ := strconv.ParseInt(m[2], 10, 64); n != grown {
		t.Errorf("the appliance said %s blocks; the superblock says %d", m[2], grown)
	}
	if grown-origBlocks < (extra-(1<<20))/bs {
		t.Errorf("root filesystem grew from %d to %d blocks of %d: less than the 1 GiB added", origBlocks, grown, bs)
	}

	// The restored disk boots: GRUB, Debian's kernel and initramfs,
	// systemd to multi-user.target, whose unit reports the root size.
	boot := qemu.StartT(t, "hr-realsys-boot", qemu.WithDiskBoot(), qemu.WithDisk(target))
	watch(boot)
	// systemd stops printing its status lines once the serial getty has
	// the console, so "Reached target multi-user.target" may not show: the
	// unit, ordered after multi-user.target, asks systemctl instead.
	r, err := boot.Console.Expect(`ASR-REALSYS multi-user=(\S+) login=(\S+) root-bytes=(\d+) root-blocks=(\d+) block-size=(\d+)`, 15*time.Minute)
	if err != nil {
		t.Fatalf("the restored system did not reach multi-user.target and report its root filesystem: %v", err)
	}
	t.Logf("restored system: multi-user.target reached and reported %.0f s after power-on (wall, TCG); root filesystem %s bytes (df), %s blocks of %s (statfs)",
		time.Since(boot.Started).Seconds(), r[3], r[4], r[5])
	if r[1] != "active" {
		t.Errorf("multi-user.target is %s in the restored system", r[1])
	}
	// The report waits for agetty to sit at its prompt, so the prompt is
	// on the console before it (a check of the log alone raced the
	// poweroff: agetty starts only once systemd's job queue is idle).
	if prompt := strings.Contains(boot.Console.Log(), "realsys login:"); r[2] != "waiting" || !prompt {
		t.Errorf("no login prompt (serial getty on ttyS0) in the restored system: agetty %s, prompt on the console: %v", r[2], prompt)
	}
	fsBlocks, _ := strconv.ParseInt(r[4], 10, 64)
	fsBS, _ := strconv.ParseInt(r[5], 10, 64)
	// statfs counts the blocks less the filesystem's own metadata: within
	// 5% of the superblock's count, and more than the image's whole size.
	if fsBS != bs || fsBlocks > grown || fsBlocks < grown*95/100 || fsBlocks <= origBlocks {
		t.Errorf("the booted system sees %d blocks of %d; the grown filesystem has %d of %d, the image's %d", fsBlocks, fsBS, grown, bs, origBlocks)
	}
	if err := boot.WaitTimeout(3 * time.Minute); err != nil {
		t.Errorf("the restored system did not power off after its report: %v", err)
	}
}

// partStart is the byte offset of partition n of a disk image (partx).
func partStart(t *testing.T, disk string, n int) int64 {
	t.Helper()
	return partField(t, disk, n, "START") * 512
}

// partEnd is the last sector of partition n.
func partEnd(t *testing.T, disk string, n int) int64 {
	t.Helper()
	return partField(t, disk, n, "END")
}

func partField(t *testing.T, disk string, n int, field string) int64 {
	t.Helper()
	out := testenv.Run(t, "partx", "-g", "-o", field, "-n", fmt.Sprint(n), disk)
	v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("partx %s of partition %d of %s: %q", field, n, disk, out)
	}
	return v
}

// ext4Blocks reads the block count and block size from the ext2/3/4
// superblock of the filesystem at off of disk.
func ext4Blocks(t *testing.T, disk string, off int64) (blocks, blockSize int64) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, off+1024); err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		t.Fatalf("%s: no ext4 superblock at byte %d", disk, off+1024)
	}
	blocks = int64(binary.LittleEndian.Uint32(sb[4:]))
	if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= int64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	return blocks, 1024 << binary.LittleEndian.Uint32(sb[24:])
}

// indent is a tool's stderr for the test's log, one line each.
func indent(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return "\n    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// tailOnFailure makes the last lines of each watched VM's console the very
// last thing a failed test prints. CI shows only the end of a failed
// test's output, where the lab's server logs (printed after the consoles,
// their cleanups having been registered first) would otherwise hide what
// the machine said. Call it before anything else registers a cleanup.
func tailOnFailure(t *testing.T) (watch func(*qemu.VM)) {
	var vms []*qemu.VM
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, vm := range vms {
			lines := strings.Split(strings.TrimRight(vm.Console.Log(), "\n"), "\n")
			t.Logf("the end of %s's console:\n%s", vm.Name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
	})
	return func(vm *qemu.VM) { vms = append(vms, vm) }
}
