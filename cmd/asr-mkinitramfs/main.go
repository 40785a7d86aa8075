// Command asr-mkinitramfs builds the asr appliance's initramfs: /init is
// asr-init, with the kernel modules for common disks and NICs of an installed
// kernel. See package initramfs.
//
//	asr-mkinitramfs -o out/asr-initramfs.cpio.gz -kernel out/vmlinuz [-kver 6.1.0-56-amd64] [-trusted-key a.pub]...
//
// With -trusted-key, the appliance restores only images signed by one of
// those minisign keys (they go to /etc/asr/trusted-keys in the initramfs).
//
// Boot it with that kernel: qemu-system-x86_64 -kernel out/vmlinuz -initrd
// out/asr-initramfs.cpio.gz -append "console=ttyS0 asr.source=http://..."
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/asrlinux/asr/initramfs"
	"github.com/asrlinux/asr/internal/trust"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

func main() {
	err := run(os.Stdout, os.Stderr, os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "asr-mkinitramfs: %v\n", err)
		os.Exit(1)
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func run(stdout, stderr io.Writer, args []string) error {
	fs := flag.NewFlagSet("asr-mkinitramfs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "out/asr-initramfs.cpio.gz", "the initramfs to write")
	kernelOut := fs.String("kernel", "", "also copy the kernel image here, so the pair boots together")
	kver := fs.String("kver", "", "kernel version whose modules to include (default: the newest installed)")
	root := fs.String("root", "/", "where /boot and /lib/modules are")
	version := fs.String("version", Version, "version stamped into /init")
	modules := fs.String("modules", strings.Join(initramfs.DefaultModules, ","), "kernel modules to include, with their dependencies")
	firmware := fs.String("firmware", initramfs.DefaultFirmwareDir, "where the modules' firmware files are (Debian: firmware-realtek, firmware-bnx2x, firmware-misc-nonfree)")
	dir := fs.String("C", ".", "the asr source tree: go build runs there")
	verbose := fs.Bool("v", false, "print each step")
	var cmds listFlag
	fs.Var(&cmds, "cmd", "another Go command for /bin (repeatable), e.g. github.com/u-root/u-root/cmds/core/gosh")
	var keys listFlag
	fs.Var(&keys, "trusted-key", "minisign public key file (from minisign -G) the appliance trusts (repeatable): with any, it restores only images one of them signed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	// Keys first: a wrong file is the quickest mistake to report.
	for _, f := range keys {
		if _, err := trust.LoadFile(f); err != nil {
			return fmt.Errorf("-trusted-key: %w", err)
		}
	}
	k, err := initramfs.FindKernel(*root, *kver)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	o := initramfs.Options{
		Output: *out, Kernel: k, FirmwareDir: *firmware, Version: *version, Commands: cmds, Dir: *dir, TrustedKeys: keys,
		Modules: strings.FieldsFunc(*modules, func(r rune) bool { return r == ',' || r == ' ' }),
	}
	if *verbose {
		o.Log = func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	}
	res, err := initramfs.Build(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %.1f MiB (kernel %s, %d module files, %d firmware files)\n", res.Path, float64(res.Size)/(1<<20), k.Version, len(res.Modules), len(res.Firmware))
	if n := len(res.MissingFirmware); n > 0 {
		// A note, not a failure: the driver loads, and only a device
		// needing one of these files stays without network or disk.
		fmt.Fprintf(stderr, "asr-mkinitramfs: note: %d firmware files the modules name are not in %s, left out (install Debian's firmware-realtek, firmware-bnx2x, firmware-misc-nonfree from non-free-firmware to carry them)\n", n, *firmware)
		if *verbose {
			for _, m := range res.MissingFirmware {
				fmt.Fprintf(stderr, "  %s\n", m)
			}
		}
	}
	if len(res.TrustedKeys) > 0 {
		fmt.Fprintf(stdout, "%s: restores only images signed by key ID %s (in /%s)\n", res.Path, strings.Join(res.TrustedKeys, ", "), initramfs.TrustedKeysDir)
	}
	if *kernelOut != "" {
		if err := copyFile(k.Image, *kernelOut); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: kernel %s\n", *kernelOut, k.Version)
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst+".part", b, 0o644); err != nil {
		return err
	}
	return os.Rename(dst+".part", dst)
}
