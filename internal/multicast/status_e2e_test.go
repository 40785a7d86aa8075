package multicast

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/config"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// The server's table of clients, filled by the status messages of real
// clients (`asr restore` in namespaces of their own, each with its own host
// name): one restores and is seen joined, in progress, then done; one whose
// target is too small is seen failed, with the reason, before it wrote a
// byte. The server runs in this process so the test reads its table.
func TestE2EServerSeesClientStatus(t *testing.T) {
	testenv.Require(t, "unshare")
	l := newMLab(t, "n6bs", 2)
	disk, img := l.image(61)
	cfg, err := config.Load(l.config("239.255.61.10", 6_000_000, ""))
	if err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var log strings.Builder
	srv, err := NewServer(ServerOptions{Image: img, Config: cfg, Log: func(f string, a ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(&log, f+"\n", a...)
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	srv.opts.Ready = func(net.Addr) { close(ready) }
	served := make(chan error, 1)
	go func() { served <- l.srv.Do(func() error { return srv.Serve(ctx) }) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-served:
		t.Fatalf("server: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready within 20 s")
	}

	good := l.target("good.raw", 62)
	small := filepath.Join(l.dir, "small.raw")
	testenv.FillRandom(t, small, 16<<20, 63)
	smallBefore := testenv.Hash(t, small, 0, 16<<20)
	run := func(h *qemu.Host, name, target string) clientResult {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := h.Command(ctx, "unshare", "--uts", "sh", "-c", `hostname "$0" && exec "$@"`, name,
			l.asr, "restore", "--source", "asr://198.18.0.1", "--target", target, "--erase", "--noprompt", "--timeout", "20")
		out, err := cmd.CombinedOutput()
		r := clientResult{out: string(out)}
		if err != nil {
			r.code = 1
		}
		return r
	}

	// Watch the table while the good client restores: it must show it
	// part-way, not only at the start and the end.
	var seenMid ClientStatus
	watch, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watch.Err() == nil {
			for _, c := range srv.Clients() {
				if c.Name == "n6b-good" && c.State == StateRestoring && c.Percent > 0 && c.Percent < 100 && seenMid.ID == 0 {
					seenMid = c
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	var rGood, rSmall clientResult
	wg.Go(func() { rGood = run(l.clients[0], "n6b-good", good) })
	wg.Go(func() { rSmall = run(l.clients[1], "n6b-small", small) })
	wg.Wait()
	stopWatch()
	<-watched

	if rGood.code != 0 {
		t.Fatalf("the good client failed:\n%s", rGood.out)
	}
	if rSmall.code == 0 || !strings.Contains(rSmall.out, "too small") {
		t.Errorf("the client with a small target did not fail for its size:\n%s", rSmall.out)
	}
	if got, want := testenv.Hash(t, good, 0, diskSize), testenv.Hash(t, disk, 0, diskSize); got != want {
		t.Errorf("good target %s, want %s", got, want)
	}
	if testenv.Hash(t, small, 0, 16<<20) != smallBefore {
		t.Errorf("the refused client's target changed")
	}
	if seenMid.ID == 0 {
		t.Errorf("the table never showed n6b-good restoring part-way")
	} else {
		t.Logf("seen part-way: %+v", seenMid)
	}

	// A client's final message may trail its exit by a moment.
	deadline := time.Now().Add(5 * time.Second)
	var byName map[string]ClientStatus
	for {
		byName = map[string]ClientStatus{}
		for _, c := range srv.Clients() {
			byName[c.Name] = c
		}
		if byName["n6b-good"].State == StateDone && byName["n6b-small"].State == StateFailed || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(byName) != 2 {
		t.Errorf("the table has %d clients, want 2: %+v", len(byName), byName)
	}
	macs := map[string]string{"n6b-good": hostMAC(t, l.clients[0]), "n6b-small": hostMAC(t, l.clients[1])}
	for name, want := range map[string]struct {
		state, disk, addr string
		pct               int
		msg               string
	}{
		"n6b-good":  {StateDone, good, l.clients[0].Addr, 100, ""},
		"n6b-small": {StateFailed, small, l.clients[1].Addr, 0, "too small"},
	} {
		c := byName[name]
		if c.State != want.state || c.Disk != want.disk || c.Addr != want.addr || c.Percent != want.pct ||
			!strings.Contains(c.Message, want.msg) || c.MAC != macs[name] {
			t.Errorf("table row %s = %+v; want state %s, disk %s, addr %s, MAC %s, %d%%, message with %q",
				name, c, want.state, want.disk, want.addr, macs[name], want.pct, want.msg)
		}
		if c.LastSeen.Before(c.Since) || time.Since(c.LastSeen) > time.Minute {
			t.Errorf("table row %s: last seen %s, connected %s", name, c.LastSeen, c.Since)
		}
	}
	if r, _ := byName["n6b-good"].Rate(srv.Size(), time.Now()); r <= 0 {
		t.Errorf("no rate for the client that restored: %+v", byName["n6b-good"])
	}
	logMu.Lock()
	text := log.String()
	logMu.Unlock()
	for _, want := range []string{"(n6b-good) joined, restoring " + good, "(n6b-good) done",
		"(n6b-small) failed: target " + small + " is too small"} {
		if !strings.Contains(text, want) {
			t.Errorf("the server's log lacks %q:\n%s", want, text)
		}
	}
	if !regexp.MustCompile(`\(n6b-good\): [1-9][0-9]?%`).MatchString(text) {
		t.Errorf("the server's log has no progress line of n6b-good:\n%s", text)
	}
}

// hostMAC is the MAC address of eth0 in h's namespace.
func hostMAC(t *testing.T, h *qemu.Host) string {
	t.Helper()
	out, err := h.Command(context.Background(), "cat", "/sys/class/net/eth0/address").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
