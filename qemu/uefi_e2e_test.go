package qemu_test

// UEFI and Secure Boot rows of the VM matrix. The firmware is Debian's OVMF;
// with Secure Boot, its build for it (OVMF_CODE_4M.secboot.fd) with
// Microsoft's keys enrolled (OVMF_VARS_4M.ms.fd), as on a PC from a shop.
// The chain is Debian's: shim (signed by Microsoft) checks GRUB (signed by
// Debian), which through shim checks the kernel (signed by Debian). The
// appliance's initramfs is not checked by anyone: asr checks images itself.

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

const (
	ovmfCode       = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars       = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	ovmfSecureCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	ovmfSecureVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
	shimSigned     = "/usr/lib/shim/shimx64.efi.signed"
	grubSigned     = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
	grubNetSigned  = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
)

// ovmf returns the options of a UEFI VM: OVMF with a copy of its variables
// of its own; with secure, the Secure Boot build with Microsoft's keys.
func ovmf(t *testing.T, secure bool) []qemu.Fn {
	t.Helper()
	code, vars := ovmfCode, ovmfVars
	if secure {
		code, vars = ovmfSecureCode, ovmfSecureVars
	}
	b, err := os.ReadFile(vars)
	if _, cerr := os.Stat(code); err != nil || cerr != nil {
		testenv.Unavailable(t, "needs OVMF firmware (%v, %v): scripts/deps.sh installs Debian's ovmf", err, cerr)
	}
	myVars := filepath.Join(t.TempDir(), "OVMF_VARS.fd")
	if err := os.WriteFile(myVars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fns := []qemu.Fn{qemu.WithUEFI(code, myVars)}
	if secure {
		fns = append(fns, qemu.WithSecureBoot())
	}
	return fns
}

// requireSigned fails (ASR_E2E=1) or skips without Debian's signed boot
// chain.
func requireSigned(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			testenv.Unavailable(t, "needs Debian's signed boot chain (%v): scripts/deps.sh installs shim-signed and grub-efi-amd64-signed", err)
		}
	}
}

// secureBootOn checks, on the console of a VM that booted the appliance,
// that the kernel found Secure Boot on and locked itself down: the proof
// that the firmware really enforced it.
func secureBootOn(t *testing.T, vm *qemu.VM) {
	t.Helper()
	log := vm.Console.Log()
	for _, s := range []string{"secureboot: Secure boot enabled", "Kernel is locked down from EFI Secure Boot"} {
		i := strings.Index(log, s)
		if i < 0 {
			t.Errorf("%s: the kernel did not say %q: Secure Boot was not on", vm.Name, s)
			continue
		}
		line, _, _ := strings.Cut(log[i:], "\n")
		t.Logf("%s: %s", vm.Name, strings.TrimSpace(line))
	}
	// Locked down, the kernel loads only signed modules: Debian's, which
	// the initramfs carries decompressed, their signatures inside.
	m := regexp.MustCompile(`asr: drivers: [0-9]+ loaded \[([^\]]*)\]`).FindStringSubmatch(log)
	switch {
	case m == nil:
		t.Errorf("%s: the appliance did not list the drivers it loaded", vm.Name)
	case !strings.Contains(" "+m[1]+" ", " virtio_blk "):
		t.Errorf("%s: virtio_blk (a module) did not load under lockdown: %s", vm.Name, m[0])
	default:
		t.Logf("%s: %s", vm.Name, m[0])
	}
	if strings.Contains(log, "Loading of unsigned module is rejected") {
		t.Errorf("%s: the kernel rejected an unsigned module", vm.Name)
	}
}

// TestMatrixSecureBootUSBStick: the toolkit stick (shim, signed GRUB,
// Debian's signed kernel) restores a Secure Boot PC's disk.
func TestMatrixSecureBootUSBStick(t *testing.T) {
	testenv.RequireVM(t)
	requireSigned(t, shimSigned, grubSigned)
	vm := stickRestores(t, "hu-sbstick", ovmf(t, true)...)
	secureBootOn(t, vm)
}

