package initramfs

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/u-root/mkuimage/cpio"
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

// TestBuildCarriesDriverFirmware builds the appliance's initramfs from the
// installed kernel with the default firmware directories (scripts/deps.sh
// unpacks Debian's firmware-realtek, firmware-bnx2x and
// firmware-misc-nonfree into FirmwareCacheDir): the firmware of r8169,
// r8152, bnx2x, tg3 and ice is in lib/firmware, byte for byte as Debian
// ships it, and nothing is there that no carried module names.
func TestBuildCarriesDriverFirmware(t *testing.T) {
	k, err := FindKernel("/", "")
	if err != nil {
		testenv.Unavailable(t, "needs an installed kernel: %v", err)
	}
	// One file of each package; each is named by a module the kernel has.
	want := []string{
		"rtl_nic/rtl8168h-2.fw",       // r8169, firmware-realtek
		"rtl_nic/rtl8153a-4.fw",       // r8152, firmware-realtek
		"bnx2x/bnx2x-e2-7.13.21.0.fw", // bnx2x, firmware-bnx2x
		"tigon/tg3_tso5.bin",          // tg3, firmware-misc-nonfree
		"intel/ice/ddp/ice.pkg",       // ice, firmware-misc-nonfree
	}
	onDisk := map[string][]byte{}
	found, missing, err := findFirmware(DefaultFirmwareDir, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		testenv.Unavailable(t, "firmware %s is in none of %s: run scripts/deps.sh, which fetches Debian's firmware packages", strings.Join(missing, ", "), DefaultFirmwareDir)
	}
	for _, f := range found {
		onDisk[f.Name] = f.Data
	}

	p := filepath.Join(t.TempDir(), "initramfs.cpio.gz")
	res, err := Build(Options{Output: p, Kernel: k, Version: "fw-test", Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	gz, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, gz)
	for _, name := range want {
		f, ok := files[path.Join("lib/firmware", name)]
		switch {
		case !ok:
			t.Errorf("lib/firmware/%s is not in the initramfs", name)
		case !bytes.Equal(f.data, onDisk[name]):
			t.Errorf("lib/firmware/%s differs from Debian's file (%d bytes, want %d)", name, len(f.data), len(onDisk[name]))
		}
	}

	// Only what the carried modules name: the set the build carried.
	set, err := Modules(k.ModulesDir, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range set.Modules {
		b, err := m.Read()
		if err != nil {
			t.Fatal(err)
		}
		fw, err := moduleFirmware(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fw {
			named[path.Clean(f)] = true
		}
	}
	carried, bytesFW := 0, 0
	for name, f := range files {
		fw, ok := strings.CutPrefix(name, "lib/firmware/")
		if !ok || f.Mode&cpio.S_IFMT != cpio.S_IFREG {
			continue
		}
		carried++
		bytesFW += len(f.data)
		if !named[fw] {
			t.Errorf("lib/firmware/%s is in the initramfs, but no carried module names it", fw)
		}
	}
	if carried != len(res.Firmware) {
		t.Errorf("%d firmware files in the archive, the build says %d", carried, len(res.Firmware))
	}
	t.Logf("initramfs %.1f MiB, %d module files, %d firmware files (%.1f MiB plain) of the %d the modules name; not found: %d",
		float64(res.Size)/(1<<20), len(res.Modules), carried, float64(bytesFW)/(1<<20), len(named), len(res.MissingFirmware))
}
