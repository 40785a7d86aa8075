package qemu_test

// Signed images on the appliance (issue 12): an appliance built with one
// trusted minisign key restores only images that key signed, whatever
// the source, and refuses the rest with its disk untouched.
//
//	VM ── tapN ── br0 ── 198.18.0.1 dnsmasq; asr server "ap-good" (signed by
//	                 │   the trusted key), or nginx, or a rogue asr server
//	                 └── 198.18.0.2 asr server "ap-rogue" (unsigned)
//
// Labs are prefixed "ap". One initramfs with the trusted key is built per
// test binary (signedBoot).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/initramfs"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/internal/trust"
	"github.com/asrlinux/asr/qemu"
)

// The trusted and foreign key pairs and the appliance that trusts the
// first, made once per test binary; TestMain removes signedDir.
var (
	signedOnce   sync.Once
	signedDir    string
	signedInitrd string
	signedErr    error
	trustedKey   keyPair
	foreignKey   keyPair
)

type keyPair struct{ pub, sec, id string }

// makeKey makes a key pair without a password with the real minisign CLI.
func makeKey(dir, name string) (keyPair, error) {
	k := keyPair{pub: filepath.Join(dir, name+".pub"), sec: filepath.Join(dir, name+".key")}
	if out, err := exec.Command("minisign", "-G", "-W", "-p", k.pub, "-s", k.sec).CombinedOutput(); err != nil {
		return k, fmt.Errorf("minisign -G: %v: %s", err, strings.TrimSpace(string(out)))
	}
	pk, err := trust.LoadFile(k.pub)
	k.id = trust.FormatID(pk.ID)
	return k, err
}

// signedOpts are vmOpts with the appliance that trusts trustedKey.
func signedOpts(t *testing.T, extra ...qemu.Fn) []qemu.Fn {
	t.Helper()
	kernel, _ := boot(t)
	testenv.Require(t, "minisign")
	signedOnce.Do(func() {
		k, err := initramfs.FindKernel("/", "")
		if err != nil {
			signedErr = err
			return
		}
		if signedDir, err = os.MkdirTemp("", "asr-qemu-signed-"); err != nil {
			signedErr = err
			return
		}
		if trustedKey, signedErr = makeKey(signedDir, "trusted"); signedErr != nil {
			return
		}
		if foreignKey, signedErr = makeKey(signedDir, "foreign"); signedErr != nil {
			return
		}
		start := time.Now()
		res, err := initramfs.Build(initramfs.Options{Output: filepath.Join(signedDir, "initramfs.cpio.gz"),
			Kernel: k, Version: "e2e-signed", TrustedKeys: []string{trustedKey.pub}})
		if err != nil {
			signedErr = err
			return
		}
		signedInitrd = res.Path
		t.Logf("initramfs trusting key ID %s: %.1f MiB, built in %.1f s", trustedKey.id, float64(res.Size)/(1<<20), time.Since(start).Seconds())
	})
	if signedErr != nil {
		t.Fatalf("building the appliance with a trusted key: %v", signedErr)
	}
	return append([]qemu.Fn{qemu.WithKernel(kernel), qemu.WithInitramfs(signedInitrd),
		qemu.WithAccel(os.Getenv("ASR_QEMU_ACCEL"))}, extra...)
}

// signImage signs img with k by `asr sign`.
func signImage(t *testing.T, img string, k keyPair) {
	t.Helper()
	testenv.Run(t, testenv.Asr(t), "sign", "--source", img, "--key", k.sec)
}

// randomDisk is a target disk of random bytes and its hash.
func randomDisk(t *testing.T, dir string, size int64, seed uint64) (string, string) {
	t.Helper()
	p := filepath.Join(dir, "vda.img")
	testenv.FillRandom(t, p, size, seed)
	return p, testenv.Hash(t, p, 0, size)
}

