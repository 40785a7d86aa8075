package qemu

import (
	"strings"
	"testing"
)

// TestStartRefusesMixedBoots: the ways to boot a VM exclude each other, and
// a mistake is caught before QEMU or a tap is made.
func TestStartRefusesMixedBoots(t *testing.T) {
	for _, c := range []struct {
		name string
		fns  []Fn
		want string
	}{
		{"a kernel without an initramfs", []Fn{WithKernel("/boot/vmlinuz")}, "give both a kernel and an initramfs"},
		{"UEFI with a kernel", []Fn{WithUEFI("code.fd", "vars.fd"), WithKernel("k"), WithInitramfs("i")}, "UEFI firmware boots from disk"},
		{"netboot without a NIC", []Fn{WithNetboot()}, "WithNetboot needs a NIC"},
		{"netboot and disk boot", []Fn{WithNetboot(), WithDiskBoot()}, "choose one"},
		{"disk boot with a kernel", []Fn{WithDiskBoot(), WithKernel("/boot/vmlinuz")}, "the firmware loads its own"},
		{"netboot with kernel arguments", []Fn{WithNetboot(), WithAppend("asr.source=asr://x")}, "the firmware loads its own"},
	} {
		v, err := Start("t", append(c.fns, WithQEMU("/nonexistent/qemu"))...)
		if err == nil {
			v.Close()
			t.Errorf("%s: Start succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Start = %v, want an error saying %q", c.name, err, c.want)
		}
	}
}
