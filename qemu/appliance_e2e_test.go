package qemu_test

// End-to-end tests of the imaging appliance: the installed Debian kernel
// boots the initramfs package's image in QEMU (TCG unless ASR_QEMU_ACCEL=kvm)
// with raw virtio disks. Networked VMs have a tap on a lab bridge, where a
// host at 198.18.0.1 runs dnsmasq (DHCP) and nginx or asr server:
//
//	VM ── tapN ── br0 (bridge namespace) ── veth ── eth0 198.18.0.1
//	                                                 dnsmasq, nginx :8080,
//	                                                 asr server :7800
//
// Every namespace, tap and process is removed when the test ends.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/initramfs"
	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	if bootDir != "" {
		os.RemoveAll(bootDir)
	}
	if signedDir != "" {
		os.RemoveAll(signedDir)
	}
	os.Exit(code)
}

// The kernel and the initramfs, built once per test binary.
var (
	bootOnce   sync.Once
	bootDir    string
	bootKernel string
	bootInitrd string
	bootErr    error
)

// boot returns the kernel and the appliance's initramfs for the VMs.
func boot(t *testing.T) (kernel, initrd string) {
	t.Helper()
	testenv.RequireVM(t, "sgdisk")
	bootOnce.Do(func() {
		k, err := initramfs.FindKernel("/", "")
		if err != nil {
			bootErr = err
			return
		}
		if bootDir, err = os.MkdirTemp("", "asr-qemu-boot-"); err != nil {
			bootErr = err
			return
		}
		start := time.Now()
		res, err := initramfs.Build(initramfs.Options{Output: filepath.Join(bootDir, "initramfs.cpio.gz"), Kernel: k, Version: "e2e"})
		if err != nil {
			bootErr = err
			return
		}
		bootKernel, bootInitrd = k.Image, res.Path
		t.Logf("initramfs: %.1f MiB, %d module files, kernel %s, built in %.1f s",
			float64(res.Size)/(1<<20), len(res.Modules), k.Version, time.Since(start).Seconds())
	})
	if bootErr != nil {
		testenv.Unavailable(t, "cannot build the appliance: %v", bootErr)
	}
	return bootKernel, bootInitrd
}

// vmOpts are the options every VM of these tests has.
func vmOpts(t *testing.T, extra ...qemu.Fn) []qemu.Fn {
	kernel, initrd := boot(t)
	return append([]qemu.Fn{qemu.WithKernel(kernel), qemu.WithInitramfs(initrd)}, // TCG unless told: /dev/kvm is not usable everywhere this runs.
		extra...)
}

// vmLab is a lab whose host 198.18.0.1 runs dnsmasq; srvDir is served by
// whatever server the test starts there.
type vmLab struct {
	lab    *netlab.Lab
	srv    *netlab.Host
	srvDir string
	dir    string
}

func newVMLab(t *testing.T, name string) *vmLab {
	t.Helper()
	return newNamedLab(t, "aq"+name)
}

// newNamedLab is newVMLab with the whole lab prefix given.
func newNamedLab(t *testing.T, prefix string) *vmLab {
	t.Helper()
	testenv.Require(t, "dnsmasq", "ip")
	l := &vmLab{srvDir: t.TempDir(), dir: t.TempDir()}
	l.lab = netlab.NewT(t, prefix)
	l.srv = l.lab.AddHostT(t, "s", 1)
	netlab.StartDHCPT(t, l.srv, l.dir)
	return l
}

// nginx serves l.srvDir on 198.18.0.1:8080.
func (l *vmLab) nginx(t *testing.T) {
	t.Helper()
	testenv.Require(t, "nginx")
	netlab.StartNginxT(t, l.srv, l.srvDir, 8080, t.TempDir())
}

// image makes a sample disk of size bytes and its prepared image in dir.
func image(t *testing.T, dir string, size int64, seed uint64) (disk, img string) {
	t.Helper()
	disk = testenv.Disk(t, t.TempDir(), size, seed)
	img = filepath.Join(dir, "disk.asr")
	testenv.Run(t, testenv.Asr(t), "imagescan", "--source", disk, "--output", img)
	return disk, img
}

// emptyDisk makes a sparse, all-zero disk file.
func emptyDisk(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// sameBytes fails t unless got holds the image want's bytes (qemu.SameDisk).
func sameBytes(t *testing.T, want, got string) {
	t.Helper()
	if err := qemu.SameDisk(want, got); err != nil {
		t.Fatal(err)
	}
}

func allZero(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Errorf("%s was written: byte %d is not zero", p, i)
	}
}

