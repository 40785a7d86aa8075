package appliance

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// StickScheme starts an asr.source= that names the toolkit stick:
// "label:ASRDATA" is the prepared image on the ext4 filesystem labelled
// ASRDATA of a removable (USB) disk, "label:ASRDATA/lab.asr" one image of
// several there. The stick is never a target: it is removable, it is set
// read-only before its filesystem is mounted (read-only, without replaying
// its journal), and naming it with asr.target= is refused.
const StickScheme = "label:"

// StickDataLabel is the filesystem label `make usb-image` gives the stick's
// data partition.
const StickDataLabel = "ASRDATA"

// stickMount is where the data partition is mounted on the appliance.
const stickMount = "/run/asr-stick"

// parseStickSource splits "label:ASRDATA/lab.asr" into its label and file.
func parseStickSource(s string) (label, file string, err error) {
	label, file, _ = strings.Cut(strings.TrimPrefix(s, StickScheme), "/")
	if label == "" || len(label) > 16 {
		return "", "", fmt.Errorf("asr.source=%s: give label:LABEL or label:LABEL/IMAGE.asr, LABEL being a filesystem label of at most 16 characters (the stick's is %s)", s, StickDataLabel)
	}
	if strings.Contains(file, "/") || file == ".." {
		return "", "", fmt.Errorf("asr.source=%s: name an image at the top of the %s filesystem", s, label)
	}
	return label, file, nil
}

// Partition is a partition of a disk, with its ext2/3/4 label if it has one.
type Partition struct {
	Path  string // /dev/sda3
	Disk  Disk   // the whole disk holding it
	Label string
}

// partitions lists the partitions of disks, reading each one's ext4 label
// from its superblock (under devRoot, normally /dev).
func partitions(sysRoot, devRoot string, disks []Disk) []Partition {
	var out []Partition
	for _, d := range disks {
		ents, _ := os.ReadDir(filepath.Join(sysRoot, "block", d.Name))
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(sysRoot, "block", d.Name, e.Name(), "partition")); err != nil {
				continue
			}
			p := Partition{Path: filepath.Join(devRoot, e.Name()), Disk: d}
			p.Label, _ = ext4Label(p.Path)
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// ext4Label reads the volume label of an ext2/3/4 filesystem: the
// superblock is at byte 1024, its magic 0xEF53 at 56, the label at 120.
func ext4Label(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sb := make([]byte, 256)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return "", err
	}
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return "", nil
	}
	return strings.TrimRight(string(sb[120:136]), "\x00"), nil
}

// FindStick finds the partition labelled label on a removable disk. The
// machine's internal disks are never searched: the image must come from
// the stick, never from the disk about to be erased.
func FindStick(label string, parts []Partition) (Partition, error) {
	var found []Partition
	for _, p := range parts {
		if p.Disk.Removable && p.Label == label {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return Partition{}, fmt.Errorf("no USB stick or removable disk with a filesystem labelled %s (is the toolkit stick plugged in?)", label)
	}
	s := make([]string, len(found))
	for i, p := range found {
		s[i] = p.Path + " on " + p.Disk.String()
	}
	return Partition{}, fmt.Errorf("%d removable disks have a filesystem labelled %s: %s; unplug all but one", len(found), label, strings.Join(s, "; "))
}

// waitStick loads drivers and looks for the stick until it appears or
// timeout: USB storage shows up seconds after the internal disks (the
// usb-storage driver waits before it scans, and sd_mod is only asked for
// once it has).
func waitStick(rootDir, sysRoot, label string, timeout time.Duration, logf func(string, ...any)) (Partition, []Disk, error) {
	deadline := time.Now().Add(timeout)
	seen := map[string]bool{}
	for first := true; ; first = false {
		mods, _ := LoadDrivers(rootDir, sysRoot)
		var fresh []string
		for _, m := range mods {
			if !seen[m] {
				seen[m] = true
				fresh = append(fresh, m)
			}
		}
		if len(fresh) > 0 && !first {
			logf("drivers: %d more loaded %v", len(fresh), fresh)
		}
		disks, err := Disks(sysRoot)
		if err != nil {
			return Partition{}, nil, err
		}
		p, err := FindStick(label, partitions(sysRoot, "/dev", disks))
		if err == nil || time.Now().After(deadline) {
			return p, disks, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// mountStick makes the stick read-only at the block layer, then mounts its
// data partition read-only without replaying its journal: whatever the
// appliance does, the stick's bytes stay as they were.
func mountStick(rootDir string, p Partition) error {
	// ext4 asks for crc32c by a module alias that nothing in the initramfs
	// can resolve at mount time: load it first.
	if err := LoadNamed(rootDir, "crc32c_generic", "ext4"); err != nil {
		return fmt.Errorf("loading the ext4 driver for the stick: %w", err)
	}
	for _, dev := range []string{p.Disk.Path, p.Path} {
		if err := setReadOnly(dev); err != nil {
			return fmt.Errorf("making the stick %s read-only: %w", dev, err)
		}
	}
	if err := os.MkdirAll(stickMount, 0o755); err != nil {
		return err
	}
	err := unix.Mount(p.Path, stickMount, "ext4", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, "noload")
	if err != nil {
		return fmt.Errorf("mounting the stick's %s (ext4, read-only): %w", p.Path, err)
	}
	return nil
}

func setReadOnly(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.BLKROSET, 1)
}

// ChooseStickImage picks the prepared image in dir: the one named (file,
// or asr.image=), else the only one; with several it refuses and lists them.
func ChooseStickImage(dir, file, image string) (string, error) {
	if file != "" {
		p := filepath.Join(dir, file)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("the stick has no image %s: %w", file, err)
		}
		return p, nil
	}
	all, err := filepath.Glob(filepath.Join(dir, "*.asr"))
	if err != nil {
		return "", err
	}
	names := make([]string, len(all))
	for i, p := range all {
		names[i] = filepath.Base(p)
	}
	if image != "" {
		for _, n := range names {
			if n == image || strings.TrimSuffix(n, ".asr") == strings.TrimSuffix(image, ".asr") {
				return filepath.Join(dir, n), nil
			}
		}
		return "", fmt.Errorf("asr.image=%s: the stick has no such image; it has: %s", image, listOrNone(names))
	}
	switch len(names) {
	case 1:
		return all[0], nil
	case 0:
		return "", fmt.Errorf("the stick's %s filesystem holds no prepared image (*.asr at its top level); copy one there", StickDataLabel)
	}
	return "", fmt.Errorf("the stick holds %d images and no asr.image= chooses: %s; give asr.image=NAME", len(names), strings.Join(names, ", "))
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// withoutDisk is disks less the one at path.
func withoutDisk(disks []Disk, path string) []Disk {
	var out []Disk
	for _, d := range disks {
		if d.Path != path {
			out = append(out, d)
		}
	}
	return out
}
