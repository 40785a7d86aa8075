package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/netlab"
)

// A VM is a QEMU virtual machine with raw virtio, NVMe or USB disks and,
// optionally, a NIC on a tap of a Lab's bridge. It boots one of four ways:
// a kernel and initramfs given to QEMU (WithKernel, WithInitramfs), the
// network by its firmware's PXE (WithNetboot), its first disk by the BIOS
// (WithDiskBoot), or, given none of these, by its firmware (SeaBIOS, or
// OVMF for UEFI with WithUEFI) from whichever disk it prefers (a USB stick
// with bootindex 0). Its serial console is its Console. It runs under TCG
// unless WithAccel or $ASR_QEMU_ACCEL says otherwise: no KVM is needed, only
// patience.
//
// QEMU runs with -no-reboot, so a guest that reboots ends the VM (except a
// netbooted one: its reboot must reach its disk), and with -nodefaults, so
// the only NIC is the lab's: never user-mode networking, which would reach
// the outside through the host.
type VM struct {
	Name    string
	Console *netlab.Console
	Started time.Time // when QEMU was started

	cmd  *exec.Cmd
	lab  *netlab.Lab
	tap  string
	done chan struct{}
	err  error // QEMU's exit, once done is closed
	once sync.Once
}

type config struct {
	qemu      string
	kernel    string
	initramfs string
	cmdline   []string
	disks     []disk
	memory    int
	cpus      int
	accel     string
	lab       *netlab.Lab
	nic       int
	nicModel  string
	netboot   bool
	diskboot  bool
	args      []string
	uefiCode  string
	uefiVars  string
	secure    bool
	noROM     bool
}

type disk struct {
	path   string
	device string // QEMU's -device: "virtio-blk-pci", "nvme", "usb-storage"; "usb-stick" is a removable usb-storage
}

// Fn configures a VM.
type Fn func(*config) error

// WithKernel boots this kernel image (bzImage).
func WithKernel(path string) Fn {
	return func(c *config) error { c.kernel = path; return nil }
}

// WithInitramfs gives the kernel this initramfs.
func WithInitramfs(path string) Fn {
	return func(c *config) error { c.initramfs = path; return nil }
}

// WithAppend adds kernel command-line arguments (after console=ttyS0).
func WithAppend(args ...string) Fn {
	return func(c *config) error { c.cmdline = append(c.cmdline, args...); return nil }
}

// WithDisk attaches a file as a raw virtio disk: the first is /dev/vda, the
// next /dev/vdb (disks are attached in the order given). The format is always given as raw: a probed format would
// make QEMU refuse writes to the first sector.
func WithDisk(path string) Fn {
	return func(c *config) error {
		if strings.ContainsAny(path, ",") {
			return fmt.Errorf("disk %q: QEMU's -drive cannot take a comma in a file name", path)
		}
		c.disks = append(c.disks, disk{path, "virtio-blk-pci"})
		return nil
	}
}

// WithNVMeDisk attaches a file as a raw NVMe disk (/dev/nvmeNn1), as on
// most PCs: the appliance's drivers for real hardware are tested too.
func WithNVMeDisk(path string) Fn {
	return func(c *config) error {
		if strings.ContainsAny(path, ",") {
			return fmt.Errorf("disk %q: QEMU's -drive cannot take a comma in a file name", path)
		}
		c.disks = append(c.disks, disk{path, "nvme"})
		return nil
	}
}

// WithUSBDisk attaches a file as a raw USB stick (usb-storage on an xHCI
// controller), the first device the firmware boots from: the toolkit stick.
func WithUSBDisk(path string) Fn {
	return func(c *config) error {
		if strings.ContainsAny(path, ",") {
			return fmt.Errorf("disk %q: QEMU's -drive cannot take a comma in a file name", path)
		}
		c.disks = append(c.disks, disk{path, "usb-storage"})
		return nil
	}
}

// WithUSBStick attaches a file as a USB stick that says it is removable
// media (usb-storage,removable=on), as most flash drives do, unlike
// WithUSBDisk's, which answers like a USB hard disk.
func WithUSBStick(path string) Fn {
	return func(c *config) error {
		if strings.ContainsAny(path, ",") {
			return fmt.Errorf("disk %q: QEMU's -drive cannot take a comma in a file name", path)
		}
		c.disks = append(c.disks, disk{path, "usb-stick"})
		return nil
	}
}