// restoreStarts waits for the appliance's line saying when the restore
// starts, and returns its figure (seconds since power-on, by the guest's
// clock) and the wall time since QEMU started.
func restoreStarts(t *testing.T, vm *qemu.VM, timeout time.Duration) (guest, wall float64) {
	t.Helper()
	m, err := vm.Console.Expect(`restore starts ([0-9.]+) s after power-on`, timeout)
	if err != nil {
		t.Fatalf("%s: %v", vm.Name, err)
	}
	guest, _ = strconv.ParseFloat(m[1], 64)
	return guest, time.Since(vm.Started).Seconds()
}

// expectSuccess waits for the success line, then for the reboot that ends
// QEMU (-no-reboot); it returns the seconds since QEMU started.
func expectSuccess(t *testing.T, vm *qemu.VM, timeout time.Duration) float64 {
	t.Helper()
	if _, err := vm.Console.Expect(`asr-appliance: RESULT success: .*verified`, timeout); err != nil {
		t.Fatalf("%s: %v", vm.Name, err)
	}
	took := time.Since(vm.Started).Seconds()
	// The appliance waits 3 s, then reboots.
	if err := vm.WaitTimeout(30 * time.Second); err != nil {
		t.Fatalf("after its success line: %v", err)
	}
	return took
}

// expectFailure waits for the failure line, returns its reason and when it
// came, and checks that the appliance then stays stopped: no reboot (QEMU
// still runs), no crash.
func expectFailure(t *testing.T, vm *qemu.VM, timeout time.Duration) (string, time.Time) {
	t.Helper()
	m, err := vm.Console.Expect(`asr-appliance: RESULT failure: (.*)`, timeout)
	if err != nil {
		t.Fatalf("%s: %v", vm.Name, err)
	}
	at := time.Now()
	select {
	case <-vm.Done():
		t.Errorf("%s: QEMU ended after the failure line: the appliance must stop and wait, not reboot or crash", vm.Name)
	case <-time.After(5 * time.Second):
	}
	for _, bad := range []string{"Kernel panic", "fatal error:", "panic:"} {
		if strings.Contains(vm.Console.Log(), bad) {
			t.Errorf("%s: %q on the console after the failure line: it must stop calmly", vm.Name, bad)
		}
	}
	return m[1], at
}

func TestApplianceRestoresOverHTTP(t *testing.T) {
	testenv.RequireVM(t)
	l := newVMLab(t, "http")
	l.nginx(t)
	const size = 48 << 20
	disk, _ := image(t, l.srvDir, size, 101)
	// A larger disk than the source's: the restore fills its start.
	target := emptyDisk(t, l.dir, "vda.img", 64<<20)

	vm := qemu.StartT(t, "http", vmOpts(t,
		qemu.WithDisk(target), qemu.WithNIC(l.lab, 10),
		qemu.WithAppend("asr.source=http://198.18.0.1:8080/disk.asr"))...)
	guest, wall := restoreStarts(t, vm, 2*time.Minute)
	took := expectSuccess(t, vm, 4*time.Minute)
	t.Logf("restore starts %.1f s after power-on (guest clock), %.1f s after QEMU started; success %.1f s after QEMU started",
		guest, wall, took)
	sameBytes(t, disk, target)
}

