package blockmap

import (
	"bytes"
	"testing"
)

// FuzzLVMText maps the tiny physical volume with the input as its
// metadata text (its checksum made right, which the fuzzer cannot find):
// the parser must never panic, and whatever the text says, Build returns a
// valid map.
func FuzzLVMText(f *testing.F) {
	f.Add([]byte(tinyVGText))
	f.Add([]byte("vg { extent_size = 8 physical_volumes { pv0 { id = \"AbCdEf0123456789AbCdEf0123456789\" pe_start = 24 pe_count = 14 } } }\ncontents = \"Text Format Volume Group\"\nversion = 1\n"))
	f.Add([]byte("a = [ \"x\", 1, 2.5 ] # c\nb { c { d = \"\\\"\" } }"))
	lvA, lvB := tinyExt2(6, 7), tinyExt2(6)
	f.Fuzz(func(t *testing.T, text []byte) {
		if len(text) > tinyPVMDALen-512 {
			text = text[:tinyPVMDALen-512]
		}
		parseVG(text) // must not panic, whatever it returns
		checkLVM(t, tinyPV(string(text), lvA, lvB))
	})
}

// FuzzLVMLabel puts the input over the tiny physical volume's first 2 KiB
// (the label sectors), fixing the checksum of a label in sector 1, and
// maps it: readLVMLabel must never panic or read past its sector, and the
// map must be valid.
func FuzzLVMLabel(f *testing.F) {
	lvA, lvB := tinyExt2(6, 7), tinyExt2(6)
	good := tinyPV(tinyVGText, lvA, lvB)
	f.Add(bytes.Clone(good[:2048]))
	f.Add(bytes.Clone(good[512:1024]))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		disk := bytes.Clone(good)
		copy(disk[:2048], b)
		l := disk[512:1024]
		if string(l[:8]) == lvmLabelID {
			putLE32(l[16:], lvmCRC(l[20:]))
		}
		readLVMLabel(disk[:2048])
		checkLVM(t, disk)
	})
}

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// checkLVM is check for a physical volume: Build never fails and makes a
// valid map. A logical volume's region on the disk may start with a free
// block, so check's first-byte rule holds only for the label's region.
func checkLVM(t *testing.T, b []byte) {
	m, err := Build(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Build(%d bytes) = %v, want a map: every read should lie inside the disk", len(b), err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Build(%d bytes) made an invalid map: %v", len(b), err)
	}
	if !m.Used(0, 1) && m.Regions[0].Method == MethodLVM {
		t.Errorf("Build(%d bytes): the label's region is free%s", len(b), describe(m))
	}
}
