package qemu_test

// The USB toolkit stick (initramfs/mkusb.sh): a VM boots by its firmware from the
// stick, attached as a USB disk, and restores its empty internal virtio
// disk from the image on the stick; the stick's bytes do not change.
//
//	firmware (SeaBIOS or OVMF) ── GRUB on the stick ── kernel + initramfs
//	/dev/sda (USB): BIOS boot | ESP (FAT) | ASRDATA (ext4, disk.asr)
//	/dev/vda (virtio): empty, the target
//
// No network: the VM has no NIC.

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// mkusb builds a stick image holding img with the appliance under test;
// its console is the serial port, where the test reads it.
func mkusb(t *testing.T, dir, img string) string {
	t.Helper()
	kernel, initrd := boot(t)
	return mkusbWith(t, dir, img, kernel, initrd)
}

// mkusbWith is mkusb with the appliance's kernel and initramfs given.
func mkusbWith(t *testing.T, dir, img, kernel, initrd string) string {
	t.Helper()
	testenv.Require(t, "grub-mkimage", "mcopy", "mkfs.vfat", "mkfs.ext4", "sgdisk")
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "initramfs", "mkusb.sh")
	stick := filepath.Join(dir, "stick.img")
	start := time.Now()
	// no_timer_check: under TCG on a loaded host the kernel's early check
	// of the timer interrupt can time out and panic ("IO-APIC + timer
	// doesn't work"), as it did here once under OVMF; QEMU's timer works.
	out, err := exec.Command(script, "-o", stick, "-k", kernel, "-i", initrd,
		"-c", "console=tty0 console=ttyS0,115200", "-a", "panic=-1 no_timer_check", img).CombinedOutput()
	if err != nil {
		t.Fatalf("mkusb.sh: %v\n%s", err, out)
	}
	t.Logf("%s(built in %.1f s)", out, time.Since(start).Seconds())
	return stick
}

// stickRestores builds a stick, boots a VM from it and checks the restore;
// it returns the VM (ended) for more checks of its console.
func stickRestores(t *testing.T, name string, extra ...qemu.Fn) *qemu.VM {
	dir := t.TempDir()
	disk, img := image(t, dir, 32<<20, 621)
	stick := mkusb(t, dir, img)
	st, err := os.Stat(stick)
	if err != nil {
		t.Fatal(err)
	}
	before := testenv.Hash(t, stick, 0, st.Size())
	internal := emptyDisk(t, dir, "internal.img", 64<<20)

	fns := append([]qemu.Fn{
		qemu.WithDisk(internal), qemu.WithUSBDisk(stick)}, extra...)
	vm := qemu.StartT(t, name, fns...)
	if _, err := vm.Console.Expect(`asr: stick: /dev/sda3 on /dev/sda `, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Console.Expect(`asr: target: /dev/vda `, time.Minute); err != nil {
		t.Fatal(err)
	}
	took := expectSuccess(t, vm, 4*time.Minute)
	t.Logf("%s: restored from the stick %.1f s after power-on (QEMU start)", name, took)
	// Not a reboot: that would boot the stick and restore again.
	if !strings.Contains(vm.Console.Log(), "asr: poweroff in 3 s") {
		t.Errorf("the appliance did not power off after restoring from the stick")
	}
	sameBytes(t, disk, internal)
	if after := testenv.Hash(t, stick, 0, st.Size()); after != before {
		t.Errorf("the stick changed: sha256 %s before, %s after", before, after)
	}
	return vm
}

func TestUSBStickRestoresByBIOS(t *testing.T) {
	testenv.RequireVM(t)
	stickRestores(t, "n6bbios")
}

func TestUSBStickRestoresByUEFI(t *testing.T) {
	testenv.RequireVM(t)
	stickRestores(t, "n6buefi", ovmf(t, false)...)
}

// The image must come from the stick, never from the machine's own disk:
// an internal disk that holds an ASRDATA filesystem (here: a copy of a
// stick) is not taken as the stick, and is left as it was.
func TestUSBStickNotFoundOnInternalDisk(t *testing.T) {
	testenv.RequireVM(t)
	dir := t.TempDir()
	_, img := image(t, dir, 16<<20, 622)
	internal := mkusb(t, dir, img)
	st, err := os.Stat(internal)
	if err != nil {
		t.Fatal(err)
	}
	before := testenv.Hash(t, internal, 0, st.Size())
	vm := qemu.StartT(t, "n6bnostick", vmOpts(t, qemu.WithDisk(internal),
		qemu.WithAppend("asr.source=label:ASRDATA", "asr.timeout=10"))...)
	why, _ := expectFailure(t, vm, 3*time.Minute)
	if !strings.Contains(why, "no USB stick or removable disk with a filesystem labelled ASRDATA") {
		t.Errorf("the failure does not say the stick is missing: %s", why)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Hash(t, internal, 0, st.Size()) != before {
		t.Errorf("the internal disk changed")
	}
}
