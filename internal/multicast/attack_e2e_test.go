package multicast

// The control-protocol attacker and the forged-packet flooder of issue 11:
// each attack runs against a real `asr server` in a lab of network
// namespaces (prefix "mc"), from an attacker host of its own, while a
// legitimate client restores. Each test asserts what an admin cares about:
// the server's peak memory (VmHWM) stays within budget, and the legitimate
// client restores byte-exact, in time.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

// serverBudget is the most the server may hold in memory whatever its
// clients do (issue 11).
const serverBudget = 128 << 20

// attackLab is a server (198.18.0.1), a legitimate client (.11) and an
// attacker (.12), all in namespaces named mc<name>*.
type attackLab struct {
	*mlab
	proc     *serverProc
	disk     string
	img      string
	attacker *netlab.Host
	group    string
}

func newAttackLab(t *testing.T, name string, n int, scanArgs ...string) *attackLab {
	t.Helper()
	l := &attackLab{mlab: newLab(t, "mc"+name, 2)}
	l.attacker = l.clients[1]
	l.disk, l.img = l.image(uint64(100+n), scanArgs...)
	l.group = fmt.Sprintf("239.255.11.%d", n)
	l.proc = l.server(l.srv, l.img, l.config(l.group, 20000000, ""))
	return l
}

