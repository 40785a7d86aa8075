package multicast

// End-to-end tests of `asr server` and `asr restore --source asr://` in a lab
// of network namespaces on one bridge (package netlab): the server at
// 198.18.0.1, clients at .11, .12, .13, each in a namespace of its own, the
// stream on a group in 239.255.0.0/16. Loss is made with nftables in a
// client's namespace. Everything is removed when the test ends.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

const diskSize = 48 << 20

type mlab struct {
	t       *testing.T
	lab     *netlab.Lab
	srv     *netlab.Host
	clients []*netlab.Host
	asr     string
	dir     string
}

func newMLab(t *testing.T, name string, clients int) *mlab {
	t.Helper()
	return newLab(t, "am"+name, clients)
}

// newLab makes a lab whose namespaces are named prefix*: each test's prefix
// is its own, as tests of other packages run at the same time.
func newLab(t *testing.T, prefix string, clients int) *mlab {
	t.Helper()
	testenv.Require(t, "ip", "nft", "sgdisk")
	l := &mlab{t: t, asr: testenv.Asr(t), dir: t.TempDir()}
	l.lab = netlab.NewT(t, prefix)
	l.srv = l.lab.AddHostT(t, "s", 1)
	for i := range clients {
		h := l.lab.AddHostT(t, fmt.Sprintf("c%d", i+1), 11+i)
		l.clients = append(l.clients, h)
	}
	return l
}

// image makes a sample disk and its prepared image.
func (l *mlab) image(seed uint64, scanArgs ...string) (disk, img string) {
	disk = testenv.Disk(l.t, l.dir, diskSize, seed)
	img = disk + ".asr"
	testenv.Run(l.t, l.asr, append([]string{"imagescan", "--source", disk, "--output", img}, scanArgs...)...)
	return disk, img
}

