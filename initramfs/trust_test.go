package initramfs

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/asrlinux/asr/internal/trust"
)

// writeKey writes a fresh minisign public key file and returns its path
// and key ID.
func writeKey(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	pub, _, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pub.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, trust.FormatID(pub.ID())
}

func TestTrustedKeysDirIsTheAppliances(t *testing.T) {
	if "/"+TrustedKeysDir != trust.DefaultDir {
		t.Errorf("TrustedKeysDir = %q, but the appliance loads %q", TrustedKeysDir, trust.DefaultDir)
	}
}

// The keys baked into the archive are read back by trust.LoadDir as the
// appliance reads them at boot: each key once, named by its ID.
func TestBaseArchiveHoldsTrustedKeys(t *testing.T) {
	dir := t.TempDir()
	a, idA := writeKey(t, dir, "a.pub")
	sub := filepath.Join(dir, "other")
	os.Mkdir(sub, 0o755)
	b, idB := writeKey(t, sub, "a.pub") // the same base name as the first
	keys, err := trustedKeys([]string{a, b, a})
	if err != nil {
		t.Fatal(err)
	}
	arch, err := baseArchive("6.1.0-test", &ModuleSet{}, keys)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for name, r := range arch.Files {
		if !strings.HasPrefix(name, TrustedKeysDir+"/") {
			continue
		}
		data, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := trust.LoadDir(filepath.Join(root, TrustedKeysDir))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range got {
		ids = append(ids, trust.FormatID(k.ID))
	}
	want := []string{idA, idB}
	if idB < idA {
		want = []string{idB, idA} // LoadDir reads in name order
	}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("keys in the archive = %v, want %v", ids, want)
	}
	if _, ok := arch.Files["etc/asr"]; !ok {
		t.Errorf("the archive has no etc/asr directory")
	}
}

func TestTrustedKeysRefused(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "key.key")
	os.WriteFile(sec, []byte("untrusted comment: minisign encrypted secret key\nRWRTY0Iy\n"), 0o600)
	for _, c := range []struct {
		file string
		want string
	}{
		{filepath.Join(dir, "missing.pub"), "no such file"},
		{sec, "is not a minisign public key"},
	} {
		_, err := trustedKeys([]string{c.file})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.file) {
			t.Errorf("trustedKeys(%s) = %v, want an error naming the file and saying %q", c.file, err, c.want)
		}
	}
	if keys, err := trustedKeys(nil); err != nil || len(keys) != 0 {
		t.Errorf("trustedKeys(nil) = %v, %v, want none", keys, err)
	}
	arch, err := baseArchive("6.1.0-test", &ModuleSet{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := arch.Files[TrustedKeysDir]; ok {
		t.Errorf("an archive without keys has %s: an empty directory that means nothing", TrustedKeysDir)
	}
}
