package qemu_test

// Zero-touch imaging end to end: a VM with an empty disk and no kernel
// boots the appliance from the network (its NIC's iPXE ROM, dnsmasq with
// appliance/examples/dnsmasq.conf, nginx), the appliance finds asr server by
// DHCP option 224, restores the first-boot OS image (testdata/mkbootos.sh)
// over multicast, reboots, and the VM boots what it restored:
//
//	VM (iPXE ROM) ── tapN ── br0 ── eth0 198.18.0.1: dnsmasq (DHCP, TFTP,
//	                                   option 224), nginx :80 (boot.ipxe,
//	                                   vmlinuz, initramfs), asr server :7800
//
// And a power cut in the middle of a restore: the half-written disk must
// not boot (neither the system it held nor the one being written), and the
// next restore must make it whole.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
)

// mkbootos builds the first-boot OS image with testdata/mkbootos.sh; booted,
// it prints "ASR-FIRSTBOOT-OK id" and powers off.
func mkbootos(t *testing.T, dir, id string) string {
	t.Helper()
	testenv.Require(t, "syslinux", "mcopy", "mkfs.fat", "sfdisk", "cpio")
	p := filepath.Join(dir, id+".img")
	testenv.Run(t, "../testdata/mkbootos.sh", p, id)
	return p
}

// markerID is unique to a run, so a marker on a console can only come from
// the image this run restored.
func markerID(what string) string {
	return fmt.Sprintf("%s-%s", what, strconv.FormatInt(time.Now().UnixNano(), 36))
}

