package initramfs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// TestAddFirmware takes the installed kernel's r8169 (whose RTL8168 and
// RTL8125 chips need rtl_nic/ files from firmware-realtek) and a firmware
// directory holding two of its files, one plain and one .xz as newer Debian
// ships them: both go in, plain, and every other file it names is reported
// missing by module and name.
func TestAddFirmware(t *testing.T) {
	k, err := FindKernel("/", "")
	if err != nil {
		testenv.Unavailable(t, "needs an installed kernel: %v", err)
	}
	set, err := Modules(k.ModulesDir, []string{"r8169"})
	if err != nil {
		t.Fatal(err)
	}
	var r8169 Module
	for _, m := range set.Modules {
		if m.Name == "r8169" {
			r8169 = m
		}
	}
	b, err := r8169.Read()
	if err != nil {
		t.Fatal(err)
	}
	names, err := moduleFirmware(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 3 || !strings.HasPrefix(names[0], "rtl_nic/") {
		t.Fatalf("r8169's firmware list = %q, want rtl_nic/ files", names)
	}

	fw := t.TempDir()
	write := func(name string, data []byte) {
		p := filepath.Join(fw, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(names[0], []byte("plain firmware"))
	write(names[1]+".xz", compress(t, names[1]+".xz", []byte("xz firmware")))
	missing, err := set.AddFirmware(fw)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range set.Firmware {
		got[f.Name] = string(f.Data)
	}
	if want := map[string]string{names[0]: "plain firmware", names[1]: "xz firmware"}; len(got) != 2 || got[names[0]] != want[names[0]] || got[names[1]] != want[names[1]] {
		t.Errorf("firmware carried = %q, want %q (decompressed)", got, want)
	}
	if len(missing) != len(names)-2 || !slices.Contains(missing, "r8169: "+names[2]) {
		t.Errorf("missing firmware = %q, want the other %d of r8169's files, each named with its module", missing, len(names)-2)
	}

	// The archive holds them under lib/firmware, where the kernel looks.
	arch, err := baseArchive(k.Version, &ModuleSet{Firmware: set.Firmware}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := arch.Get(filepath.Join("lib/firmware", names[1])); !ok {
		t.Errorf("lib/firmware/%s is not in the archive", names[1])
	}
}

// TestFindFirmwareStaysInside refuses a firmware name that climbs out of
// the firmware directory: the initramfs must hold only what was meant.
func TestFindFirmwareStaysInside(t *testing.T) {
	for _, n := range []string{"../../etc/shadow", "/etc/shadow", ".."} {
		if _, _, err := findFirmware(t.TempDir(), []string{n}); err == nil {
			t.Errorf("findFirmware(%q): no error", n)
		}
	}
}
