package initramfs

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/u-root/mkuimage/cpio"
)

// TestBuild builds the appliance's initramfs from the installed kernel twice
// and reads it back: the same bytes both times, /init a static asr-init
// stamped with the version, and every module modules.dep names present.
func TestBuild(t *testing.T) {
	k, err := FindKernel("/", "")
	if err != nil {
		testenv.Unavailable(t, "needs an installed kernel: %v", err)
	}
	dir := t.TempDir()
	const version = "v9.8.7-test"
	var outs [2][]byte
	for i := range outs {
		p := filepath.Join(dir, "initramfs.cpio.gz")
		res, err := Build(Options{Output: p, Kernel: k, Version: version, Log: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		if res.Size > 32<<20 {
			t.Errorf("initramfs is %d MiB: it should stay small", res.Size>>20)
		}
		if outs[i], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Errorf("two builds from the same inputs differ: the initramfs is not reproducible")
	}

	files := readArchive(t, outs[0])
	if init, ok := files["init"]; !ok || init.Mode&cpio.S_IFMT != cpio.S_IFLNK || string(init.data) != "bin/asr-init" {
		t.Errorf("/init is not a symlink to bin/asr-init: %+v", init.Info)
	}
	bin := files["bin/asr-init"].data
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("bin/asr-init: %v", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("bin/asr-init has an ELF interpreter: it must be static")
		}
	}
	if !bytes.Contains(bin, []byte(version)) {
		t.Errorf("bin/asr-init does not carry the version %q", version)
	}
	if c := files["dev/console"]; c.Mode&cpio.S_IFMT != cpio.S_IFCHR || c.Rmajor != 5 || c.Rminor != 1 {
		t.Errorf("dev/console is not the character device 5:1: %+v", c.Info)
	}

	modDir := path.Join("lib", "modules", k.Version)
	dep := string(files[path.Join(modDir, "modules.dep")].data)
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, deps, _ := strings.Cut(line, ":")
		for _, m := range append(strings.Fields(deps), mod) {
			if _, ok := files[path.Join(modDir, m)]; !ok {
				t.Errorf("modules.dep names %s, which is not in the initramfs", m)
			}
		}
	}
	alias := string(files[path.Join(modDir, "modules.alias")].data)
	for _, m := range []string{"virtio_blk", "virtio_net", "nvme", "ahci", "e1000e", "usb_storage",
		"megaraid_sas", "mptsas", "sym53c8xx", "vmxnet3", "hv_storvsc", "xen_blkfront", "sdhci_pci", "mmc_block", "xhci_pci", "r8152", "cdc_ether", "igc", "mlx5_core", "8139too"} {
		if !strings.Contains(alias, " "+m+"\n") {
			t.Errorf("modules.alias has no alias for %s", m)
		}
	}
}

type file struct {
	cpio.Info
	data []byte
}

func readArchive(t *testing.T, gz []byte) map[string]file {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]file{}
	for _, r := range recs {
		var b []byte
		if r.ReaderAt != nil {
			b, err = io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
		}
		files[r.Name] = file{r.Info, b}
	}
	return files
}
