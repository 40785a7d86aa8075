package main

import (
	"bytes"
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

	"github.com/asrlinux/asr/internal/multicast"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

func TestClientTable(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	rows := []multicast.ClientStatus{
		{ID: 1, Name: "lab-07", MAC: "52:54:00:12:34:07", Disk: "/dev/vda (64.0 MiB)", State: multicast.StateRestoring,
			Percent: 25, Joined: now.Add(-10 * time.Second), LastSeen: now.Add(-2 * time.Second)},
		{ID: 2, Addr: "198.18.0.12", State: multicast.StateFailed, Message: "target /dev/sda is too small: 16.0 MiB",
			LastSeen: now},
	}
	got := string(clientTable(rows, nil, 400<<20, now))
	for _, want := range []string{"CLIENT", "MAC", "DISK", "STATE", "LAST SEEN",
		"lab-07", "52:54:00:12:34:07", "/dev/vda (64.0 MiB)", "restoring", "25",
		"10.0 MiB/s", "30s", "2s ago", // 100 MiB in 10 s; 75% left at that rate
		"198.18.0.12", "failed: target /dev/sda is too small",
		"2 clients: 1 restoring, 1 failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// With many clients the table stays maxRows long, those at work first.
func TestClientTableBounded(t *testing.T) {
	now := time.Now()
	var rows []multicast.ClientStatus
	for i := range 100 {
		c := multicast.ClientStatus{ID: i + 1, Name: fmt.Sprintf("pc%03d", i+1), State: multicast.StateDone, Ended: now, LastSeen: now}
		if i == 99 {
			c = multicast.ClientStatus{ID: 100, Name: "pc100", State: multicast.StateRestoring, Percent: 50, LastSeen: now}
		}
		rows = append(rows, c)
	}
	got := string(clientTable(rows, nil, 1<<30, now))
	if n := strings.Count(got, "\n"); n != maxRows+2 {
		t.Errorf("table of 100 clients has %d lines, want %d:\n%s", n, maxRows+2, got)
	}
	if !strings.Contains(strings.SplitN(got, "\n", 3)[1], "pc100") {
		t.Errorf("the client at work is not the first row:\n%s", got)
	}
	if !strings.Contains(got, "100 clients: 1 restoring, 99 done (60 not shown)") {
		t.Errorf("the count line does not sum up every client:\n%s", got)
	}
}

// On a terminal a log line goes above the table, which is then drawn again
// in place: moved up over and erased, never left twice on screen.
func TestBoardRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	b := &board{w: &out}
	b.draw([]byte("T1\nrow\n"))
	b.logf("Client %s joined", "x")
	b.draw([]byte("T2\nrow\n"))
	want := "T1\nrow\n" + "\x1b[2A\r\x1b[J" + "Client x joined\n" + "T1\nrow\n" + "\x1b[2A\r\x1b[J" + "T2\nrow\n"
	if out.String() != want {
		t.Errorf("board wrote %q, want %q", out.String(), want)
	}
}

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
func startServer(t *testing.T, cmd *exec.Cmd) *qemu.Proc {
	t.Helper()
	srv, err := qemu.StartProc("asr server", cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	if err := srv.WaitFor("Ready to start accepting clients", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return srv
}

// serverLab makes a lab (removed when the test ends) with a server host at
// 198.18.0.1 and a client at 198.18.0.11, an image of a sample disk of size
// bytes, and a server config for group at rate bytes/s without DNS-SD.
func serverLab(t *testing.T, name, group string, rate int, size int64, seed uint64) (srv, cli *qemu.Host, dir, img, cfg string) {
	t.Helper()
	nl, err := qemu.NewLab(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close() })
	if srv, err = nl.AddHost("s", 1); err != nil {
		t.Fatal(err)
	}
	if cli, err = nl.AddHost("c", 11); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	img = scan(t, testenv.Disk(t, dir, size, seed))
	cfg = filepath.Join(dir, "asr.plist")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
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

// Names, MACs, disks and messages come from clients: escape sequences, CR
// and forged lines show escaped and cut to the column, never raw.
func TestClientTableEscapes(t *testing.T) {
	now := time.Now()
	rows := []multicast.ClientStatus{{ID: 1, Name: "evil\x1b[2J\rClient 198.18.0.99 (pc) done\n", MAC: "\x1b]0;owned\a",
		Disk: "/dev/\x1b[31mvda", State: multicast.StateFailed, Message: "gone\x1b[2K\r\nforged line", LastSeen: now, Ended: now}}
	got := string(clientTable(rows, map[string]int{multicast.StateDone: 300}, 1<<30, now))
	if strings.ContainsAny(got, "\x1b\r\a") {
		t.Errorf("table holds raw control characters: %q", got)
	}
	for _, want := range []string{`evil\x1b[2J\rClient 198.18.0.99 (pc) done\n`, `\x1b]0;owned\a`, `/dev/\x1b[31mvda`,
		`failed: gone\x1b[2K\r\nforged line`, "301 clients: 300 done, 1 failed (300 not shown)"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 3 {
		t.Errorf("table of one client has %d lines, want 3:\n%s", n, got)
	}
}