func (l *mlab) config(group string, rate int, extra string) string {
	p := filepath.Join(l.dir, "asrconfig-"+group+".plist")
	os.WriteFile(p, []byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>`+group+`</string>
<key>Data Rate</key><integer>`+strconv.Itoa(rate)+`</integer>
<key>DNS Service Discovery</key><false/>
`+extra+`</dict></plist>`), 0o644)
	return p
}

// server runs asr server on host h; its output collects in the returned
// buffer. It waits for "Ready to start accepting clients".
type serverProc struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out bytes.Buffer
}

func (s *serverProc) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

func (l *mlab) server(h *netlab.Host, img, cfg string) *serverProc {
	l.t.Helper()
	s := &serverProc{cmd: h.Command(context.Background(), l.asr, "server", "--source", img, "--config", cfg)}
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			s.mu.Lock()
			s.out.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if strings.Contains(sc.Text(), "Ready to start accepting clients") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	l.t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		pw.Close()
	})
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		l.t.Fatalf("server did not get ready:\n%s", s.log())
	}
	return s
}

// stop sends SIGINT and expects a clean exit.
func (s *serverProc) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server exit after SIGINT: %v\n%s", err, s.log())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("server did not stop within 10 s of SIGINT")
	}
}

type clientResult struct {
	out  string
	code int
	took time.Duration
}

// restore runs a client on h writing to target; extra flags follow.
func (l *mlab) restore(h *netlab.Host, target string, extra ...string) clientResult {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"restore", "--source", "asr://198.18.0.1", "--target", target, "--erase", "--noprompt", "--timeout", "20"}, extra...)
	start := time.Now()
	out, err := h.Command(ctx, l.asr, args...).CombinedOutput()
	r := clientResult{out: string(out), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		r.code = -1
		r.out += err.Error()
	}
	return r
}

func (l *mlab) target(name string, seed uint64) string {
	p := filepath.Join(l.dir, name)
	testenv.FillRandom(l.t, p, diskSize, seed)
	return p
}

// restored checks that client i exited 0 with its target equal to the
// disk (sha256 want); it says what was wrong otherwise.
func restored(t *testing.T, i int, r clientResult, target, want string) bool {
	t.Helper()
	if r.code != 0 {
		t.Errorf("client %d: exit %d\n%s", i+1, r.code, r.out)
		return false
	}
	if got := testenv.Hash(t, target, 0, diskSize); got != want {
		t.Errorf("client %d: target sha256 %s, want %s", i+1, got, want)
	}
	return true
}

var notePattern = regexp.MustCompile(`(\d+) packets received; (\d+) chunks rebuilt from parity, (\d+) fetched by repair; ignored (\d+) packets of another stream, (\d+) malformed, (\d+) chunks that failed their check`)

// note reads the client's closing counters.
func note(t *testing.T, out string) (packets, rebuilt, repaired, foreign, bogus, forged int) {
	t.Helper()
	m := notePattern.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("client output has no stream summary:\n%s", out)
	}
	n := make([]int, 6)
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	return n[0], n[1], n[2], n[3], n[4], n[5]
}

// Three clients, one with 2% loss and one with 10%, the last two joining in
// the middle of a pass: every target equals the source disk.
func TestE2EThreeClientsWithLoss(t *testing.T) {
	l := newMLab(t, "a", 3)
	disk, img := l.image(1)
	want := testenv.Hash(t, disk, 0, diskSize)
	if err := l.clients[1].DropUDP(2); err != nil {
		t.Fatal(err)
	}
	if err := l.clients[2].DropUDP(10); err != nil {
		t.Fatal(err)
	}
	srv := l.server(l.srv, img, l.config("239.255.10.1", 25000000, ""))
	var wg sync.WaitGroup
	res := make([]clientResult, 3)
	targets := make([]string, 3)
	for i, h := range l.clients {
		targets[i] = l.target(fmt.Sprintf("t%d.raw", i), uint64(10+i))
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 400 * time.Millisecond) // join mid-pass
			res[i] = l.restore(h, targets[i])
		})
	}
	wg.Wait()
	for i, r := range res {
		if !restored(t, i, r, targets[i], want) {
			continue
		}
		_, rebuilt, repaired, _, _, _ := note(t, r.out)
		t.Logf("client %d: %s; rebuilt %d, repaired %d", i+1, r.took.Round(time.Millisecond), rebuilt, repaired)
		if i == 2 && rebuilt+repaired == 0 {
			t.Errorf("client 3 lost 10%% of its packets but rebuilt and repaired nothing:\n%s", r.out)
		}
	}
	log := srv.log()
	for _, h := range l.clients {
		if !regexp.MustCompile(`Client `+regexp.QuoteMeta(h.Addr)+` \(.*\) joined`).MatchString(log) ||
			!regexp.MustCompile(`Client `+regexp.QuoteMeta(h.Addr)+` \(.*\) done`).MatchString(log) {
			t.Errorf("server log lacks joined/done for %s:\n%s", h.Addr, log)
		}
	}
	if !strings.Contains(log, "Starting stream ") {
		t.Errorf("server log lacks 'Starting stream':\n%s", log)
	}
	srv.stop(t)
}

// A client whose server dies fails after --timeout with a clear message and
// leaves the first chunk of its target blank.
func TestE2EServerKilled(t *testing.T) {
	l := newMLab(t, "b", 1)
	_, img := l.image(2)
	// A slow stream, so the client is still waiting when the server dies.
	srv := l.server(l.srv, img, l.config("239.255.10.2", 2000000, ""))
	target := l.target("t.raw", 20)
	done := make(chan clientResult)
	go func() { done <- l.restore(l.clients[0], target, "--timeout", "3") }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(srv.log(), "joined") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	srv.cmd.Process.Kill()
	killed := time.Now()
	r := <-done
	if r.code != 1 || !strings.Contains(r.out, "no data from the asr server at 198.18.0.1:7800") || !strings.Contains(r.out, "(--timeout)") {
		t.Fatalf("client after the server died: exit %d, want 1 and a message naming the silent server:\n%s", r.code, r.out)
	}
	t.Logf("client gave up %s after the server died", time.Since(killed).Round(100*time.Millisecond))
	if took := time.Since(killed); took > 15*time.Second {
		t.Errorf("client gave up %v after the server died; --timeout was 3 s", took)
	}
	if got := testenv.Hash(t, target, 0, 1<<20); got != testenv.ZeroHash(1<<20) {
		t.Errorf("the failed client's first chunk is not blank")
	}
}

// Two servers stream two images to the same group and port: each client
// takes only its own server's packets, and says it ignored the others.
func TestE2ETwoServersSameGroup(t *testing.T) {
	l := newMLab(t, "c", 2)
	srv2 := l.lab.AddHostT(t, "s2", 2)
	diskA, imgA := l.image(3)
	diskB, imgB := l.image(4)
	cfg := l.config("239.255.10.3", 20000000, "")
	l.server(l.srv, imgA, cfg)
	l.server(srv2, imgB, cfg)
	ta, tb := l.target("a.raw", 30), l.target("b.raw", 31)
	var ra, rb clientResult
	var wg sync.WaitGroup
	wg.Go(func() { ra = l.restore(l.clients[0], ta) })
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := l.clients[1].Command(ctx, l.asr, "restore", "--source", "asr://198.18.0.2", "--target", tb, "--erase", "--noprompt", "--timeout", "20").CombinedOutput()
		rb = clientResult{out: string(out)}
		if err != nil {
			rb.code = 1
		}
	})
	wg.Wait()
	for _, c := range []struct {
		r            clientResult
		target, disk string
	}{{ra, ta, diskA}, {rb, tb, diskB}} {
		if c.r.code != 0 {
			t.Fatalf("client of %s: exit %d\n%s", c.disk, c.r.code, c.r.out)
		}
		if testenv.Hash(t, c.target, 0, diskSize) != testenv.Hash(t, c.disk, 0, diskSize) {
			t.Errorf("client of %s restored something else", c.disk)
		}
		if _, _, _, foreign, _, _ := note(t, c.r.out); foreign == 0 {
			t.Errorf("client of %s saw no packets of the other stream; the test did not test anything:\n%s", c.disk, c.r.out)
		}
	}
}

// Forged packets that carry the right stream identity but wrong data make
// chunks fail their check: they are dropped and counted, and the target still
// equals the source.
func TestE2EForgedPackets(t *testing.T) {
	l := newMLab(t, "d", 2)
	disk, img := l.image(5)
	cfg := l.config("239.255.10.4", 10000000, "")
	srvLog := l.server(l.srv, img, cfg)

	// The forger learns the stream like a client would, then sends complete
	// sets of garbage shards for every stored chunk the moment the client
	// has joined: those the client does not have yet fail their check.
	forger := l.clients[1]
	sess, m := learnStream(t, forger)
	var sid StreamID
	if b, err := hex.DecodeString(sess.Stream); err != nil || copy(sid[:], b) != len(sid) {
		t.Fatalf("forger: bad stream identity %q", sess.Stream)
	}
	target := l.target("t.raw", 40)
	done := make(chan clientResult)
	go func() { done <- l.restore(l.clients[0], target) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(srvLog.log(), "198.18.0.11 (") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // it has joined the group
	forged := 0
	err := forger.Do(func() error {
		c, err := net.Dial("udp4", sess.Group+":"+strconv.Itoa(sess.Port))
		if err != nil {
			return err
		}
		defer c.Close()
		pkt := make([]byte, packetSize)
		for i := len(m.Chunks) - 1; i >= 0; i-- {
			ch := m.Chunks[i]
			if !ch.Codec.Stored() {
				continue
			}
			for gi, g := range layout(int(ch.Length), sess.Parity) {
				for s := range g.k {
					(&header{Stream: sid, Pass: 1, Chunk: uint32(i), Group: uint16(gi), Shard: uint16(s), K: uint16(g.k), N: uint16(g.k + g.m)}).marshal(pkt)
					for x := headerLen; x < packetSize; x++ {
						pkt[x] = byte(x * (s + 1))
					}
					c.Write(pkt)
				}
			}
			forged++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("forger: %v", err)
	}
	r := <-done
	if r.code != 0 {
		t.Fatalf("client with forged packets around: exit %d\n%s", r.code, r.out)
	}
	if testenv.Hash(t, target, 0, diskSize) != testenv.Hash(t, disk, 0, diskSize) {
		t.Error("target differs from the source after forged packets")
	}
	if _, _, _, _, _, failed := note(t, r.out); failed == 0 {
		t.Errorf("client counted no chunks that failed their check; %d forged chunks were sent:\n%s", forged, r.out)
	}
}

// The stream keeps to its Data Rate: measured at a listener over two
// seconds, within 5% and never above (one packet of slack).
func TestE2EDataRate(t *testing.T) {
	l := newMLab(t, "e", 1)
	_, img := l.image(6)
	const rate = 8000000
	srv := l.server(l.srv, img, l.config("239.255.10.5", rate, "<key>Client Data Rate</key><integer>"+strconv.Itoa(rate)+"</integer>\n"))
	// A bare control connection makes the stream start without a client
	// that decodes and writes, so the machine's two cores are the server's
	// and the listener's: the test is about the server's clock.
	var ctl net.Conn
	if err := l.clients[0].Do(func() (err error) {
		if ctl, err = net.Dial("tcp", "198.18.0.1:7800"); err == nil {
			if err = writeJSON(ctl, msgHello, hello{Version: WireVersion, Client: "meter"}); err == nil {
				err = writeJSON(ctl, msgStatus, status{Event: "joined"})
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	var pc *net.UDPConn
	if err := l.clients[0].Do(func() (err error) {
		pc, err = net.ListenMulticastUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("239.255.10.5"), Port: 7801})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// A deep buffer, so the measurement counts what was sent, not what this
	// busy test process managed to read in time.
	if rc, err := pc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20) })
	}
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := pc.ReadFromUDP(buf); err != nil {
		t.Fatalf("no stream: %v", err)
	}
	start := time.Now()
	var bytesIn int64
	for time.Since(start) < 2*time.Second {
		pc.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := pc.ReadFromUDP(buf)
		if err != nil {
			break
		}
		bytesIn += int64(n)
	}
	got := float64(bytesIn) / time.Since(start).Seconds()
	t.Logf("measured %.0f bytes/s for Data Rate %d", got, rate)
	// The server's own account of its first pass.
	deadline := time.Now().Add(30 * time.Second)
	var passRate float64
	for passRate == 0 && time.Now().Before(deadline) {
		if m := regexp.MustCompile(`Pass 1 done: \d+ bytes in [\d.]+ s, (\d+) bytes/s`).FindStringSubmatch(srv.log()); m != nil {
			passRate, _ = strconv.ParseFloat(m[1], 64)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Above the rate is a bug. Below it is what a starved machine does (the
	// pacer's catch-up is capped at maxBurst, and make test runs VMs beside
	// this test on two cores): that bound is looser, and the benchmark, not
	// this test, measures speed.
	const low = 0.85
	if passRate < low*rate || passRate > rate {
		t.Errorf("server's first pass ran at %.0f bytes/s, want within %.0f%% of %d and not above:\n%s", passRate, 100*(1-low), rate, srv.log())
	}
	// Not above, but for the timing of the window's ends (two packets) and
	// the pacer's catch-up after a stall (maxBurst at the rate).
	slack := (2*packetSize + maxBurst.Seconds()*rate) / time.Since(start).Seconds()
	if got < low*rate || got > rate+slack {
		t.Errorf("stream rate %.0f bytes/s, want within %.0f%% of %d and not above (%.0f bytes/s of slack); server:\n%s", got, 100*(1-low), rate, slack, srv.log())
	}
}

// A client of another protocol version is refused with a message that says
// so, and the stream pauses after Loop Suspend passes with nobody listening.
func TestE2EVersionCheckAndLoopSuspend(t *testing.T) {
	l := newMLab(t, "f", 1)
	disk, img := l.image(7)
	srv := l.server(l.srv, img, l.config("239.255.10.6", 20000000, "<key>Loop Suspend</key><integer>1</integer>\n"))
	var reply string
	if err := l.clients[0].Do(func() error {
		c, err := net.Dial("tcp", "198.18.0.1:7800")
		if err != nil {
			return err
		}
		defer c.Close()
		if err := writeJSON(c, msgHello, hello{Version: 99, Client: "old"}); err != nil {
			return err
		}
		typ, b, err := readFrame(bufio.NewReader(c), 1<<20)
		if err != nil {
			return err
		}
		if typ != msgError {
			return fmt.Errorf("frame type %d, want an error frame", typ)
		}
		reply = string(b)
		return nil
	}); err != nil {
		t.Fatalf("hello with version 99: %v", err)
	}
	if !strings.Contains(reply, "version 1") || !strings.Contains(reply, "99") {
		t.Errorf("version refusal = %q, want it to name both versions", reply)
	}
	target := l.target("t.raw", 60)
	if r := l.restore(l.clients[0], target); r.code != 0 || testenv.Hash(t, target, 0, diskSize) != testenv.Hash(t, disk, 0, diskSize) {
		t.Fatalf("restore: exit %d, or target differs\n%s", r.code, r.out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(srv.log(), "Stream suspended: no clients for 1 passes") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(srv.log(), "Stream suspended") {
		t.Errorf("with Loop Suspend 1 the stream did not pause once the client was done:\n%s", srv.log())
	}
}