// WithUEFI boots the firmware OVMF (from code, a read-only OVMF_CODE file)
// with its variables in vars, a writable copy of OVMF_VARS, on a q35
// machine; without it, machines boot SeaBIOS. Only for VMs booted by their
// firmware (no WithKernel).
func WithUEFI(code, vars string) Fn {
	return func(c *config) error { c.uefiCode, c.uefiVars = code, vars; return nil }
}

// WithSecureBoot runs the UEFI firmware (WithUEFI) as Secure Boot needs it:
// a q35 machine with SMM, whose flash only SMM code may write, so that the
// guest cannot change the enrolled keys behind the firmware's back. Give
// WithUEFI a firmware built for it (Debian's OVMF_CODE_4M.secboot.fd) and
// variables with keys enrolled (OVMF_VARS_4M.ms.fd: Microsoft's, which
// sign shim): Secure Boot is then on.
func WithSecureBoot() Fn {
	return func(c *config) error { c.secure = true; return nil }
}

// WithoutNICROM netboots (WithNetboot) by the firmware's own PXE: the NIC
// has no option ROM (QEMU's is iPXE), as on a PC whose UEFI PXE is not
// iPXE. Under UEFI only: SeaBIOS has no PXE of its own.
func WithoutNICROM() Fn {
	return func(c *config) error { c.noROM = true; return nil }
}

// WithMemory sets the guest's memory in MiB (default 1024).
func WithMemory(mib int) Fn {
	return func(c *config) error { c.memory = mib; return nil }
}

// WithCPUs sets the number of virtual CPUs (default 1).
func WithCPUs(n int) Fn {
	return func(c *config) error { c.cpus = n; return nil }
}

// WithAccel chooses QEMU's accelerator: "tcg" (emulation) or "kvm". Without
// it, Start uses $ASR_QEMU_ACCEL, else "tcg": the machine running the tests
// says whether it has KVM, not each test.
func WithAccel(accel string) Fn {
	return func(c *config) error {
		if accel != "" {
			c.accel = accel
		}
		return nil
	}
}

// WithNIC gives the VM a virtio NIC on a tap of l's bridge. n (1-254) makes
// the tap's name (tapN) and the MAC (52:54:00:12:34:NN) unique in the lab;
// QEMU then runs inside the bridge namespace, where the tap is.
func WithNIC(l *netlab.Lab, n int) Fn {
	return func(c *config) error {
		if n < 1 || n > 254 {
			return fmt.Errorf("NIC number %d: want 1-254", n)
		}
		c.lab, c.nic = l, n
		return nil
	}
}

// WithNICModel sets the NIC's QEMU device model (default virtio-net-pci),
// such as e1000e or e1000 to test the drivers of real NICs. A USB model
// ("usb-net": a CDC Ethernet/RNDIS adapter, as a laptop's dongle) goes on
// the VM's xHCI controller, the one its USB disks share.
func WithNICModel(model string) Fn {
	return func(c *config) error { c.nicModel = model; return nil }
}

// WithNetboot boots the VM from the network, as a PC with an empty disk
// does: the NIC keeps its option ROM (iPXE, from Debian's ipxe-qemu), which
// asks the lab's DHCP server what to load. The boot after that is from the
// first disk (QEMU's -boot once=n), and the guest's reboot does not end QEMU,
// so an appliance that restored the disk and rebooted boots what it wrote.
// The BIOS and iPXE print on the serial console too. It needs WithNIC, and
// no kernel. With WithUEFI, OVMF's PXE boots from the network every time
// (it has no boot-once), and the guest's reboot ends QEMU.
func WithNetboot() Fn {
	return func(c *config) error { c.netboot = true; return nil }
}

// WithDiskBoot boots the VM's first disk with the BIOS (SeaBIOS), without a
// kernel from QEMU: the test of what a restore left on the disk. A disk
// that does not boot ends the VM within seconds: the BIOS gives up and
// reboots, which -no-reboot turns into QEMU's exit. The BIOS prints on the
// serial console ("Boot failed: not a bootable disk").
func WithDiskBoot() Fn {
	return func(c *config) error { c.diskboot = true; return nil }
}

// WithQEMU runs this QEMU binary (default qemu-system-x86_64).
func WithQEMU(path string) Fn {
	return func(c *config) error { c.qemu = path; return nil }
}