// vmHWM is the server process's peak resident memory, in bytes.
func (l *attackLab) vmHWM() int64 {
	l.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", l.proc.cmd.Process.Pid))
	if err != nil {
		l.t.Fatalf("server status: %v", err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		l.t.Fatalf("no VmHWM in the server's status")
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// held counts the control connections the server holds open.
func (l *attackLab) held() int {
	out, err := l.srv.Command(context.Background(), "ss", "-Htn", "state", "established", "( sport = :7800 )").Output()
	if err != nil {
		l.t.Fatalf("ss: %v", err)
	}
	return strings.Count(string(out), "\n")
}

// legit restores on the legitimate client and checks its target; it
// returns the run's result and whether the target equals the source.
func (l *attackLab) legit(name string, extra ...string) (clientResult, bool) {
	target := l.target(name, 99)
	r := l.restore(l.clients[0], target, extra...)
	return r, r.code == 0 && testenv.Hash(l.t, target, 0, diskSize) == testenv.Hash(l.t, l.disk, 0, diskSize)
}

// report logs the attack's figures in one line (the closing note's
// table), and fails the test beyond the budget or without a byte-exact
// restore.
func (l *attackLab) report(attack string, r clientResult, exact bool) {
	t := l.t
	t.Helper()
	hwm := l.vmHWM()
	t.Logf("ATTACK %s: server VmHWM %d MiB; legitimate client exit %d in %s, byte-exact %v; server holds %d control connections",
		attack, hwm>>20, r.code, r.took.Round(100*time.Millisecond), exact, l.held())
	if hwm > serverBudget {
		t.Errorf("%s: server peak RSS %d MiB, budget %d MiB", attack, hwm>>20, serverBudget>>20)
	}
	if !exact {
		t.Errorf("%s: the legitimate client did not restore byte-exact: exit %d\n%s", attack, r.code, r.out)
	}
}

// dialMany opens n control connections from h, each starting with first
// (a hello, or more). The connections stay open until ctx ends.
func dialMany(ctx context.Context, t *testing.T, h *netlab.Host, n int, first func(c net.Conn) error) []net.Conn {
	t.Helper()
	var conns []net.Conn
	err := h.Do(func() error {
		for range n {
			c, err := net.DialTimeout("tcp", "198.18.0.1:7800", 5*time.Second)
			if err != nil {
				return err
			}
			conns = append(conns, c)
			if first != nil {
				// A server that refuses the connection closes it: that
				// is a defence, not a failure of the attacker.
				c.SetWriteDeadline(time.Now().Add(time.Second))
				first(c)
			}
		}
		return nil
	})
	if err != nil && len(conns) == 0 {
		t.Fatalf("attacker: %v", err)
	}
	context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

func sayHello(c net.Conn) error {
	return writeJSON(c, msgHello, hello{Version: WireVersion, Client: "attacker"})
}

// 1000 clients say hello and then nothing.
func TestE2EAttackIdleClients(t *testing.T) {
	l := newAttackLab(t, "i", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dialMany(ctx, t, l.attacker, 1000, sayHello)
	r, exact := l.legit("t.raw")
	l.report("1000 idle clients after hello", r, exact)
}

// 250 connections announce a 4 MiB frame after hello and send all of it
// but its last byte. (Announcing alone costs little: pages of an untouched
// allocation are not resident.)
func TestE2EAttackHugeFrames(t *testing.T) {
	l := newAttackLab(t, "h", 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dialMany(ctx, t, l.attacker, 250, func(c net.Conn) error {
		if err := sayHello(c); err != nil {
			return err
		}
		var h [5]byte
		binary.LittleEndian.PutUint32(h[:], 4<<20)
		h[4] = msgStatus
		if _, err := c.Write(h[:]); err != nil {
			return err
		}
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write(make([]byte, 4<<20-2))
		return err
	})
	r, exact := l.legit("t.raw")
	l.report("250 connections announcing 4 MiB frames", r, exact)
}

// 20 clients ask for every chunk by repair, and never read the answers.
func TestE2EAttackNonReadingRepairers(t *testing.T) {
	l := newAttackLab(t, "r", 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := os.Open(l.img)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	im, err := image.Open(f, st.Size())
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i, c := range im.Manifest.Chunks {
		if c.Codec.Stored() {
			want = binary.LittleEndian.AppendUint32(want, uint32(i))
		}
	}
	conns := dialMany(ctx, t, l.attacker, 20, func(c net.Conn) error {
		// A small receive window, so the server's writes block at once.
		c.(*net.TCPConn).SetReadBuffer(4096)
		if err := sayHello(c); err != nil {
			return err
		}
		for range 4 {
			if err := writeFrame(c, msgRepair, want); err != nil {
				return err
			}
		}
		return nil
	})
	_ = conns
	time.Sleep(2 * time.Second)
	r, exact := l.legit("t.raw")
	l.report("20 repairers that never read", r, exact)
	// Each is dropped once a write to it has waited writeTimeout.
	deadline := time.Now().Add(writeTimeout + 5*time.Second)
	for l.held() > 0 && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	if n := l.held(); n > 0 {
		t.Errorf("the server still holds %d control connections of clients that do not read, %s after they asked for repair", n, writeTimeout+5*time.Second)
	}
}

// 6000 short connections, each with a 64 KiB hello.
func TestE2EAttackShortConnections(t *testing.T) {
	l := newAttackLab(t, "s", 4)
	big := hello{Version: WireVersion, Client: strings.Repeat("x", 64<<10-100)}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var sent sync.Map
	for w := range 8 {
		wg.Go(func() {
			n := 0
			l.attacker.Do(func() error {
				for ; n < 750 && ctx.Err() == nil; n++ {
					c, err := net.DialTimeout("tcp", "198.18.0.1:7800", 2*time.Second)
					if err != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					c.SetDeadline(time.Now().Add(2 * time.Second))
					writeJSON(c, msgHello, big)
					c.Close()
				}
				return nil
			})
			sent.Store(w, n)
		})
	}
	// The legitimate client restores while the flood goes on.
	time.Sleep(2 * time.Second)
	r, exact := l.legit("t.raw")
	wg.Wait()
	total := 0
	sent.Range(func(_, v any) bool { total += v.(int); return true })
	t.Logf("attacker made %d connections", total)
	l.report("6000 short connections with 64 KiB hellos", r, exact)
}

// A client whose name, MAC, disk and status message carry escape
// sequences, CR and a forged log line: the server's log and its client
// table show them escaped.
func TestE2EAttackControlCharacters(t *testing.T) {
	l := newAttackLab(t, "x", 5)
	evil := "evil\x1b[2J\x1b[H\rClient 198.18.0.99 (pc-01) done\n"
	err := l.attacker.Do(func() error {
		c, err := net.DialTimeout("tcp", "198.18.0.1:7800", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := writeJSON(c, msgHello, hello{Version: WireVersion, Client: evil, MAC: "\x1b]0;owned\a", Disk: "/dev/\x1b[31mvda"}); err != nil {
			return err
		}
		r := bufio.NewReader(c)
		if _, _, err := readFrame(r, 1<<20); err != nil {
			return err
		}
		if err := writeJSON(c, msgStatus, status{Event: "joined"}); err != nil {
			return err
		}
		if err := writeJSON(c, msgStatus, status{Event: "failed", Message: "disk gone\x1b[2K\rClient 198.18.0.98 done"}); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatalf("attacker: %v", err)
	}
	r, exact := l.legit("t.raw")
	l.report("control characters in names", r, exact)
	l.proc.stop(t) // prints the client table at stop
	log := l.proc.log()
	if strings.ContainsAny(log, "\x1b\r\a") {
		t.Errorf("the server's log holds raw control characters:\n%q", log)
	}
	for _, want := range []string{`evil\x1b[2J\x1b[H\rClient 198.18.0.99 (pc-01) done\n`, `disk gone\x1b[2K\rClient 198.18.0.98 done`} {
		if !strings.Contains(log, want) {
			t.Errorf("the server's log lacks the escaped %s:\n%s", want, log)
		}
	}
	if regexp.MustCompile(`(?m)^Client 198\.18\.0\.9[89]`).MatchString(log) {
		t.Errorf("a forged line made it into the server's log as a line of its own:\n%s", log)
	}
	table := log[strings.Index(log, "Clients at stop:"):]
	if !strings.Contains(table, `\x1b]0;owned\a`) || !strings.Contains(table, `/dev/\x1b[31mvda`) {
		t.Errorf("the client table does not show the MAC and disk escaped:\n%s", table)
	}
}

// A LAN host copies the stream identity from a sniffed packet and floods
// forged shards for every chunk the client lacks: the client still
// finishes within 3 times its clean time, byte-exact.
func TestE2EAttackForgedFlood(t *testing.T) {
	// Small chunks: many more of them than repair's limit covers, so
	// that repair alone cannot save a client from the flood.
	l := newAttackLab(t, "f", 6, "--chunksize", "65536")
	// The forger learns the manifest like any client (to know the chunks'
	// layout) and the stream's identity and pass from a sniffed packet.
	f := l.attacker
	sess, m := learnStream(t, f)
	var pc *net.UDPConn
	if err := f.Do(func() (err error) {
		pc, err = net.ListenMulticastUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(sess.Group), Port: sess.Port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// A small buffer: the forger sees where the stream is now, not where
	// it was.
	pc.SetReadBuffer(8 << 10)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var flooding atomic.Bool
	var flooded sync.WaitGroup
	var forged int64
	flooded.Go(func() {
		f.Do(func() error {
			out, err := net.Dial("udp4", sess.Group+":"+strconv.Itoa(sess.Port))
			if err != nil {
				return err
			}
			defer out.Close()
			buf := make([]byte, packetSize+1)
			pkt := make([]byte, packetSize)
			last, upTo := -1, 0 // the chunk the stream is at; forged up to
			for ctx.Err() == nil {
				// The real stream's latest packet: its identity, pass, and
				// the chunk it is sending now.
				pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, _, err := pc.ReadFromUDP(buf)
				if err != nil || !flooding.Load() {
					continue
				}
				h, err := parseHeader(buf[:n])
				if err != nil || int(h.Chunk) == last {
					continue
				}
				if int(h.Chunk) < last {
					upTo = 0 // a new pass
				}
				last = int(h.Chunk)
				// Forged data shards for the next few chunks, before their
				// real packets come: all but one, so that a chunk is not
				// complete (and dropped) before real packets mix in.
				for i, ahead := last+1, 0; i < len(m.Chunks) && ahead < 8; i++ {
					ch := m.Chunks[i]
					if !ch.Codec.Stored() {
						continue
					}
					ahead++
					if i < upTo {
						continue
					}
					upTo = i + 1
					groups := layout(int(ch.Length), sess.Parity)
					for gi, g := range groups {
						for s := range g.k {
							if gi == len(groups)-1 && s == g.k-1 {
								break
							}
							(&header{Stream: h.Stream, Pass: h.Pass, Chunk: uint32(i), Group: uint16(gi), Shard: uint16(s),
								K: uint16(g.k), N: uint16(g.k + g.m)}).marshal(pkt)
							pkt[headerLen] = byte(forged)
							out.Write(pkt)
							forged++
						}
					}
				}
			}
			return nil
		})
	})
	// A clean restore, which the forger sniffs; then the flood, and a
	// restore under it.
	clean, exact := l.legit("clean.raw")
	if !exact {
		t.Fatalf("clean restore failed: exit %d\n%s", clean.code, clean.out)
	}
	flooding.Store(true)
	time.Sleep(time.Second)
	r, exact := l.legit("t.raw")
	cancel()
	flooded.Wait()
	t.Logf("clean restore %s; forger sent %d packets; client: %s", clean.took.Round(100*time.Millisecond), forged, notePattern.FindString(r.out))
	l.report("forged-packet flood with a copied stream identity", r, exact)
	if limit := 3*clean.took + 2*time.Second; r.took > limit {
		t.Errorf("under the flood the client took %s, clean %s: want at most 3 times (%s)", r.took, clean.took, limit)
	}
}

// learnStream is what a forger on host f learns by saying hello: the
// session and the manifest.
func learnStream(t *testing.T, f *netlab.Host) (sess session, m *image.Manifest) {
	t.Helper()
	if err := f.Do(func() error {
		c, err := net.Dial("tcp", "198.18.0.1:7800")
		if err != nil {
			return err
		}
		defer c.Close()
		writeJSON(c, msgHello, hello{Version: WireVersion, Client: "forger"})
		r := bufio.NewReader(c)
		_, b, err := readFrame(r, 1<<20)
		if err != nil {
			return err
		}
		json.Unmarshal(b, &sess)
		_, b, err = readFrame(r, maxFrame)
		if err != nil {
			return err
		}
		m, _, err = image.ReadManifest(bytes.NewReader(b))
		return err
	}); err != nil {
		t.Fatalf("forger handshake: %v", err)
	}
	return sess, m
}

// When the server dies, a forger who keeps sending packets with its
// stream's identity does not keep the client waiting: the timeout counts
// chunks that pass their check, not packets. Before, the client waited as
// long as the forger sent.
func TestE2EAttackForgedFloodDeadServer(t *testing.T) {
	l := newAttackLab(t, "g", 7)
	f := l.attacker
	sess, m := learnStream(t, f)
	var pc *net.UDPConn
	if err := f.Do(func() (err error) {
		pc, err = net.ListenMulticastUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(sess.Group), Port: sess.Port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	target := l.target("t.raw", 70)
	done := make(chan clientResult, 1)
	go func() { done <- l.restore(l.clients[0], target, "--timeout", "3") }()
	var flooded sync.WaitGroup
	flooded.Go(func() {
		f.Do(func() error {
			out, err := net.Dial("udp4", sess.Group+":"+strconv.Itoa(sess.Port))
			if err != nil {
				return err
			}
			defer out.Close()
			buf := make([]byte, packetSize+1)
			pc.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, _, err := pc.ReadFromUDP(buf)
			if err != nil {
				return err
			}
			h, err := parseHeader(buf[:n])
			if err != nil {
				return err
			}
			// Garbage for every stored chunk, round after round, at
			// about 30 MB/s.
			pkt := make([]byte, packetSize)
			for ctx.Err() == nil {
				for i, ch := range m.Chunks {
					if !ch.Codec.Stored() || ctx.Err() != nil {
						continue
					}
					for gi, g := range layout(int(ch.Length), sess.Parity) {
						for s := range g.k + g.m {
							(&header{Stream: h.Stream, Pass: h.Pass, Chunk: uint32(i), Group: uint16(gi), Shard: uint16(s),
								K: uint16(g.k), N: uint16(g.k + g.m)}).marshal(pkt)
							out.Write(pkt)
						}
					}
					time.Sleep(30 * time.Millisecond)
				}
			}
			return nil
		})
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(l.proc.log(), "198.18.0.11 (") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	l.proc.cmd.Process.Kill()
	killed := time.Now()
	r := <-done
	took := time.Since(killed)
	cancel()
	flooded.Wait()
	t.Logf("ATTACK forged flood after the server died: client exit %d %s after the kill (--timeout 3)", r.code, took.Round(100*time.Millisecond))
	if r.code == 0 {
		// It finished before the kill: nothing was tested.
		t.Fatalf("the client finished before the server died:\n%s", r.out)
	}
	if !strings.Contains(r.out, "no data from the asr server at 198.18.0.1:7800") {
		t.Errorf("the client's error does not say the stream stalled:\n%s", r.out)
	}
	if took > 3*time.Second+5*time.Second {
		t.Errorf("the client gave up %s after the server died, with --timeout 3 and a forger sending", took)
	}
}

// lockedLog collects an in-process server's log lines.
type lockedLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lockedLog) logf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, a...))
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	// EOF, or a reset when the server closed with unread bytes: closed.
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// The server drops a client that is silent after its hello for the idle
// timeout, refuses connections past its cap from one address and hellos
// over their size limit at once; a real client that is busy before the
// stream (validating, erasing) says "alive" and is kept.
func TestE2EServerDropsSilentAndGreedyClients(t *testing.T) {
	l := newLab(t, "mcd", 1)
	_, img := l.image(120)
	var log lockedLog
	srv := l.inProcessServer(img, "239.255.11.20", 20000000, log.logf, func(o *ServerOptions) { o.IdleTimeout = time.Second })
	h := l.clients[0]
	// Connections that have not said hello yet hold their places (for
	// the hello timeout): the one past the cap is refused at once.
	var silent, big net.Conn
	var conns []net.Conn
	if err := h.Do(func() error {
		for range maxConnsPerAddr + 1 {
			c, err := net.Dial("tcp", "198.18.0.1:7800")
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(conns[maxConnsPerAddr], time.Second) {
		t.Errorf("connection %d from one address was not refused at once", maxConnsPerAddr+1)
	}
	for _, c := range conns {
		c.Close()
	}
	time.Sleep(200 * time.Millisecond) // the server has counted them out
	if err := h.Do(func() (err error) {
		if silent, err = net.Dial("tcp", "198.18.0.1:7800"); err != nil {
			return err
		}
		sayHello(silent)
		big, err = net.Dial("tcp", "198.18.0.1:7800")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	defer big.Close()
	// A hello over its limit is refused before it is read, and leaves no
	// record.
	writeJSON(big, msgHello, hello{Version: WireVersion, Client: strings.Repeat("x", maxHelloFrame)})
	if !closedWithin(big, 2*time.Second) {
		t.Errorf("a hello of %d bytes was not refused", maxHelloFrame+20)
	}
	for _, c := range srv.Clients() {
		if strings.HasPrefix(c.Name, "xxx") {
			t.Errorf("an oversized hello is in the table: %d bytes of name", len(c.Name))
		}
	}
	// The silent client: after its hello, the session and manifest, then
	// nothing, and the server closes within the idle timeout.
	start := time.Now()
	if !closedWithin(silent, 5*time.Second) {
		t.Errorf("a client silent after its hello was not dropped within 5 s (idle timeout 1 s)")
	}
	t.Logf("silent client dropped after %s", time.Since(start).Round(100*time.Millisecond))
	if !strings.Contains(log.String(), "said nothing for 1s: dropped") || !strings.Contains(log.String(), "Refused 1 control connections") {
		t.Errorf("the server's log does not say it dropped and refused clients:\n%s", log.String())
	}
	// A real client that takes its time before the stream is kept.
	var c *Client
	if err := h.Do(func() (err error) {
		c, err = Open(context.Background(), "asr://198.18.0.1", ClientOptions{Name: "slow", Heartbeat: 300 * time.Millisecond, Timeout: 5 * time.Second})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	for _, cs := range srv.Clients() {
		if cs.Name == "slow" && cs.State != StateConnected {
			t.Errorf("a client busy before the stream but saying alive was dropped: %+v", cs)
		}
	}
	c.Close()
}

// A client whose multicast stream yields nothing (here nftables drops
// every UDP packet; a forger spoiling every chunk does the same) fetches the
// image over its control connection and restores byte-exact within its
// timeout. Before, it waited for the stream and gave up.
func TestE2EFallbackToControlConnection(t *testing.T) {
	l := newAttackLab(t, "u", 8)
	ns := l.clients[0].NS
	for _, args := range [][]string{
		{"nft", "add", "table", "inet", "mcdrop"},
		{"nft", "add", "chain", "inet", "mcdrop", "input", "{ type filter hook input priority 0; }"},
		{"nft", "add", "rule", "inet", "mcdrop", "input", "meta", "l4proto", "udp", "drop"},
	} {
		testenv.Run(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
	}
	r, exact := l.legit("t.raw", "--timeout", "10")
	t.Logf("no stream at all: client exit %d in %s, byte-exact %v", r.code, r.took.Round(100*time.Millisecond), exact)
	if !exact {
		t.Fatalf("client without a stream: exit %d\n%s", r.code, r.out)
	}
	if !strings.Contains(r.out, "fetching missing chunks over the control connection") {
		t.Errorf("the client does not say it fell back to its control connection:\n%s", r.out)
	}
}