// expectRefusal waits for the appliance's failure line, checks it says
// every one of want, then stops the VM and checks the disk's hash.
func expectRefusal(t *testing.T, vm *qemu.VM, disk, before string, size int64, want ...string) {
	t.Helper()
	why, _ := expectFailure(t, vm, 4*time.Minute)
	t.Logf("refusal %.1f s after QEMU started: %s", time.Since(vm.Started).Seconds(), why)
	for _, w := range want {
		if !strings.Contains(why, w) {
			t.Errorf("the refusal does not say %q: %s", w, why)
		}
	}
	if strings.Contains(vm.Console.Log(), "Erasing") {
		t.Errorf("the appliance started erasing before it refused")
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Hash(t, disk, 0, size) != before {
		t.Errorf("the refused restore changed the disk")
	}
}

// Two servers answer DNS-SD: the unsigned one is left out, the signed one
// restores, and the console names the signer.
func TestSignedApplianceChoosesTrustedServer(t *testing.T) {
	opts := signedOpts(t)
	l := newNamedLab(t, "apds")
	disk, img := image(t, l.srvDir, 16<<20, 711)
	signImage(t, img, trustedKey)
	rogue, err := l.lab.AddHost("r", 2)
	if err != nil {
		t.Fatal(err)
	}
	rogueImg := filepath.Join(l.dir, "rogue.asr")
	testenv.Run(t, testenv.Asr(t), "imagescan", "--source", testenv.Disk(t, t.TempDir(), 16<<20, 712), "--output", rogueImg)
	advertisedServer(t, l.srv, l.dir, "ap-good", img, "239.255.71.1")
	advertisedServer(t, rogue, l.dir, "ap-rogue", rogueImg, "239.255.71.2")
	target := emptyDisk(t, l.dir, "vda.img", 32<<20)

	vm := qemu.StartT(t, "apds", append(opts, qemu.WithDisk(target), qemu.WithNIC(l.lab, 40))...)
	for _, want := range []string{
		`trust: only images signed by key ID ` + trustedKey.id,
		`left out: "ap-rogue asr" at asr://198\.18\.0\.2:7800 serving rogue\.asr \(unsigned\)`,
		`source: found by DNS-SD: "ap-good asr" at asr://198\.18\.0\.1:7800`,
		`Signed by key ID ` + trustedKey.id + ` \(trusted\)`,
	} {
		if _, err := vm.Console.Expect(want, 4*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	took := expectSuccess(t, vm, 4*time.Minute)
	t.Logf("chose the signed server among two and restored in %.1f s after QEMU started", took)
	sameBytes(t, disk, target)
}

// Only a rogue server answers DNS-SD, with an unsigned image: nothing is
// left to choose, and the appliance stops with the disk untouched.
func TestSignedApplianceRefusesOnlyRogueDNSSD(t *testing.T) {
	opts := signedOpts(t)
	l := newNamedLab(t, "apro")
	_, img := image(t, l.srvDir, 16<<20, 721)
	advertisedServer(t, l.srv, l.dir, "ap-rogue", img, "239.255.71.3")
	target, before := randomDisk(t, l.dir, 32<<20, 722)

	vm := qemu.StartT(t, "apro", append(opts, qemu.WithDisk(target), qemu.WithNIC(l.lab, 41))...)
	expectRefusal(t, vm, target, before, 32<<20,
		"none serves an image signed by a key trusted here (key ID "+trustedKey.id+")",
		`left out: "ap-rogue asr" at asr://198.18.0.1:7800 serving disk.asr (unsigned)`)
}

// A rogue server whose image a foreign key signed, named on the command
// line (so no advertisement filter applies): the multicast session's
// signatures are checked, and the refusal names the foreign key.
func TestSignedApplianceRefusesForeignMulticast(t *testing.T) {
	opts := signedOpts(t)
	l := newNamedLab(t, "apfo")
	_, img := image(t, l.srvDir, 16<<20, 731)
	signImage(t, img, foreignKey)
	advertisedServer(t, l.srv, l.dir, "ap-foreign", img, "239.255.71.4")
	target, before := randomDisk(t, l.dir, 32<<20, 732)

	vm := qemu.StartT(t, "apfo", append(opts, qemu.WithDisk(target), qemu.WithNIC(l.lab, 42),
		qemu.WithAppend("asr.source=asr://198.18.0.1"))...)
	expectRefusal(t, vm, target, before, 32<<20,
		"image refused, nothing was written",
		"signed by key ID "+foreignKey.id+" (key not trusted here)",
		"trusted: key ID "+trustedKey.id,
		"the disk was not touched")
}

// An unsigned image over HTTP is refused before the disk is touched.
func TestSignedApplianceRefusesUnsignedHTTP(t *testing.T) {
	opts := signedOpts(t)
	l := newNamedLab(t, "aphs")
	l.nginx(t)
	image(t, l.srvDir, 16<<20, 741)
	target, before := randomDisk(t, l.dir, 32<<20, 742)

	vm := qemu.StartT(t, "aphs", append(opts, qemu.WithDisk(target), qemu.WithNIC(l.lab, 43),
		qemu.WithAppend("asr.source=http://198.18.0.1:8080/disk.asr"))...)
	expectRefusal(t, vm, target, before, 32<<20,
		"image refused, nothing was written", "the image is not signed", "key ID "+trustedKey.id)
}

// An unsigned image on the USB stick is refused; neither the internal
// disk nor the stick changes. The kernel boots directly (the stick's own
// boot loader is tested in usb_e2e_test.go): only the source matters here.
func TestSignedApplianceRefusesUnsignedStick(t *testing.T) {
	opts := signedOpts(t)
	dir := t.TempDir()
	_, img := image(t, dir, 16<<20, 751)
	kernel, _ := boot(t)
	stick := mkusbWith(t, dir, img, kernel, signedInitrd)
	st, err := os.Stat(stick)
	if err != nil {
		t.Fatal(err)
	}
	stickBefore := testenv.Hash(t, stick, 0, st.Size())
	target, before := randomDisk(t, dir, 32<<20, 752)

	vm := qemu.StartT(t, "apusb", append(opts, qemu.WithDisk(target), qemu.WithUSBDisk(stick),
		qemu.WithAppend("asr.source=label:ASRDATA"))...)
	expectRefusal(t, vm, target, before, 32<<20,
		"image refused, nothing was written", "the image is not signed", "key ID "+trustedKey.id)
	if testenv.Hash(t, stick, 0, st.Size()) != stickBefore {
		t.Errorf("the stick changed")
	}
}
