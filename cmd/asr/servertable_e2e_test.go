package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

// asr server on a terminal (a real pty, from script(1)) shows the live
// table with the client's row, redrawn in place.
func TestE2EServerLiveTableOnTerminal(t *testing.T) {
	testenv.Require(t, "ip", "script", "sgdisk")
	srvHost, cli, dir, img, cfg := serverLab(t, "n6bt", "239.255.61.20", 8000000, 32<<20, 71)
	bin := testenv.Asr(t)
	srv := startServer(t, srvHost.Command(context.Background(), "script", "-qfec",
		bin+" server --source "+img+" --config "+cfg, "/dev/null"))
	target := filepath.Join(dir, "target.raw")
	testenv.FillRandom(t, target, 32<<20, 72)
	out, err := cli.Command(context.Background(), bin, "restore", "--source", "asr://198.18.0.1", "--target", target,
		"--erase", "--noprompt", "--timeout", "20").CombinedOutput()
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	// The table is redrawn each second.
	if _, err := srv.Output.Expect(`1 clients: 1 done`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	log := srv.Output.Log()
	mac, _ := cli.Command(context.Background(), "cat", "/sys/class/net/eth0/address").Output()
	for _, want := range []string{"CLIENT", "LAST SEEN", strings.TrimSpace(string(mac)), target, "done", "\x1b[J"} {
		if !strings.Contains(log, want) {
			t.Errorf("the server's terminal lacks %q:\n%s", want, log)
		}
	}
}

// TestE2EServerTableOnSIGUSR1: a server writing to a pipe prints its client
// table when sent SIGUSR1, and once more when it stops.
func TestE2EServerTableOnSIGUSR1(t *testing.T) {
	testenv.Require(t, "ip", "sgdisk")
	srvHost, cli, dir, img, cfg := serverLab(t, "usr1", "239.255.61.21", 20000000, 16<<20, 73)
	bin := testenv.Asr(t)
	srv := startServer(t, srvHost.Command(context.Background(), bin, "server", "--source", img, "--config", cfg))
	target := filepath.Join(dir, "target.raw")
	testenv.FillRandom(t, target, 16<<20, 74)
	if out, err := cli.Command(context.Background(), bin, "restore", "--source", "asr://198.18.0.1", "--target", target,
		"--erase", "--noprompt", "--timeout", "20").CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if err := srv.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Output.Expect(`1 clients: 1 done`, 10*time.Second); err != nil {
		t.Fatalf("no table after SIGUSR1: %v\n%s", err, srv.Output.Log())
	}
	log := srv.Output.Log()
	mac, _ := cli.Command(context.Background(), "cat", "/sys/class/net/eth0/address").Output()
	for _, want := range []string{"Clients (SIGUSR1):", "CLIENT", strings.TrimSpace(string(mac)), target, "done"} {
		if !strings.Contains(log, want) {
			t.Errorf("the server's log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "\x1b[") {
		t.Errorf("the server wrote terminal escapes into a pipe:\n%q", log)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if log := srv.Output.Log(); !regexp.MustCompile(`Clients at stop:\n(.*\n)*  1 clients: 1 done\n`).MatchString(log) {
		t.Errorf("the server did not print its table when it stopped:\n%s", log)
	}
}

// startServer starts cmd, an asr server in a lab host, stops it when the
// test ends, and waits until it accepts clients.
func startServer(t *testing.T, cmd *exec.Cmd) *netlab.Proc {
	t.Helper()
	srv := netlab.StartProcT(t, "asr server", cmd)
	srv.WaitForT(t, "Ready to start accepting clients", 20*time.Second)
	return srv
}

// serverLab makes a lab (removed when the test ends) with a server host at
// 198.18.0.1 and a client at 198.18.0.11, an image of a sample disk of size
// bytes, and a server config for group at rate bytes/s without DNS-SD.
func serverLab(t *testing.T, name, group string, rate int, size int64, seed uint64) (srv, cli *netlab.Host, dir, img, cfg string) {
	t.Helper()
	nl := netlab.NewT(t, name)
	srv = nl.AddHostT(t, "s", 1)
	cli = nl.AddHostT(t, "c", 11)
	dir = t.TempDir()
	img = scan(t, testenv.Disk(t, dir, size, seed))
	cfg = filepath.Join(dir, "asr.plist")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>%s</string>
<key>Data Rate</key><integer>%d</integer>
<key>DNS Service Discovery</key><false/>
</dict></plist>`, group, rate)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return srv, cli, dir, img, cfg
}