// netbootLab is a lab (prefix n6a) whose host 198.18.0.1 runs dnsmasq with
// the example configuration, with only its /srv/asr replaced by l.srvDir,
// and nginx on port 80 serving l.srvDir: boot.ipxe (the example), the
// appliance's kernel and initramfs, iPXE for BIOS PXE ROMs, and for UEFI
// Debian's signed shim and network GRUB with the example grub.cfg.
func netbootLab(t *testing.T, name string) *vmLab {
	t.Helper()
	testenv.Require(t, "dnsmasq", "nginx", "ip")
	kernel, initrd := boot(t)
	l := &vmLab{srvDir: t.TempDir(), dir: t.TempDir()}
	if err := os.Mkdir(filepath.Join(l.srvDir, "grub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"vmlinuz":               kernel,
		"asr-initramfs.cpio.gz": initrd,
		"boot.ipxe":             "../appliance/examples/boot.ipxe",
		"undionly.kpxe":         "/usr/lib/ipxe/undionly.kpxe",
		"shimx64.efi":           shimSigned,
		"grubx64.efi":           grubNetSigned,
		"grub/grub.cfg":         "../appliance/examples/grub.cfg",
	} {
		abs, err := filepath.Abs(target)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, filepath.Join(l.srvDir, link)); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := os.ReadFile("../appliance/examples/dnsmasq.conf")
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(l.dir, "dnsmasq.conf")
	if err := os.WriteFile(confPath, []byte(strings.ReplaceAll(string(conf), "/srv/asr", l.srvDir)), 0o644); err != nil {
		t.Fatal(err)
	}

	l.lab = netlab.NewT(t, "n6a"+name)
	l.srv = l.lab.AddHostT(t, "s", 1)
	dhcp := netlab.StartDHCPT(t, l.srv, l.dir, "--conf-file="+confPath)
	// The example's TFTP is on: dnsmasq read the file, not only its options.
	if !strings.Contains(dhcp.Output.Log(), "TFTP root is "+l.srvDir) {
		dhcp.WaitForT(t, "TFTP root is "+regexp.QuoteMeta(l.srvDir), 5*time.Second)
	}
	netlab.StartNginxT(t, l.srv, l.srvDir, 80, t.TempDir())
	return l
}

// TestNetbootRestoreFirstBoot is the whole zero-touch path on one VM.
func TestNetbootRestoreFirstBoot(t *testing.T) {
	testenv.RequireVM(t)
	l := netbootLab(t, "nb")
	id := markerID("netboot")
	osImg := mkbootos(t, t.TempDir(), id)
	img := filepath.Join(l.srvDir, "firstboot.asr")
	testenv.Run(t, testenv.Asr(t), "imagescan", "--source", osImg, "--output", img)
	l.asrServer(t, img, "239.255.61.1", 8_000_000)
	disk := emptyDisk(t, l.dir, "vda.img", 32<<20)

	vm := qemu.StartT(t, "netboot", qemu.WithDisk(disk), qemu.WithNIC(l.lab, 30), qemu.WithNetboot())
	// iPXE (QEMU's NIC ROM) got the example's boot script from dnsmasq.
	if _, err := vm.Console.Expect(`Filename: http://198\.18\.0\.1/boot\.ipxe`, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Console.Expect(`asr imaging appliance`, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// No asr.source anywhere: the only way to the server is option 224.
	if _, err := vm.Console.Expect(`asr: source: asr://198\.18\.0\.1 \(DHCP option 224 from 198\.18\.0\.1 on eth0\)`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	appliance := time.Since(vm.Started)
	if _, err := vm.Console.Expect(`asr-appliance: RESULT success: .*verified`, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	restored := time.Since(vm.Started)
	// The appliance reboots; the BIOS boots the disk this time (-boot once=n).
	if _, err := vm.Console.Expect(`Booting from Hard Disk`, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Console.Expect(`ASR-FIRSTBOOT-OK `+regexp.QuoteMeta(id)+`\b`, 2*time.Minute); err != nil {
		t.Fatalf("the restored disk did not boot: %v", err)
	}
	booted := time.Since(vm.Started)
	// The restored system powers off, which ends QEMU.
	if err := vm.WaitTimeout(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, osImg, disk)
	t.Logf("netboot: source found by DHCP option %.1f s after power-on, restored at %.1f s, restored system's marker at %.1f s (wall, QEMU start)",
		appliance.Seconds(), restored.Seconds(), booted.Seconds())
}

// TestPowerCutMidRestore switches a VM off (kills QEMU) in the middle of a
// restore over a disk that held an older system.
func TestPowerCutMidRestore(t *testing.T) {
	testenv.RequireVM(t)
	l := netbootLab(t, "cut")
	dir := t.TempDir()
	oldID, newID := markerID("old"), markerID("new")
	oldImg := mkbootos(t, dir, oldID)
	newImg := mkbootos(t, dir, newID)
	img := filepath.Join(l.srvDir, "new.asr")
	testenv.Run(t, testenv.Asr(t), "imagescan", "--source", newImg, "--output", img)
	// Slow enough (about 14 s for the image's 9 MiB of data) to be caught
	// in the middle.
	l.asrServer(t, img, "239.255.61.2", 700_000)

	// The machine holds the old system, and boots it.
	disk := filepath.Join(l.dir, "vda.img")
	testenv.Run(t, "cp", "--sparse=always", oldImg, disk)
	if err := os.Truncate(disk, 32<<20); err != nil {
		t.Fatal(err)
	}
	diskBoot(t, "old", disk, oldID)

	// The restore, switched off in the middle. The guest's kernel writes
	// dirty pages back within half a second, as it would have to during a
	// restore larger than its memory; by default it would hold this small
	// image in its page cache until the engine's final flush, and the
	// power cut would leave the disk just as the erase did.
	vm := qemu.StartT(t, "cut1", vmOpts(t, qemu.WithDisk(disk), qemu.WithNIC(l.lab, 31),
		qemu.WithAppend("sysctl.vm.dirty_expire_centisecs=50", "sysctl.vm.dirty_writeback_centisecs=20"))...)
	restoreStarts(t, vm, 3*time.Minute)
	// Cut when half of the image's data chunks are on the disk. The old
	// system shares most of them (the same kernel), so count only after the
	// erase has blanked the disk: a chunk that then reads as the image's was
	// written by this restore.
	if _, err := vm.Console.Expect(`Erasing target device /dev/vda\.\.\.done`, time.Minute); err != nil {
		t.Fatal(err)
	}
	if written, _ := writtenChunks(t, disk, mustRead(t, newImg)); written > 1 {
		t.Fatalf("%d data chunks read as the image's right after the erase: the erase did not blank the disk, and this test cannot tell written chunks from old ones", written)
	}
	want := mustRead(t, newImg)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		written, data := writtenChunks(t, disk, want)
		if written >= data/2 {
			break
		}
		if time.Now().After(deadline) || !vm.Running() {
			t.Fatalf("the restore did not write half of its %d data chunks within 2 minutes (%d)", data, written)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	log := vm.Console.Log()
	if strings.Contains(log, "RESULT success") {
		t.Fatalf("the restore finished before the power cut: the test must cut it in the middle")
	}
	written, data := writtenChunks(t, disk, want)
	t.Logf("power cut at %q: %d of the image's %d data chunks (1 MiB) were on the disk", lastLine(log), written, data)
	if written == data || written == 0 {
		t.Fatalf("%d of %d data chunks were written at the power cut: the test must cut in the middle", written, data)
	}
	// The engine writes the first chunk (the MBR, the boot code) last, and
	// erased it first: the half-written disk has no boot sector.
	if h := testenv.Hash(t, disk, 0, 1<<20); h != testenv.ZeroHash(1<<20) {
		t.Errorf("the first MiB of the half-written disk is not blank")
	}
	half := qemu.StartT(t, "half", qemu.WithDisk(disk), qemu.WithDiskBoot())
	if err := half.WaitTimeout(90 * time.Second); err != nil {
		t.Fatalf("the half-written disk: %v", err)
	}
	if strings.Contains(half.Console.Log(), "ASR-FIRSTBOOT-OK") {
		t.Fatalf("the half-written disk booted a system:\n%s", half.Console.Log())
	}
	t.Logf("the half-written disk, booted: %s", strings.Join(strings.Fields(lastLines(half.Console.Log(), 3)), " "))
	if !strings.Contains(half.Console.Log(), "Boot failed") {
		t.Errorf("the BIOS did not say the half-written disk failed to boot:\n%s", half.Console.Log())
	}

	// Switched on again: the appliance restores it whole.
	vm2 := qemu.StartT(t, "cut2", vmOpts(t, qemu.WithDisk(disk), qemu.WithNIC(l.lab, 32))...)
	expectSuccess(t, vm2, 5*time.Minute)
	sameBytes(t, newImg, disk)
	diskBoot(t, "new", disk, newID)
}

// diskBoot boots disk with the BIOS and waits for the marker of system id.
func diskBoot(t *testing.T, name, disk, id string) {
	t.Helper()
	vm := qemu.StartT(t, "boot-"+name, qemu.WithDisk(disk), qemu.WithDiskBoot())
	if _, err := vm.Console.Expect(`ASR-FIRSTBOOT-OK `+regexp.QuoteMeta(id)+`\b`, 2*time.Minute); err != nil {
		t.Fatalf("%s system: %v", name, err)
	}
	if err := vm.WaitTimeout(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
}

// writtenChunks counts the chunks of want (1 MiB, past the first, not all
// zero) that disk holds, and how many such chunks want has.
func writtenChunks(t *testing.T, disk string, want []byte) (written, data int) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	for off := 1 << 20; off+1<<20 <= len(want); off += 1 << 20 {
		w := want[off : off+1<<20]
		if bytes.Equal(w, zero) {
			continue
		}
		data++
		if _, err := f.ReadAt(got, int64(off)); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got, w) {
			written++
		}
	}
	return written, data
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestApplianceNoSource: no asr.source= and a DHCP server that does not
// set option 224. The appliance must stop, say what it tried, and leave the
// disk alone.
func TestApplianceNoSource(t *testing.T) {
	testenv.RequireVM(t)
	testenv.Require(t, "dnsmasq", "ip")
	lab := netlab.NewT(t, "n6ans")
	srv := lab.AddHostT(t, "s", 1)
	dir := t.TempDir()
	netlab.StartDHCPT(t, srv, dir)
	disk := filepath.Join(dir, "vda.img")
	testenv.FillRandom(t, disk, 32<<20, 601)
	before := testenv.Hash(t, disk, 0, 32<<20)

	vm := qemu.StartT(t, "nosource", vmOpts(t, qemu.WithDisk(disk), qemu.WithNIC(lab, 33))...)
	why, _ := expectFailure(t, vm, 3*time.Minute)
	for _, s := range []string{"no asr.source= on the kernel command line", "no DHCP option 224", "eth0"} {
		if !strings.Contains(why, s) {
			t.Errorf("the failure does not say %q: %s", s, why)
		}
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Hash(t, disk, 0, 32<<20) != before {
		t.Errorf("the appliance changed the disk though it found no source")
	}
}

// TestExampleDnsmasqPXE asks the lab's dnsmasq, running the example
// configuration, what each kind of network boot firmware gets, as the
// firmware would (a DHCP client in a lab host), and fetches the PXE files by
// TFTP: QEMU's NIC ROMs are iPXE already, so the VM tests never take the
// PXE-ROM path of a real PC.
func TestExampleDnsmasqPXE(t *testing.T) {
	testenv.Require(t, "curl")
	requireSigned(t, shimSigned, grubNetSigned)
	l := netbootLab(t, "pxe")
	client := l.lab.AddHostT(t, "c", 2)
	checkPXEAnswers(t, client, true)
}

// TestExampleDhcpdPXE runs ISC dhcpd with the example dhcpd.conf, as it is,
// in a lab and asks it what dnsmasq was asked above.
func TestExampleDhcpdPXE(t *testing.T) {
	testenv.Require(t, "dhcpd", "ip")
	lab := netlab.NewT(t, "n6aisc")
	srv := lab.AddHostT(t, "s", 1)
	client := lab.AddHostT(t, "c", 2)
	conf, err := filepath.Abs("../appliance/examples/dhcpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leases := filepath.Join(dir, "dhcpd.leases")
	if err := os.WriteFile(leases, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := netlab.StartProcT(t, "dhcpd", srv.Command(context.Background(), "dhcpd", "-4", "-f", "-d",
		"-cf", conf, "-lf", leases, "-pf", filepath.Join(dir, "dhcpd.pid"), "eth0"))
	p.WaitForT(t, `Server starting service`, 20*time.Second)
	checkPXEAnswers(t, client, false)
}

// checkPXEAnswers asks the lab's DHCP server from client as BIOS PXE, UEFI
// PXE and iPXE firmware: each must be told what the example configurations
// say, with option 224. With tftp, it fetches the PXE files by TFTP too.
func checkPXEAnswers(t *testing.T, client *netlab.Host, tftp bool) {
	t.Helper()
	for _, c := range []struct {
		firmware string
		mods     []dhcpv4.Modifier
		file     string // what the firmware is told to load
		tftp     string // when it comes by TFTP: the file it must be
	}{
		{"BIOS PXE ROM", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC))},
			"undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe"},
		{"UEFI x86-64 PXE", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64))},
			"shimx64.efi", shimSigned},
		{"UEFI x86-64 PXE (arch 9)", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_BC))},
			"shimx64.efi", shimSigned},
		// iPXE says so with option 175 (its features) and user class "iPXE".
		{"iPXE", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{0x13, 0x01, 0x01}),
			dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))},
			"http://198.18.0.1/boot.ipxe", ""},
	} {
		var ack *dhcpv4.DHCPv4
		err := client.Do(func() error {
			dc, err := nclient4.New("eth0", nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3))
			if err != nil {
				return err
			}
			defer dc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			lease, err := dc.Request(ctx, append(c.mods, dhcpv4.WithRequestedOptions(dhcpv4.GenericOptionCode(224)))...)
			if err != nil {
				return err
			}
			ack = lease.ACK
			return nil
		})
		if err != nil {
			t.Fatalf("%s: DHCP: %v", c.firmware, err)
		}
		if got := ack.BootFileName; got != c.file {
			t.Errorf("%s is told to load %q, want %q", c.firmware, got, c.file)
		}
		if got := string(ack.Options.Get(dhcpv4.GenericOptionCode(224))); got != "asr://198.18.0.1" {
			t.Errorf("%s: option 224 is %q, want asr://198.18.0.1", c.firmware, got)
		}
		if c.tftp == "" {
			continue
		}
		if ack.ServerIPAddr.String() != "198.18.0.1" {
			t.Errorf("%s: next server %s, want 198.18.0.1", c.firmware, ack.ServerIPAddr)
		}
		if !tftp {
			continue
		}
		got := filepath.Join(t.TempDir(), "got")
		cmd := client.Command(context.Background(), "curl", "-sS", "--max-time", "20", "-o", got, "tftp://198.18.0.1/"+c.file)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: TFTP %s: %v\n%s", c.firmware, c.file, err, out)
		}
		if !bytes.Equal(mustRead(t, got), mustRead(t, c.tftp)) {
			t.Errorf("%s: %s by TFTP is not %s", c.firmware, c.file, c.tftp)
		}
	}
}
