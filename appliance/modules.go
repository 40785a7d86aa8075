package appliance

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// LoadDrivers loads the modules for the hardware present: every device's
// modalias under sysRoot/bus is matched against modules.alias of the running
// kernel in rootDir/lib/modules, and each match is loaded with its
// dependencies (u-root's kmodule). It returns the modules it loaded. A
// kernel with everything built in has no modules.alias; that is no error.
func LoadDrivers(rootDir, sysRoot string) ([]string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, err
	}
	rel := unix.ByteSliceToString(u.Release[:])
	modDir := filepath.Join(rootDir, "lib", "modules", rel)
	aliases, err := readAliases(filepath.Join(modDir, "modules.alias"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{}
	for _, ma := range deviceAliases(sysRoot) {
		for _, a := range aliases {
			if ok, _ := path.Match(a.pattern, ma); ok {
				wanted[a.module] = true
			}
		}
	}
	names := make([]string, 0, len(wanted))
	for m := range wanted {
		names = append(names, m)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, nil
	}
	prober, err := kmodule.NewProber(kmodule.ProbeOpts{RootDir: rootDir, KVer: rel})
	if err != nil {
		return nil, fmt.Errorf("reading modules.dep: %w", err)
	}
	var loaded []string
	var errs []string
	for _, m := range names {
		if err := prober.Probe(m, ""); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", m, err))
			continue
		}
		loaded = append(loaded, m)
	}
	if len(errs) > 0 {
		return loaded, fmt.Errorf("could not load %s", strings.Join(errs, "; "))
	}
	return loaded, nil
}

// LoadNamed loads modules by name (and their dependencies), for drivers that
// no device alias asks for, such as the filesystems and virtio-rng.
func LoadNamed(rootDir string, names ...string) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	prober, err := kmodule.NewProber(kmodule.ProbeOpts{RootDir: rootDir, KVer: unix.ByteSliceToString(u.Release[:])})
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := prober.Probe(n, ""); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

type alias struct{ pattern, module string }

func readAliases(p string) ([]alias, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []alias
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 3 && fs[0] == "alias" {
			out = append(out, alias{fs[1], fs[2]})
		}
	}
	return out, sc.Err()
}

// deviceAliases reads the modalias of every device the kernel has found:
// its modalias file, or, for buses that have none (MMC: an SD card or eMMC
// says "mmc:block" only in its uevent, and mmc_block would never load),
// the MODALIAS= line of its uevent.
func deviceAliases(sysRoot string) []string {
	devs, _ := filepath.Glob(filepath.Join(sysRoot, "bus", "*", "devices", "*"))
	seen := map[string]bool{}
	var out []string
	for _, d := range devs {
		a := ""
		if b, err := os.ReadFile(filepath.Join(d, "modalias")); err == nil {
			a = strings.TrimSpace(string(b))
		} else if b, err := os.ReadFile(filepath.Join(d, "uevent")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "MODALIAS="); ok {
					a = strings.TrimSpace(v)
				}
			}
		}
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
