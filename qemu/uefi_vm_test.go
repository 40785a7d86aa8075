package qemu

import (
	"strings"
	"testing"
)

// TestStartRefusesSecureBootWithoutUEFI: Secure Boot and the firmware's own
// PXE are OVMF's; asked of SeaBIOS, Start says so before QEMU runs.
func TestStartRefusesSecureBootWithoutUEFI(t *testing.T) {
	for _, c := range []struct {
		name string
		fns  []Fn
	}{
		{"Secure Boot on SeaBIOS", []Fn{WithSecureBoot()}},
		{"no NIC ROM on SeaBIOS", []Fn{WithoutNICROM()}},
	} {
		v, err := Start("t", append(c.fns, WithQEMU("/nonexistent/qemu"))...)
		if err == nil {
			v.Close()
			t.Errorf("%s: Start succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), "need the UEFI firmware (WithUEFI)") {
			t.Errorf("%s: Start = %v, want an error saying it needs WithUEFI", c.name, err)
		}
	}
}
