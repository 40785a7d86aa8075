package qemu_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// TestMatrixApplianceGrowMounted: asr.grow on the filesystems that grow
// only mounted. A disk whose one partition holds XFS (or btrfs), made by
// mkfs.xfs (mkfs.btrfs), is restored by the appliance over HTTP onto a disk
// 256 MiB larger: the appliance loads the filesystem's driver from its
// initramfs, mounts it and grows it (xfs_growfs, btrfs filesystem resize
// max). The superblock on the disk then says the filesystem is larger, and
// the filesystem's own checker finds it clean.
func TestMatrixApplianceGrowMounted(t *testing.T) {
	testenv.RequireVM(t, "sgdisk", "partx", "losetup", "nginx", "dnsmasq", "mkfs.xfs", "xfs_repair", "mkfs.btrfs", "btrfs")
	l := newVMLab(t, "gm")
	l.nginx(t)
	for i, fs := range []struct {
		name   string
		mkfs   []string
		check  []string
		size   func(sb []byte) int64 // the filesystem's size from its first 128 KiB
		grown  string                // how the appliance says it grew it
		sbSize int
	}{
		{"xfs", []string{"mkfs.xfs", "-q", "-f"}, []string{"xfs_repair", "-n"},
			func(sb []byte) int64 {
				return int64(binary.BigEndian.Uint64(sb[8:])) * int64(binary.BigEndian.Uint32(sb[4:]))
			}, `XFS filesystem grown from \d+ to \d+ blocks with xfs_growfs`, 512},
		{"btrfs", []string{"mkfs.btrfs", "-q", "-f"}, []string{"btrfs", "check", "--readonly"},
			func(sb []byte) int64 { return int64(binary.LittleEndian.Uint64(sb[0x10000+0x70:])) },
			`btrfs filesystem grown to fill it with btrfs filesystem resize max`, 0x10000 + 0x100},
	} {
		t.Run(fs.name, func(t *testing.T) {
			dir := t.TempDir()
			const size, extra = 400 << 20, 256 << 20
			disk := emptyDisk(t, dir, "disk.img", size)
			testenv.Run(t, "sgdisk", "-n1:2048:0", "-t1:8300", disk)
			off := partStart(t, disk, 1)
			psize := (partEnd(t, disk, 1)+1)*512 - off
			dev := testenv.Loop(t, disk, "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(psize))
			testenv.Run(t, fs.mkfs[0], append(fs.mkfs[1:], dev)...)
			before := fsSize(t, disk, off, fs.sbSize, fs.size)
			img := "grow-" + fs.name + ".asr"
			testenv.Run(t, testenv.Asr(t), "imagescan", "--source", disk, "--output", filepath.Join(l.srvDir, img))

			target := emptyDisk(t, dir, "target.img", size+extra)
			vm := qemu.StartT(t, "hr-grow-"+fs.name, vmOpts(t, qemu.WithDisk(target), qemu.WithNIC(l.lab, 10+i),
				qemu.WithAppend("asr.source=http://198.18.0.1:8080/"+img, "asr.grow", "asr.after=poweroff", "no_timer_check"))...)
			m, err := vm.Console.Expect(`asr-appliance: RESULT (.*)`, 10*time.Minute)
			if err != nil {
				t.Fatalf("%s: %v", vm.Name, err)
			}
			if !regexp.MustCompile(`^success: .*, verified; grew partition 1 to [^:]+: ` + fs.grown).MatchString(m[1]) {
				t.Fatalf("%s: RESULT %s", vm.Name, m[1])
			}
			t.Logf("%s: restored and grown %.0f s after QEMU started", fs.name, time.Since(vm.Started).Seconds())
			if err := vm.WaitTimeout(60 * time.Second); err != nil {
				t.Fatalf("after its success line: %v", err)
			}
			toff := partStart(t, target, 1)
			tsize := (partEnd(t, target, 1)+1)*512 - toff
			after := fsSize(t, target, toff, fs.sbSize, fs.size)
			t.Logf("%s: %d MiB filesystem grown to %d MiB in a %d MiB partition", fs.name, before>>20, after>>20, tsize>>20)
			if after < before+extra-(2<<20) || after > tsize {
				t.Errorf("%s: %d bytes before, %d after, in a partition of %d: not grown to fill it", fs.name, before, after, tsize)
			}
			tdev := testenv.Loop(t, target, "-r", "-o", fmt.Sprint(toff), "--sizelimit", fmt.Sprint(tsize))
			testenv.Run(t, fs.check[0], append(fs.check[1:], tdev)...)
		})
	}
}

// fsSize reads the first n bytes of the filesystem at off of disk and
// gives them to size.
func fsSize(t *testing.T, disk string, off int64, n int, size func([]byte) int64) int64 {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return size(b)
}