func TestApplianceRefusesTwoDisks(t *testing.T) {
	testenv.RequireVM(t)
	dir := t.TempDir()
	vda := emptyDisk(t, dir, "vda.img", 32<<20)
	vdb := emptyDisk(t, dir, "vdb.img", 32<<20)
	// No NIC: the appliance must refuse before it needs the network.
	vm := qemu.StartT(t, "twodisks", vmOpts(t,
		qemu.WithDisk(vda), qemu.WithDisk(vdb),
		qemu.WithAppend("asr.source=http://198.18.0.1:8080/disk.asr"))...)
	why, _ := expectFailure(t, vm, 2*time.Minute)
	if !strings.Contains(why, "/dev/vda") || !strings.Contains(why, "/dev/vdb") {
		t.Errorf("the failure does not list both disks: %s", why)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	allZero(t, vda)
	allZero(t, vdb)
}

func TestApplianceRefusesSmallDisk(t *testing.T) {
	testenv.RequireVM(t)
	l := newVMLab(t, "small")
	l.nginx(t)
	image(t, l.srvDir, 48<<20, 102)
	target := filepath.Join(l.dir, "vda.img")
	testenv.FillRandom(t, target, 32<<20, 103)
	before := testenv.Hash(t, target, 0, 32<<20)

	vm := qemu.StartT(t, "small", vmOpts(t,
		qemu.WithDisk(target), qemu.WithNIC(l.lab, 11),
		qemu.WithAppend("asr.source=http://198.18.0.1:8080/disk.asr"))...)
	why, _ := expectFailure(t, vm, 3*time.Minute)
	if !strings.Contains(why, "too small") {
		t.Errorf("the failure does not say the disk is too small: %s", why)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Hash(t, target, 0, 32<<20) != before {
		t.Errorf("the refused restore changed the disk")
	}
}

func TestApplianceUnreachableSource(t *testing.T) {
	testenv.RequireVM(t)
	l := newVMLab(t, "unreach")
	target := filepath.Join(l.dir, "vda.img")
	testenv.FillRandom(t, target, 32<<20, 104)
	before := testenv.Hash(t, target, 0, 32<<20)

	const timeout = 5
	vm := qemu.StartT(t, "unreach", vmOpts(t,
		qemu.WithDisk(target), qemu.WithNIC(l.lab, 12),
		qemu.WithAppend("asr.source=http://198.18.0.1:9/x.asr", fmt.Sprintf("asr.timeout=%d", timeout), "asr.debug"))...)
	restoreStarts(t, vm, 2*time.Minute)
	start := time.Now()
	why, at := expectFailure(t, vm, time.Minute)
	took := at.Sub(start)
	t.Logf("failure %.1f s after the restore started: %s", took.Seconds(), why)
	// The guest's clock runs slower under emulation: allow some slack.
	if took > 3*timeout*time.Second {
		t.Errorf("the failure came %.1f s after the restore started; asr.timeout=%d", took.Seconds(), timeout)
	}
	if !strings.Contains(why, "198.18.0.1:9") {
		t.Errorf("the failure does not name the source: %s", why)
	}
	// asr.debug: the failure opens the initramfs's shell for a person.
	if _, err := vm.Console.Expect(`asr: starting a shell \(asr.debug\)`, 30*time.Second); err != nil {
		t.Errorf("no debug shell after the failure: %v", err)
	}
	time.Sleep(3 * time.Second)
	if strings.Contains(vm.Console.Log(), "has no shell") {
		t.Errorf("asr.debug found no shell in the initramfs:\n%s", vm.Console.Log())
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Hash(t, target, 0, 32<<20) != before {
		t.Errorf("the failed restore changed the disk")
	}
}

// asrServer runs asr server on the lab's host with img, streaming to group
// at rate bytes/s, and waits until it is ready.
func (l *vmLab) asrServer(t *testing.T, img, group string, rate int) *netlab.Proc {
	t.Helper()
	cfg := filepath.Join(l.dir, "asrconfig.plist")
	err := os.WriteFile(cfg, []byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>`+group+`</string>
<key>Data Rate</key><integer>`+strconv.Itoa(rate)+`</integer>
<key>DNS Service Discovery</key><false/>
</dict></plist>`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := netlab.StartProcT(t, "asr server", l.srv.Command(context.Background(), testenv.Asr(t), "server", "--source", img, "--config", cfg))
	p.WaitForT(t, "Ready to start accepting clients", 20*time.Second)
	return p
}

// restoreAll starts one VM per NIC number, all at once, restoring from
// source onto an empty disk each; it waits for every one to succeed and
// checks every disk against want. It returns the wall time until the last
// success.
func restoreAll(t *testing.T, l *vmLab, name, source, want string, nics ...int) time.Duration {
	t.Helper()
	start := time.Now()
	vms := make([]*qemu.VM, len(nics))
	disks := make([]string, len(nics))
	for i, n := range nics {
		disks[i] = emptyDisk(t, l.dir, fmt.Sprintf("%s-%d.img", name, n), 64<<20)
		vms[i] = qemu.StartT(t, fmt.Sprintf("%s%d", name, n), vmOpts(t,
			qemu.WithDisk(disks[i]), qemu.WithNIC(l.lab, n),
			qemu.WithAppend("asr.source="+source))...)
	}
	var wg sync.WaitGroup
	for _, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// t.Fatal must not be called from here: failures are Errors.
			if _, err := vm.Console.Expect(`asr-appliance: RESULT success: .*verified`, 5*time.Minute); err != nil {
				t.Errorf("%s: %v", vm.Name, err)
				return
			}
			if err := vm.WaitTimeout(30 * time.Second); err != nil {
				t.Errorf("after its success line: %v", err)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	for _, d := range disks {
		sameBytes(t, want, d)
	}
	return took
}

func TestApplianceMulticast(t *testing.T) {
	testenv.RequireVM(t)
	l := newVMLab(t, "mcast")
	disk, img := image(t, l.srvDir, 48<<20, 105)
	l.asrServer(t, img, "239.255.42.1", 8_000_000)

	one := restoreAll(t, l, "one", "asr://198.18.0.1", disk, 20)
	three := restoreAll(t, l, "three", "asr://198.18.0.1", disk, 21, 22, 23)
	t.Logf("multicast: 1 VM %.1f s, 3 VMs at once %.1f s (%.2fx)", one.Seconds(), three.Seconds(), three.Seconds()/one.Seconds())
}
