package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeKernel writes a lib/modules/KVER tree under root: module files whose
// contents are their names (compressed as their suffix says), and indexes.
func fakeKernel(t *testing.T, root, kver string, dep, alias, builtin string) string {
	t.Helper()
	dir := filepath.Join(root, "lib", "modules", kver)
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, _, _ := strings.Cut(line, ":")
		p := filepath.Join(dir, mod)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, compress(t, mod, []byte("module "+modName(mod))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range map[string]string{"modules.dep": dep, "modules.alias": alias, "modules.builtin": builtin} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func compress(t *testing.T, name string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch filepath.Ext(name) {
	case ".xz":
		w, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	case ".zst":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	case ".gz":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	default:
		return b
	}
	return buf.Bytes()
}

const (
	testDep = `kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/block/virtio_blk.ko.zst: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/net/virtio_net.ko.gz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko
kernel/drivers/usb/core/usbcore.ko:
kernel/sound/snd.ko:
`
	testAlias = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias virtio:d00000001v* virtio_net
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias pci:v00008086d00002668sv*sd*bc*sc*i* snd_hda_intel
alias sound-card-* snd
`
	testBuiltin = "kernel/drivers/nvme/host/nvme.ko\n"
)

func TestModules(t *testing.T) {
	dir := fakeKernel(t, t.TempDir(), "6.1.0-1-amd64", testDep, testAlias, testBuiltin)
	set, err := Modules(dir, []string{"virtio_pci", "virtio-blk", "usb-storage", "nvme"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := set.Names(), []string{"usb_storage", "usbcore", "virtio", "virtio_blk", "virtio_pci", "virtio_ring"}; !slices.Equal(got, want) {
		t.Errorf("Modules names = %q, want %q", got, want)
	}
	if got, want := set.Builtin, []string{"nvme"}; !slices.Equal(got, want) {
		t.Errorf("Modules builtin = %q, want %q", got, want)
	}
	// Compression suffixes are gone.
	wantDep := `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko
kernel/drivers/usb/core/usbcore.ko:
`
	if string(set.Dep) != wantDep {
		t.Errorf("modules.dep =\n%s\nwant\n%s", set.Dep, wantDep)
	}
	wantAlias := `alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
`
	if string(set.Alias) != wantAlias {
		t.Errorf("modules.alias =\n%s\nwant\n%s", set.Alias, wantAlias)
	}
	if string(set.BuiltIn) != testBuiltin {
		t.Errorf("modules.builtin = %q, want %q", set.BuiltIn, testBuiltin)
	}
	for _, m := range set.Modules {
		b, err := m.Read()
		if err != nil {
			t.Errorf("Read(%s): %v", m.Src, err)
			continue
		}
		if got, want := string(b), "module "+m.Name; got != want {
			t.Errorf("Read(%s) = %q, want %q", m.Src, got, want)
		}
		if strings.HasSuffix(m.Path, ".xz") || strings.HasSuffix(m.Path, ".zst") || strings.HasSuffix(m.Path, ".gz") {
			t.Errorf("module %s keeps its compression suffix in the initramfs: %s", m.Name, m.Path)
		}
	}
}

func TestModulesMissing(t *testing.T) {
	dir := fakeKernel(t, t.TempDir(), "6.1.0-1-amd64", testDep, testAlias, testBuiltin)
	_, err := Modules(dir, []string{"virtio_blk", "e1000e", "tg3"})
	if !errors.Is(err, ErrNoModule) {
		t.Fatalf("Modules with missing drivers: err = %v, want ErrNoModule", err)
	}
	if !strings.Contains(err.Error(), "e1000e, tg3") {
		t.Errorf("the error does not name the missing modules: %v", err)
	}
	if _, err := Modules(t.TempDir(), []string{"virtio_blk"}); err == nil {
		t.Errorf("Modules of a directory without modules.dep: no error")
	}
}

func TestFindKernel(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-2-amd64"} {
		fakeKernel(t, root, v, testDep, testAlias, "")
		os.MkdirAll(filepath.Join(root, "boot"), 0o755)
		os.WriteFile(filepath.Join(root, "boot", "vmlinuz-"+v), nil, 0o644)
	}
	// An image whose modules are gone (a removed package) does not count.
	os.WriteFile(filepath.Join(root, "boot", "vmlinuz-6.2.0-1-amd64"), nil, 0o644)

	k, err := FindKernel(root, "")
	if err != nil {
		t.Fatal(err)
	}
	want := Kernel{Version: "6.1.0-10-amd64", Image: filepath.Join(root, "boot", "vmlinuz-6.1.0-10-amd64"),
		ModulesDir: filepath.Join(root, "lib", "modules", "6.1.0-10-amd64")}
	if k != want {
		t.Errorf("FindKernel(newest) = %+v, want %+v", k, want)
	}
	if k, err := FindKernel(root, "6.1.0-2-amd64"); err != nil || k.Version != "6.1.0-2-amd64" {
		t.Errorf("FindKernel(6.1.0-2-amd64) = %+v, %v", k, err)
	}
	if _, err := FindKernel(root, "6.2.0-1-amd64"); err == nil {
		t.Errorf("FindKernel of a kernel without modules: no error")
	}
	if _, err := FindKernel(t.TempDir(), ""); !errors.Is(err, ErrNoKernel) {
		t.Errorf("FindKernel with no kernel: err = %v, want ErrNoKernel", err)
	}
}

func TestVersionLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9-amd64", "6.1.0-10-amd64", true},
		{"6.1.0-10-amd64", "6.1.0-9-amd64", false},
		{"5.10.0-28-amd64", "6.1.0-1-amd64", true},
		{"6.1.0-1-amd64", "6.1.0-1-amd64", false},
		{"6.1.0-1", "6.1.0-1-amd64", true},
		{"6.1.0-1-amd64", "6.1.0-1-cloud-amd64", true},
	} {
		if got := versionLess(c.a, c.b); got != c.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