// WithQEMUArgs adds arguments to QEMU's command line.
func WithQEMUArgs(args ...string) Fn {
	return func(c *config) error { c.args = append(c.args, args...); return nil }
}

// Start starts a VM. Close (or Kill) ends it.
func Start(name string, fns ...Fn) (*VM, error) {
	c := &config{qemu: "qemu-system-x86_64", memory: 1024, cpus: 1, accel: "tcg", nicModel: "virtio-net-pci"}
	if a := os.Getenv("ASR_QEMU_ACCEL"); a != "" {
		c.accel = a
	}
	for _, f := range fns {
		if err := f(c); err != nil {
			return nil, fmt.Errorf("vm %s: %w", name, err)
		}
	}
	args := []string{
		"-name", name, "-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio",
		"-m", fmt.Sprint(c.memory), "-smp", fmt.Sprint(c.cpus),
		// The default CPU model has no RDRAND: the guest's random pool (and
		// so Go's crypto/rand) could then take minutes to fill.
		"-cpu", "max", "-accel", c.accel,
		"-device", "virtio-rng-pci",
	}
	// Firmware boots: from the network once, from the first disk, or (with
	// no kernel and no mode) from whatever the firmware picks.
	firmware := c.kernel == "" && c.initramfs == "" && len(c.cmdline) == 0
	switch {
	case c.netboot && c.diskboot:
		return nil, fmt.Errorf("vm %s: WithNetboot and WithDiskBoot: choose one", name)
	case c.netboot || c.diskboot:
		if !firmware {
			return nil, fmt.Errorf("vm %s: a kernel, initramfs or kernel arguments with a firmware boot: the firmware loads its own", name)
		}
		if c.netboot && c.lab == nil {
			return nil, fmt.Errorf("vm %s: WithNetboot needs a NIC (WithNIC)", name)
		}
		// graphics=off: SeaBIOS (and iPXE, through it) print on the serial
		// console, where a test sees why a boot failed.
		args = append(args, "-machine", "graphics=off")
		if c.netboot && c.uefiCode == "" {
			args = append(args, "-boot", "order=c,once=n")
		} else if !c.netboot {
			args = append(args, "-no-reboot", "-boot", "order=c,reboot-timeout=1000")
		}
	case firmware:
		args = append(args, "-no-reboot")
	case c.kernel == "" || c.initramfs == "":
		return nil, fmt.Errorf("vm %s: give both a kernel and an initramfs, or neither to boot by the firmware", name)
	default:
		args = append(args, "-no-reboot",
			"-kernel", c.kernel, "-initrd", c.initramfs,
			// panic=-1: a kernel panic reboots at once, which ends QEMU, rather
			// than hang until the test's timeout.
			"-append", strings.Join(append([]string{"console=ttyS0", "panic=-1", "quiet"}, c.cmdline...), " "))
	}
	if c.uefiCode != "" {
		if !firmware || c.diskboot {
			return nil, fmt.Errorf("vm %s: UEFI firmware boots from disk or the network by itself; give no kernel or WithDiskBoot", name)
		}
		machine := "q35"
		if c.secure {
			machine += ",smm=on"
			args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
		}
		args = append(args, "-machine", machine,
			"-drive", "if=pflash,format=raw,readonly=on,file="+c.uefiCode,
			"-drive", "if=pflash,format=raw,file="+c.uefiVars)
		if c.netboot {
			// OVMF ignores -boot: the NIC's bootindex puts PXE first, every
			// boot. A guest's reboot ends QEMU, as for a disk boot.
			args = append(args, "-no-reboot")
		}
	} else if c.secure || c.noROM {
		return nil, fmt.Errorf("vm %s: WithSecureBoot and WithoutNICROM need the UEFI firmware (WithUEFI)", name)
	}
	xhci := false
	addXHCI := func() {
		if !xhci {
			args = append(args, "-device", "qemu-xhci,id=xhci")
			xhci = true
		}
	}
	for i, d := range c.disks {
		id := fmt.Sprintf("d%d", i)
		dev := fmt.Sprintf("%s,drive=%s", d.device, id)
		switch d.device {
		case "nvme":
			dev += ",serial=" + id // NVMe wants one
		case "usb-stick":
			addXHCI()
			dev = fmt.Sprintf("usb-storage,drive=%s,bus=xhci.0,removable=on", id)
		case "usb-storage":
			addXHCI()
			dev += ",bus=xhci.0"
			if firmware {
				// The firmware boots the stick first; a kernel given
				// to QEMU holds bootindex 0 itself (its boot ROM).
				dev += ",bootindex=0"
			}
		}
		args = append(args, "-drive", fmt.Sprintf("file=%s,if=none,id=%s,format=raw", d.path, id), "-device", dev)
	}
	v := &VM{Name: name, Console: netlab.NewConsole(), done: make(chan struct{})}
	if c.lab != nil {
		v.lab, v.tap = c.lab, fmt.Sprintf("tap%d", c.nic)
		if err := c.lab.AddTap(v.tap); err != nil {
			return nil, fmt.Errorf("vm %s: %w", name, err)
		}
		rom := ",romfile="
		if c.netboot {
			// QEMU's own iPXE ROM for the model (Debian's ipxe-qemu).
			rom = ""
			if c.uefiCode != "" {
				rom = ",bootindex=0"
				if c.noROM {
					rom += ",romfile="
				}
			}
		}
		if strings.HasPrefix(c.nicModel, "usb-") {
			// A USB device has no option ROM to leave out.
			addXHCI()
			rom = ",bus=xhci.0"
		}
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=n0,ifname=%s,script=no,downscript=no", v.tap),
			// romfile=: no iPXE option ROM when the kernel is given: it is
			// not needed, and a firmware boot must not try the network.
			"-device", fmt.Sprintf("%s,netdev=n0,mac=52:54:00:12:34:%02x%s", c.nicModel, c.nic, rom))
	}
	args = append(args, c.args...)

	if c.lab != nil {
		v.cmd = c.lab.Command(context.Background(), c.qemu, args...)
	} else {
		v.cmd = exec.Command(c.qemu, args...)
	}
	v.cmd.Stdout, v.cmd.Stderr = v.Console, v.Console
	// A process group of its own, killed as one; and QEMU dies with the
	// test binary, even one killed by its timeout before any cleanup ran.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	v.Started = time.Now()
	err := netlab.StartBound(v.cmd, func(err error) {
		v.err = err
		v.Console.Close()
		close(v.done)
	})
	if err != nil {
		v.delTap()
		return nil, fmt.Errorf("vm %s: starting %s: %w", name, c.qemu, err)
	}
	return v, nil
}

