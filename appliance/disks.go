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
}

func (d Disk) String() string {
	s := fmt.Sprintf("%s (%s", d.Path, restore.HumanBytes(d.Size))
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
		if skip {
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
		if link, err := filepath.EvalSymlinks(dir); err == nil && strings.Contains(link, "/usb") {
			d.Removable = true
		}
		if d.Size == 0 {
			continue // an empty card reader slot
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ChooseTarget picks the disk to restore: the one named, else the only
// internal (non-removable, writable) disk. With none or several it refuses
// and lists what it found; it never guesses.
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
	var internal []Disk
	for _, d := range disks {
		if !d.Removable && !d.ReadOnly {
			internal = append(internal, d)
		}
	}
	switch len(internal) {
	case 1:
		return internal[0], nil
	case 0:
		return Disk{}, fmt.Errorf("no internal disk found to restore (disks found: %s); name one with asr.target=", list(disks))
	}
	return Disk{}, fmt.Errorf("%d internal disks and no asr.target= to choose: %s; refusing to guess, name one with asr.target=", len(internal), list(internal))
}

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
