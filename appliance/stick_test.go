package appliance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

func TestFindStickOnlyOnRemovableDisks(t *testing.T) {
	internal := Disk{Name: "vda", Path: "/dev/vda"}
	usb := Disk{Name: "sda", Path: "/dev/sda", Removable: true}
	usb2 := Disk{Name: "sdb", Path: "/dev/sdb", Removable: true}
	parts := []Partition{
		{Path: "/dev/vda3", Disk: internal, Label: "ASRDATA"}, // a restored copy of a stick
		{Path: "/dev/sda2", Disk: usb, Label: ""},
		{Path: "/dev/sda3", Disk: usb, Label: "ASRDATA"},
	}
	p, err := FindStick("ASRDATA", parts)
	if err != nil || p.Path != "/dev/sda3" {
		t.Errorf("FindStick = %s, %v; want /dev/sda3", p.Path, err)
	}
	if _, err := FindStick("ASRDATA", parts[:2]); err == nil || !strings.Contains(err.Error(), "no USB stick") {
		t.Errorf("FindStick with the label on an internal disk only = %v; want no stick", err)
	}
	two := append(parts, Partition{Path: "/dev/sdb3", Disk: usb2, Label: "ASRDATA"})
	if _, err := FindStick("ASRDATA", two); err == nil || !strings.Contains(err.Error(), "/dev/sda3") || !strings.Contains(err.Error(), "/dev/sdb3") {
		t.Errorf("FindStick with two sticks = %v; want a refusal naming both", err)
	}
}

func TestChooseStickImage(t *testing.T) {
	dir := t.TempDir()
	if _, err := ChooseStickImage(dir, "", ""); err == nil || !strings.Contains(err.Error(), "holds no prepared image") {
		t.Errorf("empty stick: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "lab.asr"), nil, 0o644)
	if p, err := ChooseStickImage(dir, "", ""); err != nil || filepath.Base(p) != "lab.asr" {
		t.Errorf("one image: %s, %v", p, err)
	}
	os.WriteFile(filepath.Join(dir, "kiosk.asr"), nil, 0o644)
	if _, err := ChooseStickImage(dir, "", ""); err == nil || !strings.Contains(err.Error(), "kiosk.asr, lab.asr") || !strings.Contains(err.Error(), "asr.image=") {
		t.Errorf("two images, none chosen: %v", err)
	}
	if p, err := ChooseStickImage(dir, "", "kiosk"); err != nil || filepath.Base(p) != "kiosk.asr" {
		t.Errorf("asr.image=kiosk: %s, %v", p, err)
	}
	if p, err := ChooseStickImage(dir, "lab.asr", ""); err != nil || filepath.Base(p) != "lab.asr" {
		t.Errorf("label:ASRDATA/lab.asr: %s, %v", p, err)
	}
	if _, err := ChooseStickImage(dir, "", "win"); err == nil || !strings.Contains(err.Error(), "it has: kiosk.asr, lab.asr") {
		t.Errorf("asr.image=win: %v", err)
	}
}

// ext4Label reads the label mkfs.ext4 wrote.
func TestExt4Label(t *testing.T) {
	testenv.RequireTools(t, "mkfs.ext4")
	p := filepath.Join(t.TempDir(), "fs.img")
	if out, err := runCmd("mkfs.ext4", "-q", "-F", "-L", "ASRDATA", p, "4M"); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if l, err := ext4Label(p); err != nil || l != "ASRDATA" {
		t.Errorf("ext4Label = %q, %v; want ASRDATA", l, err)
	}
	f := filepath.Join(t.TempDir(), "zero.img")
	os.WriteFile(f, make([]byte, 4096), 0o644)
	if l, err := ext4Label(f); err != nil || l != "" {
		t.Errorf("ext4Label of zeros = %q, %v; want none", l, err)
	}
}

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
