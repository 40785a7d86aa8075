package qemu_test

// Discovery by DNS-SD: the appliance is given no asr.source and must find
// the asr server by the server's own mDNS advertisement, on the lab's link.
//
//	VM ── tapN ── br0 ── 198.18.0.1 dnsmasq, asr server "n6b-one" (DNS-SD on)
//	                 └── 198.18.0.2 asr server "n6b-two" (second test only)

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// advertisedServer runs asr server with DNS Service Discovery on, on host h,
// under a host name of its own (a UTS namespace: the lab's hosts share this
// machine's name, and two real servers would not).
func advertisedServer(t *testing.T, h *netlab.Host, dir, hostname, img, group string) *netlab.Proc {
	t.Helper()
	testenv.Require(t, "unshare")
	cfg := filepath.Join(dir, hostname+".plist")
	err := os.WriteFile(cfg, []byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>`+group+`</string>
<key>Data Rate</key><integer>8000000</integer>
<key>DNS Service Discovery</key><true/>
</dict></plist>`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(context.Background(), "unshare", "--uts", "sh", "-c", `hostname "$0" && exec "$@"`,
		hostname, testenv.Asr(t), "server", "--source", img, "--config", cfg, "--interface", "eth0")
	p := netlab.StartProcT(t, "asr server "+hostname, cmd)
	p.WaitForT(t, "Advertising .* over DNS-SD", 20*time.Second)
	return p
}

func TestApplianceFindsServerByDNSSD(t *testing.T) {
	testenv.RequireVM(t)
	l := newVMLab(t, "n6bd")
	disk, img := image(t, l.srvDir, 32<<20, 601)
	srv := advertisedServer(t, l.srv, l.dir, "n6b-one", img, "239.255.61.1")
	target := emptyDisk(t, l.dir, "vda.img", 32<<20)

	vm := qemu.StartT(t, "n6bdnssd", vmOpts(t, qemu.WithDisk(target), qemu.WithNIC(l.lab, 30))...)
	if _, err := vm.Console.Expect(`source: found by DNS-SD: "n6b-one asr" at asr://198\.18\.0\.1:7800 serving disk\.asr`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	took := expectSuccess(t, vm, 4*time.Minute)
	t.Logf("found by DNS-SD and restored in %.1f s after QEMU started", took)
	sameBytes(t, disk, target)
	// The appliance reported to the server, named by its MAC address (it
	// has no host name), with its disk.
	if _, err := srv.Output.Expect(`\(52:54:00:12:34:1e\) done`, 10*time.Second); err != nil {
		t.Error(err)
	}
	if log := srv.Output.Log(); !strings.Contains(log, "(52:54:00:12:34:1e) joined, restoring /dev/vda (32.0 MiB") {
		t.Errorf("the server's log does not show the appliance joining with its MAC address and disk:\n%s", log)
	}
}

func TestApplianceRefusesTwoDNSSDServers(t *testing.T) {
	testenv.RequireVM(t)
	l := newVMLab(t, "n6b2")
	_, img := image(t, l.srvDir, 16<<20, 602)
	other := l.lab.AddHostT(t, "t", 2)
	otherImg := filepath.Join(l.dir, "other.asr")
	testenv.Run(t, testenv.Asr(t), "imagescan", "--source", testenv.Disk(t, t.TempDir(), 16<<20, 603), "--output", otherImg)
	advertisedServer(t, l.srv, l.dir, "n6b-one", img, "239.255.61.2")
	advertisedServer(t, other, l.dir, "n6b-two", otherImg, "239.255.61.3")
	target := filepath.Join(l.dir, "vda.img")
	testenv.FillRandom(t, target, 32<<20, 604)
	before := testenv.Hash(t, target, 0, 32<<20)

	vm := qemu.StartT(t, "n6b2dnssd", vmOpts(t, qemu.WithDisk(target), qemu.WithNIC(l.lab, 31))...)
	why, _ := expectFailure(t, vm, 3*time.Minute)
	t.Logf("refusal: %s", why)
	for _, want := range []string{"2 asr servers found by DNS-SD", "asr.image=",
		`"n6b-one asr" at asr://198.18.0.1:7800 serving disk.asr`, `"n6b-two asr" at asr://198.18.0.2:7800 serving other.asr`} {
		if !strings.Contains(why, want) {
			t.Errorf("the refusal does not say %q: %s", want, why)
		}
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Hash(t, target, 0, 32<<20) != before {
		t.Errorf("the refused restore changed the disk")
	}
}
