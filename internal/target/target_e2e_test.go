package target

// Tests on real loop devices: they need root (testenv.Require).

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/testenv"
)

func requireRoot(t *testing.T) { testenv.Require(t, "losetup") }

func loop(t *testing.T, size int64) (dev, file string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--show", "-f", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev, file
}

func rdev(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Rdev
}

// The running system's disk is refused even before anything is mounted
// from it: here a real loop device stands in for the root disk.
func TestOpenRefusesRootDisk(t *testing.T) {
	requireRoot(t)
	dev, _ := loop(t, 8<<20)
	sys := Host()
	sys.RootDevice = rdev(t, dev)
	_, err := open(dev, sys)
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "holds the running system's root filesystem") {
		t.Fatalf("open(%s) with it as root = %v, want a refusal naming the running system", dev, err)
	}
}

func TestOpenBlockAndFile(t *testing.T) {
	requireRoot(t)
	dev, file := loop(t, 8<<20)
	tg, err := Open(dev)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dev, err)
	}
	if tg.Kind != Block || tg.Size != 8<<20 {
		t.Errorf("Open(%s) = kind %v size %d, want block of %d", dev, tg.Kind, tg.Size, 8<<20)
	}
	// The backing file of an attached loop device is refused as a target.
	if _, err := Open(file); err == nil || !strings.Contains(err.Error(), "is attached to "+dev) {
		t.Errorf("Open(backing file) = %v, want a refusal naming %s", err, dev)
	}
	// A second opener is refused while the first holds the device.
	if _, err := Open(dev); !errors.Is(err, ErrUnsafe) {
		t.Errorf("second Open(%s) = %v, want ErrUnsafe", dev, err)
	}
	tg.Close()

	// An image file stored on the target's filesystem overlaps it; the
	// target device itself as a source does too.
	img := filepath.Join(t.TempDir(), "x.asr")
	os.WriteFile(img, []byte("x"), 0o644)
	var st unix.Stat_t
	unix.Stat(img, &st)
	fake := &Target{Kind: Block, dev: st.Dev, sys: Host()}
	if bad, why := fake.Overlaps(img); !bad || !strings.Contains(why, "stored on the target") {
		t.Errorf("Overlaps(image on target) = %v %q, want true", bad, why)
	}
	real := &Target{Kind: Block, dev: rdev(t, dev), sys: Host()}
	if bad, _ := real.Overlaps(dev); !bad {
		t.Errorf("Overlaps(%s, itself) = false, want true", dev)
	}
}

// A block device is written past the page cache from aligned buffers and
// through it otherwise (an unaligned buffer, a tail that is not whole
// blocks); both reach the device, and the second, O_DIRECT handle does not
// weaken the exclusive claim. A regular file is written through the cache.
func TestDirectWritesReachTheDevice(t *testing.T) {
	requireRoot(t)
	dev, file := loop(t, 8<<20)
	tgt, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	if !tgt.Direct() {
		t.Fatalf("%s: no O_DIRECT handle on a loop device", dev)
	}
	if _, err := Open(dev); !errors.Is(err, ErrUnsafe) {
		t.Errorf("a second Open of %s while it is held = %v, want a refusal", dev, err)
	}
	direct := NewBuffer(64 << 10)
	for i := range direct {
		direct[i] = byte(i*7 + 1)
	}
	odd := make([]byte, 1000) // not whole blocks, and likely not aligned
	for i := range odd {
		odd[i] = byte(i*13 + 5)
	}
	if _, err := tgt.WriteAt(direct, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !tgt.Direct() {
		t.Error("the aligned write was refused with O_DIRECT and fell back to the cache")
	}
	if _, err := tgt.WriteAt(odd, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := tgt.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[1<<20:1<<20+len(direct)]) != string(direct) || string(got[3<<20:3<<20+len(odd)]) != string(odd) {
		t.Error("what was written (O_DIRECT and through the cache) is not in the loop device's backing file")
	}

	f := filepath.Join(t.TempDir(), "file.img")
	if err := os.WriteFile(f, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ft, err := Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer ft.Close()
	if ft.Direct() {
		t.Error("a regular file target is written with O_DIRECT: its filesystem decides, so it must not be")
	}
}
