package appliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sysDisk is one disk of a sysfs fixture: where the kernel puts it under
// /sys/devices, and its attributes.
type sysDisk struct {
	name, dev  string // "sda", the device path below /sys/devices up to block/
	sectors    string
	removable  string
	model      string
	serial     string
	ro         string
	scsiHost   string // "host0": write hostN/scsi_host/hostN/proc_name
	scsiDriver string
}

// The device paths a 6.1 kernel gives each kind of disk under QEMU and on
// real machines.
const (
	pathNVMe  = "pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1"
	pathSATA  = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"
	pathRAID  = "pci0000:00/0000:00:05.0/host1/target1:2:0/1:2:0:0"
	pathUSB   = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host3/target3:0:0/3:0:0:0"
	pathSD    = "pci0000:00/0000:00:06.0/mmc_host/mmc0/mmc0:aaaa"
	pathEMMC  = "pci0000:00/0000:00:07.0/mmc_host/mmc1/mmc1:0001"
	pathVirt  = "pci0000:00/0000:00:08.0/virtio3"
	pathXen   = "vbd-51712"
	pathNVMe2 = "pci0000:00/0000:00:09.0/nvme/nvme1/nvme1n1"
)

func sysFixture(t *testing.T, disks ...sysDisk) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, v string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		dev := filepath.Join(root, "devices", d.dev)
		dir := filepath.Join(dev, "block", d.name)
		if strings.HasPrefix(d.name, "nvme") {
			dir = dev // NVMe namespaces are block devices themselves
		}
		ro := d.ro
		if ro == "" {
			ro = "0"
		}
		for f, v := range map[string]string{"size": d.sectors, "removable": d.removable, "ro": ro, "device/model": d.model, "device/serial": d.serial} {
			write(filepath.Join(dir, f), v)
		}
		if d.scsiHost != "" {
			i := strings.Index(dev, "/"+d.scsiHost+"/")
			hostDir := dev[:i+1+len(d.scsiHost)]
			write(filepath.Join(hostDir, "scsi_host", d.scsiHost, "proc_name"), d.scsiDriver)
		}
		if err := os.Symlink(dir, filepath.Join(root, "block", d.name)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var (
	nvme  = sysDisk{name: "nvme0n1", dev: pathNVMe, sectors: "4194304", removable: "0", model: "QEMU NVMe Ctrl", serial: "NVME-1"}
	nvme2 = sysDisk{name: "nvme1n1", dev: pathNVMe2, sectors: "8388608", removable: "0", model: "QEMU NVMe Ctrl", serial: "NVME-2"}
	sata  = sysDisk{name: "sda", dev: pathSATA, sectors: "2097152", removable: "0", model: "QEMU HARDDISK", serial: "SATA-1", scsiHost: "host0", scsiDriver: "ahci"}
	raid  = sysDisk{name: "sdb", dev: pathRAID, sectors: "16777216", removable: "0", model: "MR9260-8i", serial: "RAID-LD0", scsiHost: "host1", scsiDriver: "megaraid_sas"}
	stick = sysDisk{name: "sdc", dev: pathUSB, sectors: "62914560", removable: "1", model: "Cruzer", serial: "USB-1", scsiHost: "host3", scsiDriver: "usb-storage"}
	// a USB disk that says it is not removable, as external drives do
	usbHDD = sysDisk{name: "sdd", dev: pathUSB + "x", sectors: "1953525168", removable: "0", model: "Expansion HDD", serial: "USB-2"}
	sd     = sysDisk{name: "mmcblk0", dev: pathSD, sectors: "31116288", removable: "0", serial: "0x1234abcd"}
	emmc   = sysDisk{name: "mmcblk1", dev: pathEMMC, sectors: "61071360", removable: "0", serial: "0x0badcafe"}
	// eMMC boot areas: read-only block devices of their own
	emmcBoot = sysDisk{name: "mmcblk1boot0", dev: pathEMMC, sectors: "8192", removable: "0", ro: "1"}
	virt     = sysDisk{name: "vda", dev: pathVirt, sectors: "2097152", removable: "0"}
	xen      = sysDisk{name: "xvda", dev: pathXen, sectors: "2097152", removable: "0"}
)

func TestDisksBus(t *testing.T) {
	disks, err := Disks(sysFixture(t, nvme, sata, raid, stick, usbHDD, sd, emmcBoot, virt, xen))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Disk{}
	for _, d := range disks {
		got[d.Name] = d
	}
	for name, bus := range map[string]string{
		"nvme0n1": "nvme", "sda": "sata", "sdb": "scsi megaraid_sas", "sdc": "usb", "sdd": "usb",
		"mmcblk0": "mmc", "vda": "virtio", "xvda": "xen",
	} {
		if got[name].Bus != bus {
			t.Errorf("%s: bus %q, want %q", name, got[name].Bus, bus)
		}
	}
	if !got["sdd"].Removable {
		t.Errorf("a USB disk that says it is fixed is not taken as removable: %+v", got["sdd"])
	}
	if _, ok := got["mmcblk1boot0"]; ok {
		t.Errorf("an eMMC boot area is listed as a disk")
	}
	if s := got["sdb"].String(); !strings.Contains(s, "8.0 GiB") || !strings.Contains(s, "scsi megaraid_sas") || !strings.Contains(s, "MR9260-8i") || !strings.Contains(s, "serial RAID-LD0") {
		t.Errorf("a disk's description lacks its size, bus, model or serial: %s", s)
	}
}

func TestChooseTargetKinds(t *testing.T) {
	for _, c := range []struct {
		name  string
		disks []sysDisk
		want  string // the chosen disk; "" for a refusal
		card  bool
	}{
		{"RAID logical disk like any internal disk", []sysDisk{raid, stick}, "/dev/sdb", false},
		{"NVMe beside a USB stick and a USB disk", []sysDisk{nvme, stick, usbHDD}, "/dev/nvme0n1", false},
		{"internal disk wins over an SD card", []sysDisk{sata, sd}, "/dev/sda", false},
		{"SD card when it is the only disk", []sysDisk{sd}, "/dev/mmcblk0", true},
		{"eMMC beside a USB stick", []sysDisk{emmc, emmcBoot, stick}, "/dev/mmcblk1", true},
		{"Xen", []sysDisk{xen}, "/dev/xvda", false},
		{"USB only", []sysDisk{stick, usbHDD}, "", false},
		{"eMMC and an SD card", []sysDisk{emmc, sd}, "", false},
		{"two NVMe", []sysDisk{nvme, nvme2, stick}, "", false},
		{"RAID and SATA", []sysDisk{raid, sata}, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			disks, err := Disks(sysFixture(t, c.disks...))
			if err != nil {
				t.Fatal(err)
			}
			d, err := ChooseTarget("", disks)
			if c.want != "" {
				if err != nil || d.Path != c.want || d.IsCard() != c.card {
					t.Fatalf("ChooseTarget = %s (card %v), %v; want %s (card %v)", d, d.IsCard(), err, c.want, c.card)
				}
				return
			}
			if err == nil {
				t.Fatalf("ChooseTarget = %s; want a refusal", d)
			}
			// The refusal lists every disk with bus, model, size and serial.
			for _, d := range disks {
				for _, s := range []string{d.Path, d.Bus, d.Model, d.Serial} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("the refusal does not show %q of %s: %v", s, d.Path, err)
					}
				}
			}
		})
	}
}

// TestChooseTargetNamed: asr.target= still reaches any disk by name or
// serial, a card or a RAID logical disk among others.
func TestChooseTargetNamed(t *testing.T) {
	disks, err := Disks(sysFixture(t, raid, sata, sd))
	if err != nil {
		t.Fatal(err)
	}
	for named, want := range map[string]string{"RAID-LD0": "/dev/sdb", "/dev/mmcblk0": "/dev/mmcblk0", "sda": "/dev/sda"} {
		if d, err := ChooseTarget(named, disks); err != nil || d.Path != want {
			t.Errorf("ChooseTarget(%q) = %s, %v; want %s", named, d, err, want)
		}
	}
}
