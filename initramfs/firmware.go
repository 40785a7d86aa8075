package initramfs

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ulikunitz/xz"
)

// DefaultFirmwareDir is where firmware files are looked for, a list
// separated by ':' as $PATH is (the first directory holding a file gives
// it): where Debian's firmware-* packages install their files, then
// FirmwareCacheDir.
const DefaultFirmwareDir = "/lib/firmware:" + FirmwareCacheDir

// FirmwareCacheDir is where scripts/deps.sh unpacks Debian's firmware
// packages the drivers need (firmware-realtek for r8169 and r8152,
// firmware-bnx2x for bnx2x, firmware-misc-nonfree for tg3 and ice; all
// from the non-free-firmware component) without installing them: the
// build machine's apt sources need not enable that component, and the
// machine's own /lib/firmware stays as its packages left it.
const FirmwareCacheDir = "/var/cache/asr/firmware/lib/firmware"

// moduleFirmware lists the firmware files a module may ask for: the
// "firmware=" entries of its .modinfo section (what `modinfo -F firmware`
// prints). The module comes from the build machine's kernel, not from a
// stranger, but a damaged file is still an error, not a crash.
func moduleFirmware(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil
	}
	b, err := s.Data()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("firmware=")); ok && len(v) > 0 {
			out = append(out, string(v))
		}
	}
	return out, nil
}

// firmwareFile is one firmware file for the initramfs, stored plain under
// lib/firmware: the whole archive is compressed, and the kernel's loader
// reads plain files whatever its CONFIG_FW_LOADER_COMPRESS_* say.
type firmwareFile struct {
	Name string // "rtl_nic/rtl8168h-2.fw", relative to lib/firmware
	Data []byte
}

// findFirmware reads each wanted firmware file from the first of dirs (a
// list separated by ':') that has it, plain or .xz (as newer Debian
// packages ship them). Names found nowhere are returned as missing: a
// driver without its firmware still loads, and only the hardware that
// needs that file stays dark, so it is a note, not an error.
func findFirmware(dirs string, names []string) (found []firmwareFile, missing []string, err error) {
	seen := map[string]bool{}
	sort.Strings(names)
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		clean := path.Clean(n)
		if path.IsAbs(clean) || strings.HasPrefix(clean, "../") || clean == ".." {
			return nil, nil, fmt.Errorf("firmware name %q leaves %s", n, dirs)
		}
		var b []byte
		for _, dir := range filepath.SplitList(dirs) {
			if dir == "" {
				continue
			}
			p := filepath.Join(dir, filepath.FromSlash(clean))
			b, err = os.ReadFile(p)
			if os.IsNotExist(err) {
				b, err = readXZ(p + ".xz")
			}
			if !os.IsNotExist(err) {
				break
			}
		}
		switch {
		case b == nil && (err == nil || os.IsNotExist(err)):
			missing = append(missing, clean)
			continue
		case err != nil:
			return nil, nil, fmt.Errorf("firmware %s: %w", clean, err)
		}
		found = append(found, firmwareFile{Name: clean, Data: b})
	}
	return found, missing, nil
}

func readXZ(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := xz.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", p, err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", p, err)
	}
	return b.Bytes(), nil
}

// AddFirmware puts into the set the firmware files its modules name that
// are under one of dirs (a list separated by ':', the first that has a
// file gives it), and returns the names that are not, as "module: file"
// for the build's log.
func (s *ModuleSet) AddFirmware(dirs string) (missing []string, err error) {
	owner := map[string]string{}
	var names []string
	for _, m := range s.Modules {
		b, err := m.Read()
		if err != nil {
			return nil, err
		}
		fw, err := moduleFirmware(b)
		if err != nil {
			return nil, fmt.Errorf("reading the firmware list of %s: %w", m.Src, err)
		}
		for _, f := range fw {
			if _, ok := owner[f]; !ok {
				owner[f] = m.Name
				names = append(names, f)
			}
		}
	}
	found, miss, err := findFirmware(dirs, names)
	if err != nil {
		return nil, err
	}
	s.Firmware = found
	for _, f := range miss {
		missing = append(missing, owner[f]+": "+f)
	}
	return missing, nil
}
