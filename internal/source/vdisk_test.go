package source

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetectVirtualDisk(t *testing.T) {
	with := func(size int, off int, s string) []byte {
		b := make([]byte, size)
		copy(b[off:], s)
		return b
	}
	vdi := func(typ uint32) []byte {
		b := with(4096, 0, "<<< Oracle VM VirtualBox Disk Image >>>\n")
		binary.LittleEndian.PutUint32(b[0x40:], 0xbeda107f)
		binary.LittleEndian.PutUint32(b[0x4c:], typ)
		return b
	}
	vhd := func(at, typ int) []byte {
		b := with(8192, at, "conectix")
		binary.BigEndian.PutUint32(b[at+60:], uint32(typ))
		return b
	}
	for _, tt := range []struct {
		name   string
		b      []byte
		want   string
		refuse string
	}{
		{"qcow2", with(4096, 0, "QFI\xfb\x00\x00\x00\x03"), "qcow2", ""},
		{"qcow", with(4096, 0, "QFI\xfb\x00\x00\x00\x01"), "qcow", ""},
		{"vmdk", with(4096, 0, "KDMV"), "VMDK", ""},
		{"vmdk descriptor", with(4096, 0, "# Disk DescriptorFile\nversion=1\n"), "VMDK", "descriptor"},
		{"vhdx", with(4096, 0, "vhdxfile"), "VHDX", ""},
		{"vhd dynamic", vhd(0, 3), "VHD", ""},
		{"vhd fixed", vhd(8192-512, 2), "VHD", ""},
		{"vhd differencing", vhd(0, 4), "VHD", "differencing"},
		{"vdi", vdi(1), "VDI", ""},
		{"vdi differencing", vdi(4), "VDI", "differencing"},
		{"raw", with(4096, 510, "\x55\xaa"), "", ""},
		{"tiny", []byte{1, 2, 3}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := detectVirtualDisk(bytes.NewReader(tt.b), int64(len(tt.b)))
			if got.Name != tt.want || (tt.refuse == "") != (got.refuse == "") || !strings.Contains(got.refuse, tt.refuse) {
				t.Errorf("detectVirtualDisk(%s) = %+v, want %q refusing %q", tt.name, got, tt.want, tt.refuse)
			}
		})
	}
}

// TestOpenRefusesVirtualDisk: restoring a qcow2 file as if it were a raw
// disk would write its container format onto the target.
func TestOpenRefusesVirtualDisk(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, 1<<20)
	copy(b, "QFI\xfb\x00\x00\x00\x03")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(p, Options{})
	if err == nil {
		s.Close()
		t.Fatalf("Open(qcow2 file) succeeded, want a refusal")
	}
	if !strings.Contains(err.Error(), "is a qcow2 image, not a raw disk") || !strings.Contains(err.Error(), "asr imagescan --source "+p) {
		t.Errorf("Open(qcow2 file) = %v, want a refusal pointing at imagescan", err)
	}
}
