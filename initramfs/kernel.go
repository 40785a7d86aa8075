package initramfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
)

// ErrNoKernel is returned when no kernel with its modules is installed.
var ErrNoKernel = errors.New("no installed kernel")

// Kernel is an installed kernel: its image and its modules.
type Kernel struct {
	Version    string // "6.1.0-56-amd64", as uname -r says
	Image      string // /boot/vmlinuz-VERSION
	ModulesDir string // /lib/modules/VERSION
}

// FindKernel returns the kernel of version kver under root ("/" normally),
// or the newest installed one when kver is empty. A kernel counts as
// installed when both its image and its modules.dep are there, as Debian's
// linux-image packages leave them.
func FindKernel(root, kver string) (Kernel, error) {
	if kver != "" {
		k := kernelAt(root, kver)
		if _, err := os.Stat(k.Image); err != nil {
			return Kernel{}, fmt.Errorf("kernel %s: %w", kver, err)
		}
		if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err != nil {
			return Kernel{}, fmt.Errorf("kernel %s has no module index (is its linux-image package installed?): %w", kver, err)
		}
		return k, nil
	}
	images, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil {
		return Kernel{}, err
	}
	var best Kernel
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		k := kernelAt(root, v)
		if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err != nil {
			continue
		}
		if best.Version == "" || versionLess(best.Version, v) {
			best = k
		}
	}
	if best.Version == "" {
		return Kernel{}, fmt.Errorf("%w: no %s with its modules.dep in %s (on Debian: apt-get install linux-image-amd64)",
			ErrNoKernel, filepath.Join(root, "boot", "vmlinuz-*"), filepath.Join(root, "lib", "modules"))
	}
	return best, nil
}

func kernelAt(root, v string) Kernel {
	return Kernel{
		Version:    v,
		Image:      filepath.Join(root, "boot", "vmlinuz-"+v),
		ModulesDir: filepath.Join(root, "lib", "modules", v),
	}
}

// versionLess orders kernel versions as people read them: runs of digits
// compare as numbers, so 6.1.0-10 comes after 6.1.0-9.
func versionLess(a, b string) bool {
	ra, rb := versionRuns(a), versionRuns(b)
	for i := 0; i < len(ra) && i < len(rb); i++ {
		x, y := ra[i], rb[i]
		nx, errx := strconv.ParseUint(x, 10, 64)
		ny, erry := strconv.ParseUint(y, 10, 64)
		switch {
		case errx == nil && erry == nil:
			if nx != ny {
				return nx < ny
			}
		case x != y:
			return x < y
		}
	}
	return len(ra) < len(rb)
}

func versionRuns(s string) []string {
	var runs []string
	start := 0
	for i := 1; i <= len(s); i++ {
		if i == len(s) || unicode.IsDigit(rune(s[i])) != unicode.IsDigit(rune(s[i-1])) {
			runs = append(runs, s[start:i])
			start = i
		}
	}
	return runs
}
