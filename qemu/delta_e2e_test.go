package qemu_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// TestPowerCutMidDeltaRestore switches a VM off (kills QEMU) in the middle
// of a delta restore (asr.delta) over a disk that holds an older system,
// most of whose chunks the new image shares: the first chunk, blanked
// first and written last although it is (nearly) the same, leaves the disk
// unbootable; switched on again, the appliance restores it by delta.
func TestPowerCutMidDeltaRestore(t *testing.T) {
	testenv.RequireVM(t)
	l := netbootLab(t, "dcut")
	dir := t.TempDir()
	oldID, newID := markerID("old"), markerID("new")
	oldImg := mkbootos(t, dir, oldID)
	newImg := mkbootos(t, dir, newID)
	img := filepath.Join(l.srvDir, "new.asr")
	testenv.Run(t, testenv.Asr(t), "imagescan", "--source", newImg, "--output", img)
	l.asrServer(t, img, "239.255.61.3", 700_000)

	disk := filepath.Join(l.dir, "vda.img")
	testenv.Run(t, "cp", "--sparse=always", oldImg, disk)
	if err := os.Truncate(disk, 32<<20); err != nil {
		t.Fatal(err)
	}
	diskBoot(t, "old", disk, oldID)

	vm := qemu.StartT(t, "dcut1", vmOpts(t, qemu.WithDisk(disk), qemu.WithNIC(l.lab, 33), qemu.WithAppend("asr.delta"))...)
	// Cut as soon as the first chunk is blank: the chunks that differ
	// come from the stream after that.
	if _, err := vm.Console.Expect(`Blanking the first chunk of /dev/vda and discarding free space\.\.\.done`, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	log := vm.Console.Log()
	if strings.Contains(log, "RESULT success") {
		t.Fatalf("the delta restore finished before the power cut: the test must cut it in the middle")
	}
	if !regexp.MustCompile(`Comparing: \d+ of \d+ stored chunks on /dev/vda match the image`).MatchString(log) {
		t.Errorf("the appliance did not compare the disk with the image (asr.delta):\n%s", lastLines(log, 20))
	}
	if h := testenv.Hash(t, disk, 0, 1<<20); h != testenv.ZeroHash(1<<20) {
		t.Errorf("the first MiB of the interrupted delta restore's disk is not blank")
	}
	half := qemu.StartT(t, "dhalf", qemu.WithDisk(disk), qemu.WithDiskBoot())
	if err := half.WaitTimeout(90 * time.Second); err != nil {
		t.Fatalf("the interrupted disk: %v", err)
	}
	if strings.Contains(half.Console.Log(), "ASR-FIRSTBOOT-OK") || !strings.Contains(half.Console.Log(), "Boot failed") {
		t.Fatalf("the interrupted disk did not fail to boot:\n%s", half.Console.Log())
	}

	vm2 := qemu.StartT(t, "dcut2", vmOpts(t, qemu.WithDisk(disk), qemu.WithNIC(l.lab, 34), qemu.WithAppend("asr.delta"))...)
	expectSuccess(t, vm2, 5*time.Minute)
	m := regexp.MustCompile(`Delta: (\d+) chunks reused from the target, (\d+) fetched`).FindStringSubmatch(vm2.Console.Log())
	if m == nil || m[1] == "0" {
		t.Errorf("the second run did not reuse the disk's chunks: %q", m)
	} else {
		t.Logf("second run: %s chunks reused, %s fetched", m[1], m[2])
	}
	sameBytes(t, newImg, disk)
	diskBoot(t, "new", disk, newID)
}
