package dnssd

// DNS-SD against a real peer: avahi-daemon, in namespaces of a lab (package
// qemu) with a D-Bus of its own (testdata/avahi-ns.sh). avahi-browse must see
// an asr server, and Browse must see a service avahi-publish announces.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

func avahiNS() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "avahi-ns.sh")
}

func lab(t *testing.T, name string) (*netlab.Lab, *netlab.Host, *netlab.Host) {
	t.Helper()
	testenv.Require(t, "ip", "avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon", "unshare")
	l := netlab.NewT(t, "ad"+name)
	a := l.AddHostT(t, "a", 1)
	b := l.AddHostT(t, "b", 11)
	return l, a, b
}

func TestAvahiBrowseSeesAsrServer(t *testing.T) {
	_, srvHost, peer := lab(t, "x")
	asr := testenv.Asr(t)
	dir := t.TempDir()
	disk := testenv.Disk(t, dir, 8<<20, 1)
	img := filepath.Join(dir, "lab-2026.asr")
	testenv.Run(t, asr, "imagescan", "--source", disk, "--output", img)
	cfg := filepath.Join(dir, "asrconfig.plist")
	os.WriteFile(cfg, []byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.30.1</string>
<key>Data Rate</key><integer>1000000</integer>
</dict></plist>`), 0o644)
	srv := srvHost.Command(context.Background(), asr, "server", "--source", img, "--config", cfg)
	out := &strings.Builder{}
	srv.Stdout, srv.Stderr = out, out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got string
	for range 5 { // avahi may need a moment to settle its own host name first
		b, err := exec.CommandContext(ctx, avahiNS(), peer.NS, "avahi-browse", "--resolve", "--terminate", "--parsable", "_asr._tcp").CombinedOutput()
		got = string(b)
		if err == nil && strings.Contains(got, "image=lab-2026.asr") {
			break
		}
		time.Sleep(time.Second)
	}
	if !strings.Contains(got, ";198.18.0.1;7800;") || !strings.Contains(got, `"image=lab-2026.asr"`) || !strings.Contains(got, `"digest=`) {
		t.Fatalf("avahi-browse did not resolve the asr server at 198.18.0.1:7800 with its image and digest:\n%s\nserver:\n%s", got, out)
	}
}

func TestBrowseSeesAvahiPublish(t *testing.T) {
	_, pub, browser := lab(t, "y")
	asr := testenv.Asr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := exec.CommandContext(ctx, avahiNS(), pub.NS, "avahi-publish", "--service", "avahi lab", "_asr._tcp", "7900",
		"image=published.asr", "digest=abc123")
	var pubOut strings.Builder
	p.Stdout, p.Stderr = &pubOut, &pubOut
	// Its own process group, so that stopping it reaches avahi-publish and
	// the daemons beside it, not only the script.
	p.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.WaitDelay = 5 * time.Second
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	var got string
	for range 10 {
		b, _ := browser.Command(ctx, asr, "browse", "--timeout", "2").CombinedOutput()
		got = string(b)
		if strings.Contains(got, "avahi lab") {
			break
		}
	}
	if !strings.Contains(got, "avahi lab") || !strings.Contains(got, "asr://198.18.0.1:7900") || !strings.Contains(got, "published.asr") {
		t.Fatalf("asr browse did not list the service avahi-publish announced:\n%s\navahi-publish:\n%s", got, pubOut.String())
	}
}
