package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunRefuses(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	notKey := filepath.Join(root, "notakey.pub")
	os.WriteFile(notKey, []byte("untrusted comment: minisign public key\nnot base64\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-root", root}, "no installed kernel"},
		{[]string{"-root", root, "-kver", "6.1.0-1-amd64"}, "kernel 6.1.0-1-amd64"},
		{[]string{"-root", root, "extra"}, "unexpected arguments"},
		// Checked before anything is built, and before the kernel is looked for.
		{[]string{"-root", root, "-trusted-key", notKey}, "-trusted-key: trusted key " + notKey + " is not a minisign public key"},
		{[]string{"-root", root, "-trusted-key", filepath.Join(root, "missing.pub")}, "missing.pub: no such file"},
	} {
		var out, errb bytes.Buffer
		err := run(&out, &errb, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error saying %q", c.args, err, c.want)
		}
	}
}
