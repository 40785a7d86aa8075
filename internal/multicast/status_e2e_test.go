package multicast

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/config"
	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/testenv"
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
	var logMu sync.Mutex
	var log strings.Builder
	srv := l.inProcessServer(img, "239.255.61.10", 6_000_000, func(f string, a ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(&log, f+"\n", a...)
	})

	good := l.target("good.raw", 62)
	small := filepath.Join(l.dir, "small.raw")
	testenv.FillRandom(t, small, 16<<20, 63)
	smallBefore := testenv.Hash(t, small, 0, 16<<20)
	run := func(h *netlab.Host, name, target string) clientResult {
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
	// The counters behind /metrics: the stream went out, the good client
	// reported at least a packet per stored chunk it received.
	st := srv.Stats()
	if st.BytesSent <= 0 || st.PacketsSent <= 0 || st.Pass < 1 || st.ConnsTotal != 2 || st.Conns != 0 || st.Listening != 0 ||
		st.Reported.Packets+st.Reported.Repaired <= 0 || st.BadControl != 0 {
		t.Errorf("server stats %+v: want bytes and packets sent, pass >= 1, 2 connections all closed, none listening, packets reported, no bad control", st)
	}
}

// hostMAC is the MAC address of eth0 in h's namespace.
func hostMAC(t *testing.T, h *netlab.Host) string {
	t.Helper()
	out, err := h.Command(context.Background(), "cat", "/sys/class/net/eth0/address").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// inProcessServer runs a Server for img in this process, inside the lab's
// server namespace, until the test ends.
func (l *mlab) inProcessServer(img, group string, rate int, logf func(string, ...any), mods ...func(*ServerOptions)) *Server {
	t := l.t
	t.Helper()
	cfg, err := config.Load(l.config(group, rate, ""))
	if err != nil {
		t.Fatal(err)
	}
	opts := ServerOptions{Image: img, Config: cfg, Log: logf}
	for _, m := range mods {
		m(&opts)
	}
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	srv.opts.Ready = func(net.Addr) { close(ready) }
	served := make(chan error, 1)
	go func() { served <- l.srv.Do(func() error { return srv.Serve(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-served:
		t.Fatalf("server: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready within 20 s")
	}
	return srv
}

// The server keeps a small record per client and nothing else once the
// client has gone: 2000 clients that say hello and fail cost it well under
// 2 KiB each, and no goroutine outlives its connection.
func TestE2EServerMemoryPerClient(t *testing.T) {
	l := newMLab(t, "n6bm", 1)
	_, img := l.image(64)
	srv := l.inProcessServer(img, "239.255.61.11", 6_000_000, func(string, ...any) {})
	measure := func() (uint64, int) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc, runtime.NumGoroutine()
	}
	heap0, g0 := measure()
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			errs <- l.clients[0].Do(func() error {
				for i := w; i < n; i += 8 {
					c, err := net.Dial("tcp", "198.18.0.1:7800")
					if err != nil {
						return err
					}
					name := fmt.Sprintf("lab-pc-%04d", i)
					err = writeJSON(c, msgHello, hello{Version: WireVersion, Client: name,
						MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&255), Disk: "/dev/nvme0n1 (476.9 GiB, Samsung SSD 980)"})
					if err == nil {
						// The session and manifest must come before the status.
						for range 2 {
							if _, _, err = readFrame(c, maxFrame); err != nil {
								break
							}
						}
					}
					if err == nil {
						err = writeJSON(c, msgStatus, status{Event: "failed", Message: "target /dev/nvme0n1 is too small"})
					}
					c.Close()
					if err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The last connections may still be closing on the server's side.
	// The table keeps the last keepEnded clients that ended and counts
	// the others.
	var cl []ClientStatus
	for range 100 {
		if cl = srv.Clients(); len(cl) == keepEnded && srv.Forgotten()[StateFailed] == n-keepEnded {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	heap1, g1 := measure()
	for range 50 {
		if g1 <= g0+2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
		heap1, g1 = measure()
	}
	if len(cl) != keepEnded || srv.Forgotten()[StateFailed] != n-keepEnded {
		t.Fatalf("the server's table has %d clients and counts %v forgotten, want %d and %d failed", len(cl), srv.Forgotten(), keepEnded, n-keepEnded)
	}
	for _, c := range cl {
		if c.State != StateFailed || !strings.HasPrefix(c.Name, "lab-pc-") || c.MAC == "" {
			t.Fatalf("client %+v: want failed, with its name and MAC", c)
		}
	}
	per := (int64(heap1) - int64(heap0)) / n
	t.Logf("server heap: %d KiB before, %d KiB after %d clients: %d bytes per client; goroutines %d -> %d",
		heap0>>10, heap1>>10, n, per, g0, g1)
	if per > 2048 {
		t.Errorf("the server keeps %d bytes per client that has gone; want under 2 KiB", per)
	}
	if g1 > g0+2 {
		t.Errorf("goroutines: %d before the clients, %d after they all left", g0, g1)
	}
}

// A client that gets no data (nftables drops the stream's packets in its
// namespace) still tells the server it is alive, by its heartbeat, and
// shows as joined, not restoring; when it gives up, the server shows it
// failed with the reason.
func TestE2EClientHeartbeat(t *testing.T) {
	l := newMLab(t, "n6bh", 1)
	_, img := l.image(65)
	srv := l.inProcessServer(img, "239.255.61.12", 100_000, func(string, ...any) {})
	for _, rule := range [][]string{
		{"add", "table", "inet", "n6bdrop"},
		{"add", "chain", "inet", "n6bdrop", "input", "{ type filter hook input priority 0; }"},
		{"add", "rule", "inet", "n6bdrop", "input", "udp", "dport", "7801", "drop"},
	} {
		if out, err := l.clients[0].Command(context.Background(), "nft", rule...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v\n%s", rule, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- l.clients[0].Do(func() error {
			c, err := Open(ctx, "asr://198.18.0.1", ClientOptions{Name: "n6b-hb", Disk: "/dev/sdz", Heartbeat: 300 * time.Millisecond})
			if err != nil {
				return err
			}
			defer c.Close()
			err = c.Run(ctx, 2, func(ch source.Chunk) error { return nil })
			c.Finished(err)
			return err
		})
	}()
	seen := map[time.Time]bool{}
	var restoring *ClientStatus
	for ctx.Err() == nil {
		for _, c := range srv.Clients() {
			if c.Name == "n6b-hb" && c.State == StateJoined {
				seen[c.LastSeen] = true
			}
			if c.Name == "n6b-hb" && c.State == StateRestoring && restoring == nil {
				restoring = &c
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-done; err == nil {
		t.Fatal("the client without data did not fail")
	}
	if restoring != nil {
		t.Errorf("a client that received nothing showed as restoring: %+v", *restoring)
	}
	// Joined, then about one heartbeat per 300 ms for some 2.5 s.
	if len(seen) < 4 {
		t.Errorf("the server heard from the waiting client %d times in 3 s; want its heartbeats", len(seen))
	}
	var last ClientStatus
	for range 50 {
		if cl := srv.Clients(); len(cl) == 1 {
			if last = cl[0]; last.State == StateFailed {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if last.State != StateFailed || last.Message == "" || last.Disk != "/dev/sdz" {
		t.Errorf("after the client gave up the server shows %+v; want failed with a reason", last)
	}
	t.Logf("heard %d times while waiting; then %s: %s", len(seen), last.State, last.Message)
}
