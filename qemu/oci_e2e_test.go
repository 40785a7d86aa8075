package qemu_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/initramfs"
	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// registryCA makes a CA and a certificate for the lab's server, 198.18.0.1,
// signed by it: a registry other than localhost is reached over HTTPS, so
// the appliance must trust the lab's CA.
func registryCA(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "asr lab CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "198.18.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("198.18.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// TestApplianceRestoresFromOCIRegistry: asr push puts an image into a
// docker-registry (the CNCF distribution registry) serving HTTPS in the
// lab, and the appliance, given asr.source=oci://..., restores it byte for
// byte. Its initramfs trusts the lab's CA (its own build: the shared one
// carries Debian's CAs only).
func TestApplianceRestoresFromOCIRegistry(t *testing.T) {
	testenv.RequireVM(t, "docker-registry")
	ca, cert, key := registryCA(t)
	k, err := initramfs.FindKernel("/", "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := initramfs.Build(initramfs.Options{Output: filepath.Join(t.TempDir(), "initramfs.cpio.gz"),
		Kernel: k, Version: "e2e-oci", CACerts: ca})
	if err != nil {
		t.Fatalf("building the appliance with the lab's CA: %v", err)
	}
	t.Logf("initramfs trusting the lab's CA: %.1f MiB, built in %.1f s", float64(res.Size)/(1<<20), time.Since(start).Seconds())

	l := newVMLab(t, "oci")
	reg := testenv.NewRegistry(t, testenv.RegistryOptions{Addr: "198.18.0.1:5000", Cert: cert, Key: key})
	p := netlab.StartProcT(t, "docker-registry", l.srv.Command(context.Background(), "docker-registry", "serve", reg.Config))
	p.WaitForT(t, "listening on", 20*time.Second)

	const size = 32 << 20
	disk, img := image(t, l.dir, size, 131)
	ref := "oci://198.18.0.1:5000/lab/disk:v1"
	push := l.srv.Command(context.Background(), testenv.Asr(t), "push", "--cacert", ca, "--source", img, ref)
	push.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir()) // no credentials: the registry needs none
	if out, err := push.CombinedOutput(); err != nil || !strings.Contains(string(out), "Pushed "+ref) {
		t.Fatalf("asr push in the lab: %v\n%s", err, out)
	}

	target := emptyDisk(t, l.dir, "vda.img", size)
	vm := qemu.StartT(t, "oci", qemu.WithKernel(k.Image), qemu.WithInitramfs(res.Path),
		qemu.WithDisk(target), qemu.WithNIC(l.lab, 10), qemu.WithAppend("asr.source="+ref))
	guest, wall := restoreStarts(t, vm, 3*time.Minute)
	took := expectSuccess(t, vm, 5*time.Minute)
	t.Logf("restore starts %.1f s after power-on (guest clock), %.1f s after QEMU started; success %.1f s after QEMU started",
		guest, wall, took)
	if !strings.Contains(vm.Console.Log(), "oci://198.18.0.1:5000/lab/disk:v1") {
		t.Errorf("the console does not name the registry source")
	}
	sameBytes(t, disk, target)
}
