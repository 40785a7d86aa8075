package appliance

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/asrlinux/asr/internal/restore"
)

// Disk is a block device the appliance could restore.
type Disk struct {
	Name      string // "vda"
	Path      string // "/dev/vda"
	Size      int64
	Model     string
	Serial    string
	Removable bool // removable media, or attached by USB
	ReadOnly  bool
	// Bus is how the disk is attached, as the console shows it: "nvme",
	// "sata", "virtio", "usb", "mmc" (SD card or eMMC), "xen", or "scsi"
	// with the controller's driver ("scsi megaraid_sas": a RAID
	// controller's logical disk); "" when sysfs does not say.
	Bus string
}

func (d Disk) String() string {
	s := fmt.Sprintf("%s (%s", d.Path, restore.HumanBytes(d.Size))
	if d.Bus != "" {
		s += ", " + d.Bus
	}
	if d.Model != "" {
		s += ", " + d.Model
	}
	if d.Serial != "" {
		s += ", serial " + d.Serial
	}
	if d.Removable {
		s += ", removable"
	}
	return s + ")"
}

// skipped are kernel block devices that are never a machine's disk.
var skipped = []string{"loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd"}

// Disks lists the whole disks under sysRoot (normally /sys).
func Disks(sysRoot string) ([]Disk, error) {
	ents, err := os.ReadDir(filepath.Join(sysRoot, "block"))
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	var out []Disk
	for _, e := range ents {
		name := e.Name()
		skip := false
		for _, p := range skipped {
			if strings.HasPrefix(name, p) {
				skip = true
			}
		}
		if skip || mmcHardwarePart(name) {
			continue
		}
		dir := filepath.Join(sysRoot, "block", name)
		read := func(p string) string {
			b, _ := os.ReadFile(filepath.Join(dir, p))
			return strings.TrimSpace(string(b))
		}
		sectors, _ := strconv.ParseInt(read("size"), 10, 64)
		d := Disk{
			Name: name, Path: "/dev/" + name, Size: sectors * 512,
			Model: read("device/model"), Serial: read("device/serial"),
			Removable: read("removable") == "1", ReadOnly: read("ro") == "1",
		}
		if d.Serial == "" {
			d.Serial = read("serial") // virtio-blk puts it here
		}
		// USB disks report removable 0 but are the admin's sticks and
		// external drives, never the machine's internal disk.
		if link, err := filepath.EvalSymlinks(dir); err == nil {
			d.Bus = busOf(link)
			if d.Bus == "usb" {
				d.Removable = true
			}
		}
		if d.Size == 0 {
			continue // an empty card reader slot
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// mmcHardwarePart tells an eMMC's boot and RPMB areas (mmcblk0boot0,
// mmcblk0rpmb) from its user area: they are block devices of their own but
// never where a system goes.
func mmcHardwarePart(name string) bool {
	if !strings.HasPrefix(name, "mmcblk") {
		return false
	}
	return strings.Contains(name, "boot") || strings.HasSuffix(name, "rpmb")
}

// busOf reads how a disk is attached from its sysfs device path
// (/sys/devices/.../block/NAME). The order matters: a USB card reader is
// also SCSI, a virtio-scsi disk also virtio.
func busOf(link string) string {
	has := func(s string) bool { return strings.Contains(link, s) }
	switch {
	case has("/usb"):
		return "usb"
	case has("/mmc_host/") || strings.HasPrefix(filepath.Base(link), "mmcblk"):
		return "mmc"
	case has("/nvme/"):
		return "nvme"
	case has("/ata"):
		return "sata"
	case has("/target"):
		// SAS, SCSI, RAID, Hyper-V's storvsc, VMware's pvscsi,
		// virtio-scsi: the host adapter's driver says which.
		if drv := scsiHostDriver(link); drv != "" {
			return "scsi " + drv
		}
		return "scsi"
	case has("/virtio"):
		return "virtio"
	case has("/vbd-"):
		return "xen"
	}
	return ""
}

// scsiHostDriver is the driver of the SCSI host a disk hangs off:
// .../hostN/targetN:C:T/N:C:T:L/block/sdX has .../hostN/scsi_host/hostN/proc_name.
func scsiHostDriver(link string) string {
	dir := link
	for range 6 {
		dir = filepath.Dir(dir)
		if b := filepath.Base(dir); strings.HasPrefix(b, "host") {
			v, err := os.ReadFile(filepath.Join(dir, "scsi_host", b, "proc_name"))
			if err != nil {
				return ""
			}
			return strings.TrimSpace(string(v))
		}
	}
	return ""
}

// ChooseTarget picks the disk to restore: the one named, else the only
// internal disk (not USB, not removable, writable; a RAID controller's
// logical disk is one). An SD or MMC card is chosen only when it is the
// only disk there is to choose (Disk.Bus says so; the caller tells the
// console). With none or several it refuses and lists every disk with its
// bus, model, size and serial; it never guesses.
func ChooseTarget(named string, disks []Disk) (Disk, error) {
	if named != "" {
		for _, d := range disks {
			if named == d.Path || named == d.Name || (d.Serial != "" && named == d.Serial) ||
				strings.HasPrefix(named, "/dev/disk/by-id/") && d.Serial != "" && strings.HasSuffix(named, d.Serial) {
				if d.ReadOnly {
					return Disk{}, fmt.Errorf("asr.target=%s is read-only: %s", named, d)
				}
				return d, nil
			}
		}
		return Disk{}, fmt.Errorf("asr.target=%s matches no disk; disks found: %s", named, list(disks))
	}
	var internal, cards []Disk
	for _, d := range disks {
		switch {
		case d.ReadOnly || d.Bus == "usb":
		case d.Bus == "mmc":
			cards = append(cards, d)
		case !d.Removable:
			internal = append(internal, d)
		}
	}
	switch {
	case len(internal) == 1:
		return internal[0], nil
	case len(internal) > 1:
		return Disk{}, fmt.Errorf("%d internal disks and no asr.target= to choose: %s; refusing to guess, name one with asr.target=", len(internal), list(disks))
	case len(cards) == 1:
		return cards[0], nil
	case len(cards) > 1:
		return Disk{}, fmt.Errorf("no internal disk and %d SD/MMC cards, no asr.target= to choose: %s; refusing to guess, name one with asr.target=", len(cards), list(disks))
	}
	return Disk{}, fmt.Errorf("no internal disk found to restore (disks found: %s; USB and removable disks are never chosen); name one with asr.target=", list(disks))
}

// IsCard tells a disk chosen because it is an SD or MMC card, the only
// disk: the console says so, since on most machines a card is not where
// the system belongs.
func (d Disk) IsCard() bool { return d.Bus == "mmc" }

func list(disks []Disk) string {
	if len(disks) == 0 {
		return "none"
	}
	s := make([]string, len(disks))
	for i, d := range disks {
		s[i] = d.String()
	}
	return strings.Join(s, "; ")
}
