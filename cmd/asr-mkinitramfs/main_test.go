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
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-root", root}, "no installed kernel"},
		{[]string{"-root", root, "-kver", "6.1.0-1-amd64"}, "kernel 6.1.0-1-amd64"},
		{[]string{"-root", root, "extra"}, "unexpected arguments"},
	} {
		var out, errb bytes.Buffer
		err := run(&out, &errb, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error saying %q", c.args, err, c.want)
		}
	}
}
