package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules are the drivers for the storage and network hardware the
// appliance meets: virtual machines, NVMe, SATA, RAID and SAS controllers,
// eMMC and SD, USB sticks and USB network adapters, and the wired NICs of
// desktops and servers. Their dependencies come along (ModuleSet follows
// modules.dep); at boot only those some device's modalias asks for load.
var DefaultModules = []string{
	// virtual machines: QEMU/KVM, VMware, Hyper-V, Xen
	"virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi", "virtio_rng",
	"vmxnet3", "vmw_pvscsi", "hv_netvsc", "hv_storvsc", "xen_blkfront", "xen_netfront",
	// disks
	"nvme", "ahci", "sd_mod",
	// server storage: RAID and SAS/SCSI controllers
	"megaraid_sas", "mpt3sas", "mptsas", "mptspi", "smartpqi", "hpsa", "aacraid", "sym53c8xx",
	// eMMC and SD cards
	"sdhci_pci", "sdhci_acpi", "mmc_block",
	// USB host controllers, sticks and disks, keyboards (for the shell)
	"xhci_pci", "ehci_pci", "ohci_pci", "uhci_hcd", "usb_storage", "uas", "usbhid", "hid_generic",
	// USB network adapters
	"usbnet", "cdc_ether", "cdc_ncm", "r8152", "ax88179_178a", "asix", "rndis_host",
	// wired network
	"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "ice", "bnxt_en", "bnx2x", "tg3",
	"mlx4_en", "mlx5_core", "atlantic", "r8169",
	// RTL8139: 8139too refuses the C+ chips (revision 0x20 and later, as
	// QEMU's rtl8139), which are 8139cp's; both answer the same PCI ID.
	"8139too", "8139cp",
	// the toolkit stick's data partition (ext4 wants crc32c loaded first)
	"ext4", "crc32c_generic",
}

// ErrNoModule is returned when a wanted module is neither a file of the
// kernel's modules.dep nor built into the kernel.
var ErrNoModule = errors.New("no such kernel module")

// Module is one kernel module file of an initramfs.
type Module struct {
	Name string // "usb_storage": the kernel's name, '-' read as '_'
	Src  string // where it is on the build machine, maybe compressed
	Path string // relative to lib/modules/KVER in the initramfs, never compressed
}

// ModuleSet is a subset of a kernel's modules, closed over modules.dep: the
// files to copy and the modules.* indexes that describe exactly them.
type ModuleSet struct {
	Modules []Module // in modules.dep order, which is deterministic
	Builtin []string // wanted names the kernel has built in: nothing to load
	Dep     []byte   // modules.dep of the subset
	Alias   []byte   // modules.alias lines of the subset's modules
	BuiltIn []byte   // modules.builtin, as the kernel has it
	// Firmware are the files under lib/firmware that the modules ask for
	// and the build machine has (AddFirmware).
	Firmware []firmwareFile
}

// modName is the kernel's name of a module file or of a name a person typed:
// "kernel/drivers/usb/storage/usb-storage.ko.xz" and "usb-storage" are both
// "usb_storage".
func modName(p string) string {
	b := path.Base(p)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// uncompressedPath drops the compression suffix of a module path: modules
// are stored plain because the initramfs is compressed as a whole, and
// decompressing each one again at boot costs seconds under emulation.
func uncompressedPath(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+ext) {
			return strings.TrimSuffix(p, ext)
		}
	}
	return p
}

// Modules reads the indexes of the kernel in modDir (lib/modules/KVER) and
// returns the modules named and everything they depend on.
func Modules(modDir string, names []string) (*ModuleSet, error) {
	deps, order, err := readDeps(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, err := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading modules.builtin: %w", err)
	}
	isBuiltin := map[string]bool{}
	for _, l := range strings.Fields(string(builtin)) {
		isBuiltin[modName(l)] = true
	}
	byName := map[string]string{} // name -> path in modules.dep
	for _, p := range order {
		byName[modName(p)] = p
	}

	set := &ModuleSet{BuiltIn: builtin}
	want := map[string]bool{} // paths in modules.dep
	var missing []string
	var visit func(p string)
	visit = func(p string) {
		if want[p] {
			return
		}
		want[p] = true
		for _, d := range deps[p] {
			visit(d)
		}
	}
	for _, n := range names {
		n = modName(n)
		switch p, ok := byName[n]; {
		case ok:
			visit(p)
		case isBuiltin[n]:
			set.Builtin = append(set.Builtin, n)
		default:
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w in %s: %s (neither in modules.dep nor in modules.builtin)", ErrNoModule, modDir, strings.Join(missing, ", "))
	}

	inSet := map[string]bool{}
	for _, p := range order {
		if want[p] {
			inSet[modName(p)] = true
		}
	}
	var dep bytes.Buffer
	for _, p := range order {
		if !want[p] {
			continue
		}
		m := Module{Name: modName(p), Src: filepath.Join(modDir, p), Path: uncompressedPath(p)}
		set.Modules = append(set.Modules, m)
		fmt.Fprintf(&dep, "%s:", m.Path)
		// modules.dep lists every module needed, transitively; a pulled
		// module comes with its own dependencies, each listed once.
		listed := map[string]bool{p: true}
		var list []string
		add := func(ds ...string) {
			for _, d := range ds {
				if !listed[d] {
					listed[d] = true
					list = append(list, d)
				}
			}
		}
		add(deps[p]...)
		for _, d := range list {
			fmt.Fprintf(&dep, " %s", uncompressedPath(d))
		}
		dep.WriteString("\n")
	}
	set.Dep = dep.Bytes()

	set.Alias, err = filterAliases(filepath.Join(modDir, "modules.alias"), inSet)
	if err != nil {
		return nil, err
	}
	return set, nil
}

// readDeps parses modules.dep: "path: dep dep ...", one module a line.
func readDeps(p string) (map[string][]string, []string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the kernel's module index: %w", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, ds, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		mod = strings.TrimSpace(mod)
		deps[mod] = strings.Fields(ds)
		order = append(order, mod)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return deps, order, nil
}

// filterAliases keeps the lines of modules.alias whose module is in the set:
// the appliance matches device modaliases against them.
func filterAliases(p string, inSet map[string]bool) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("reading the kernel's module aliases: %w", err)
	}
	defer f.Close()
	var out bytes.Buffer
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 3 && fs[0] == "alias" && inSet[modName(fs[2])] {
			out.WriteString(sc.Text() + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return out.Bytes(), nil
}

// Read returns the module's contents, decompressed.
func (m Module) Read() ([]byte, error) {
	f, err := os.Open(m.Src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(m.Src, ".xz"):
		r, err = xz.NewReader(f)
	case strings.HasSuffix(m.Src, ".zst"):
		var d *zstd.Decoder
		d, err = zstd.NewReader(f)
		if err == nil {
			defer d.Close()
			r = d
		}
	case strings.HasSuffix(m.Src, ".gz"):
		r, err = gzip.NewReader(f)
	}
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", m.Src, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", m.Src, err)
	}
	return b, nil
}

// Names lists the set's module names, sorted.
func (s *ModuleSet) Names() []string {
	n := make([]string, len(s.Modules))
	for i, m := range s.Modules {
		n[i] = m.Name
	}
	sort.Strings(n)
	return n
}