// StartT starts a VM for a test, and ends it when the test ends; when the
// test failed, the console's whole log goes to the test's log.
func StartT(t testing.TB, name string, fns ...Fn) *VM {
	t.Helper()
	v, err := Start(name, fns...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.Close()
		if t.Failed() {
			t.Logf("console of %s:\n%s", name, v.Console.Log())
		}
	})
	return v
}

// Done is closed when QEMU has exited.
func (v *VM) Done() <-chan struct{} { return v.done }

// Wait waits for QEMU to exit and returns how it exited.
func (v *VM) Wait() error {
	<-v.done
	return v.err
}

// WaitTimeout waits at most d for QEMU to exit. It fails if QEMU is still
// running then, or exited with an error.
func (v *VM) WaitTimeout(d time.Duration) error {
	select {
	case <-v.done:
		if v.err != nil {
			return fmt.Errorf("vm %s: qemu: %w", v.Name, v.err)
		}
		return nil
	case <-time.After(d):
		return fmt.Errorf("vm %s: still running after %v", v.Name, d)
	}
}

// Running reports whether QEMU has not exited yet.
func (v *VM) Running() bool {
	select {
	case <-v.done:
		return false
	default:
		return true
	}
}

// Kill ends QEMU (its whole process group) and waits for it.
func (v *VM) Kill() error {
	if v.Running() {
		// The group of the process we started, by its id: ip netns exec
		// has become QEMU.
		if err := syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("vm %s: %w", v.Name, err)
		}
	}
	select {
	case <-v.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("vm %s: QEMU did not end within 10 s of SIGKILL", v.Name)
	}
}

// Close kills QEMU if it still runs and removes the VM's tap.
func (v *VM) Close() error {
	var err error
	v.once.Do(func() {
		err = v.Kill()
		v.delTap()
	})
	return err
}

func (v *VM) delTap() {
	if v.lab != nil {
		v.lab.DelTap(v.tap)
	}
}