// TestMatrixSecureBootRefusesUnsignedKernel: the same stick with the kernel's
// signature taken off (sbattach --remove) does not boot with Secure Boot
// on: GRUB refuses the kernel, and the disk is left as it was.
func TestMatrixSecureBootRefusesUnsignedKernel(t *testing.T) {
	testenv.RequireVM(t, "sbattach")
	requireSigned(t, shimSigned, grubSigned)
	dir := t.TempDir()
	kernel, initrd := boot(t)
	unsigned := filepath.Join(dir, "vmlinuz-unsigned")
	testenv.Run(t, "cp", kernel, unsigned)
	testenv.Run(t, "sbattach", "--remove", unsigned)
	if out := testenv.Run(t, "sbverify", "--list", unsigned); !strings.Contains(out, "No signature table present") {
		t.Fatalf("sbattach --remove left a signature:\n%s", out)
	}
	_, img := image(t, dir, 16<<20, 623)
	stick := mkusbWith(t, dir, img, unsigned, initrd)
	internal := filepath.Join(dir, "internal.img")
	testenv.FillRandom(t, internal, 64<<20, 624)
	before := testenv.Hash(t, internal, 0, 64<<20)

	vm := qemu.StartT(t, "hu-sbunsigned", append(ovmf(t, true), qemu.WithDisk(internal), qemu.WithUSBDisk(stick))...)
	// shim and GRUB ran (their signatures are good), then GRUB refused the
	// kernel it was to load.
	if _, err := vm.Console.Expect(`Loading the asr imaging appliance`, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	// GRUB asks shim to check the kernel, which has no signature.
	if _, err := vm.Console.Expect(`error: bad shim signature`, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Nothing after the refusal may start the kernel: not the EFI stub,
	// not Linux, not the appliance.
	time.Sleep(10 * time.Second)
	log := vm.Console.Log()
	for _, bad := range []string{"EFI stub:", "Linux version", "asr: stick:", "asr-appliance:"} {
		if strings.Contains(log, bad) {
			t.Errorf("the unsigned kernel ran (%q on the console)", bad)
		}
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Hash(t, internal, 0, 64<<20) != before {
		t.Errorf("the internal disk changed though the kernel was refused")
	}
}

// uefiNetboot boots a UEFI VM with an empty virtio disk from the network
// of the example lab (dnsmasq.conf, boot.ipxe, grub.cfg), which restores
// the disk from asr server (DHCP option 224); path is the console line
// that shows which way it came. It returns the VM, ended by the
// appliance's reboot.
func uefiNetboot(t *testing.T, name string, nic int, path string, fns ...qemu.Fn) *qemu.VM {
	t.Helper()
	requireSigned(t, shimSigned, grubNetSigned)
	l := netbootLab(t, name)
	disk, img := image(t, l.srvDir, 32<<20, 625)
	l.asrServer(t, img, "239.255.61.14", 8_000_000)
	target := emptyDisk(t, l.dir, "vda.img", 64<<20)

	vm := qemu.StartT(t, "hu-"+name, append(fns,
		qemu.WithDisk(target), qemu.WithNIC(l.lab, nic), qemu.WithNetboot())...)
	if _, err := vm.Console.Expect(path, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	loader := time.Since(vm.Started)
	if _, err := vm.Console.Expect(`asr: source: asr://198\.18\.0\.1 \(DHCP option 224 from 198\.18\.0\.1 on eth0\)`, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	guest, wall := restoreStarts(t, vm, 2*time.Minute)
	took := expectSuccess(t, vm, 4*time.Minute)
	sameBytes(t, disk, target)
	t.Logf("%s: boot loader %.1f s after power-on, restore started %.1f s (guest clock %.1f s), restored %.1f s (wall, QEMU start)",
		name, loader.Seconds(), wall, guest, took)
	return vm
}

// grubPath is the line of the example grub.cfg: the firmware's PXE got shim
// by TFTP, shim GRUB, GRUB its menu, which loads the appliance by TFTP.
const grubPath = `Loading the asr imaging appliance from tftp,198\.18\.0\.1 `

// TestMatrixUEFINetboot: a UEFI PC with Secure Boot off (OVMF, virtio disk,
// virtio-net) is imaged over the network. Its PXE is QEMU's NIC ROM, iPXE,
// which says so in its request and gets boot.ipxe, as under BIOS.
func TestMatrixUEFINetboot(t *testing.T) {
	testenv.RequireVM(t)
	vm := uefiNetboot(t, "uefinb", 40, `Filename: http://198\.18\.0\.1/boot\.ipxe`, ovmf(t, false)...)
	// iPXE's EFI build lists EFI among its features; its BIOS build not.
	if !regexp.MustCompile(`Features: [A-Za-z ]*\bEFI\b`).MatchString(vm.Console.Log()) {
		t.Errorf("the NIC's iPXE was not its UEFI build")
	}
}

// TestMatrixUEFINetbootFirmwarePXE: the same PC whose PXE is the firmware's
// own (no iPXE ROM on the NIC), as most PCs': it gets shim, which boots
// with Secure Boot off too.
func TestMatrixUEFINetbootFirmwarePXE(t *testing.T) {
	testenv.RequireVM(t)
	vm := uefiNetboot(t, "uefipxe", 42, grubPath, append(ovmf(t, false), qemu.WithoutNICROM())...)
	if !strings.Contains(vm.Console.Log(), "secureboot: Secure boot disabled") {
		t.Errorf("the kernel did not say Secure Boot was off")
	}
}

// TestMatrixSecureBootNetboot: with Secure Boot on, the NIC's iPXE ROM is
// refused (unsigned) and the firmware's own PXE gets shim: the signed way.
func TestMatrixSecureBootNetboot(t *testing.T) {
	testenv.RequireVM(t)
	vm := uefiNetboot(t, "sbnb", 41, grubPath, ovmf(t, true)...)
	secureBootOn(t, vm)
}
