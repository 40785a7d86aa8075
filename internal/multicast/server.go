package multicast

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/asrlinux/asr/internal/config"
	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/safetext"
)

// ServerOptions configure a server.
type ServerOptions struct {
	Image     string // prepared image path
	Config    *config.Server
	Interface string // network interface for the stream; "" lets routing choose
	Parity    int    // percent; 0 means DefaultParity, -1 none
	// Log receives one line per event.
	Log func(format string, a ...any)
	// Event, if set, receives the events of clients (joined, every tenth
	// of progress, done, failed, lost) and of passes as ServerEvents
	// instead of their Log lines; other lines still go to Log. It is
	// called from the server's goroutines and must return quickly.
	Event func(ServerEvent)
	// Ready, if set, is called once the control port listens.
	Ready func(addr net.Addr)
	// IdleTimeout drops a client that says nothing for this long after its
	// hello (clients say something every 5 s); zero means 30 s.
	IdleTimeout time.Duration
}

// Limits on what clients can make a server hold.
const (
	maxConns        = 512 // control connections at once
	maxConnsPerAddr = 32  // from one IP address
	helloTimeout    = 10 * time.Second
	writeTimeout    = 20 * time.Second // for each write to a client
	// repairBudget bounds the bytes of chunks being written by repair, to
	// every client together.
	repairBudget = 32 << 20
	// keepEnded is how many clients that are done, failed or lost the
	// table keeps; older ones are only counted.
	keepEnded = 256
)

// Server streams one image.
type Server struct {
	opts   ServerOptions
	im     *image.Image
	raw    []byte // header and manifest, as sent to clients
	stream StreamID
	rate   int64
	parity int
	rs     codecs

	// sigs are the image's signatures; trailer is their trailer as the
	// session carries it (base64).
	sigs    [][]byte
	trailer string

	stored int           // stored chunks in the image
	idle   time.Duration // IdleTimeout
	// repairBufs holds the buffers repair reads chunks into: taking one is
	// the right to have a chunk in flight.
	repairBufs chan []byte

	mu      sync.Mutex
	clients int           // connected clients that still want the stream
	stopped bool          // the stream waits for a client (or for Minimum Clients)
	wake    chan struct{} // closed and replaced when a client arrives
	pass    uint32
	table   map[int]*ClientStatus
	nextID  int
	// Clients that ended, oldest first; past keepEnded of them the oldest
	// leave the table and are counted in forgotten, by state.
	ended     []int
	forgotten map[string]int
	// Control connections open, in all and by address; refused since the
	// last log line about it.
	conns      int
	perAddr    map[string]int
	refused    int
	refusedLog time.Time

	ctr counters // for Stats
}

// NewServer opens the image and prepares a server; Serve runs it.
func NewServer(opts ServerOptions) (*Server, error) {
	f, err := os.Open(opts.Image)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", opts.Image, err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	im, err := image.Open(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("source %s: %w (asr server streams prepared images: make one with asr imagescan)", opts.Image, err)
	}
	raw := make([]byte, image.HeaderSize+len(image.MarshalManifest(im.Manifest)))
	if _, err := f.ReadAt(raw, 0); err != nil {
		return nil, fmt.Errorf("source %s: %w", opts.Image, err)
	}
	sigs, err := image.ReadSignatures(f, st.Size(), im.Manifest)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("source %s: %w (sign it again with asr sign, or remove the bytes after its last chunk)", opts.Image, err)
	}
	var trailer []byte
	if len(sigs) > 0 {
		if trailer, err = image.EncodeTrailer(sigs); err != nil {
			f.Close()
			return nil, err
		}
	}
	s := &Server{opts: opts, im: im, raw: raw, sigs: sigs, trailer: base64.StdEncoding.EncodeToString(trailer),
		rate: opts.Config.StreamRate(), wake: make(chan struct{}), stopped: true,
		table: map[int]*ClientStatus{}, forgotten: map[string]int{}, perAddr: map[string]int{}, idle: opts.IdleTimeout}
	if s.idle <= 0 {
		s.idle = 30 * time.Second
	}
	largest := 1
	for _, c := range im.Manifest.Chunks {
		if c.Codec.Stored() {
			s.stored++
			largest = max(largest, int(c.Length))
		}
	}
	s.repairBufs = make(chan []byte, max(1, repairBudget/largest))
	for range cap(s.repairBufs) {
		s.repairBufs <- nil
	}
	copy(s.stream[:8], im.Digest[:8])
	if _, err := rand.Read(s.stream[8:]); err != nil {
		return nil, err
	}
	switch {
	case opts.Parity == 0:
		s.parity = DefaultParity
	case opts.Parity > 0:
		s.parity = opts.Parity
	}
	if s.opts.Log == nil {
		s.opts.Log = func(string, ...any) {}
	}
	return s, nil
}

// Stream is the run's identity, for logs and DNS-SD.
func (s *Server) Stream() StreamID { return s.stream }

// Digest is the image's digest.
func (s *Server) Digest() image.Digest { return s.im.Digest }

// Signatures are the image's signature texts (nil when unsigned), which
// every client receives in its session.
func (s *Server) Signatures() [][]byte { return s.sigs }

// Serve listens for clients and streams until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	cfg := s.opts.Config
	var ifi *net.Interface
	laddr := ""
	if s.opts.Interface != "" {
		var err error
		if ifi, err = net.InterfaceByName(s.opts.Interface); err != nil {
			return &InterfaceError{Name: s.opts.Interface, Err: err}
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(laddr, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listening on TCP port %d: %w", cfg.Port, err)
	}
	defer ln.Close()
	conn, err := s.dialGroup(ifi)
	if err != nil {
		return err
	}
	defer conn.Close()
	if s.opts.Ready != nil {
		s.opts.Ready(ln.Addr())
	}
	s.opts.Log("Ready to start accepting clients")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	wg.Go(func() { s.accept(ctx, ln) })
	err = s.loop(ctx, conn)
	cancel()
	wg.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (s *Server) dialGroup(ifi *net.Interface) (*net.UDPConn, error) {
	cfg := s.opts.Config
	group := net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.Group, uint16(cfg.Port+1)))
	c, err := net.DialUDP("udp4", nil, group)
	if err != nil {
		return nil, &RouteError{Group: group.String(), Err: err}
	}
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetMulticastTTL(cfg.TTL); err != nil {
		c.Close()
		return nil, fmt.Errorf("setting multicast TTL %d: %w", cfg.TTL, err)
	}
	if ifi != nil {
		if err := pc.SetMulticastInterface(ifi); err != nil {
			c.Close()
			return nil, fmt.Errorf("sending multicast on %s: %w", ifi.Name, err)
		}
	}
	_ = c.SetWriteBuffer(4 << 20)
	return c, nil
}

// loop sends the image again and again while anyone listens.
func (s *Server) loop(ctx context.Context, conn *net.UDPConn) error {
	m := s.im.Manifest
	p := newPacer(s.rate)
	idle := 0
	out := newBatchSender(conn, s.opts.Log)
	burst := burstPackets(s.rate)
	for {
		// The stream starts when the first client asks, and pauses after
		// Loop Suspend passes that nobody listened to.
		s.mu.Lock()
		n, wake := s.clients, s.wake
		s.mu.Unlock()
		if s.pass == 0 || (n == 0 && s.opts.Config.LoopSuspend > 0 && idle >= s.opts.Config.LoopSuspend) {
			if s.pass > 0 {
				s.opts.Log("Stream suspended: no clients for %d passes", idle)
			}
			s.setStopped(true)
			if n == 0 {
				select {
				case <-wake:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			started, err := s.gather(ctx)
			if err != nil {
				return err
			}
			if !started {
				continue
			}
			s.setStopped(false)
			idle = 0
			p.reset()
		}
		s.pass++
		s.ctr.pass.Store(s.pass)
		passStart := time.Now()
		if p.sent == 0 {
			passStart = p.start // the schedule starts with this pass
		}
		s.opts.Log("Starting stream %s", passStart.Format("2006-01-02 15:04:05 -0700"))
		heard := false
		var sent int64
		// Chunks are read and encoded ahead of the sender, so a slow disk
		// read never holds up the stream's clock.
		ready := make(chan []byte, 2)
		free := make(chan []byte, 3)
		for range cap(free) {
			free <- nil
		}
		prodErr := make(chan error, 1)
		pctx, stop := context.WithCancel(ctx)
		go func() {
			defer close(ready)
			var stored []byte
			for i, c := range m.Chunks {
				if !c.Codec.Stored() {
					continue
				}
				var pkts []byte
				select {
				case pkts = <-free:
				case <-pctx.Done():
					return
				}
				var err error
				if stored, err = s.im.ReadStored(i, stored); err == nil {
					pkts, err = s.packets(uint32(i), stored, pkts)
				}
				if err != nil {
					prodErr <- err
					return
				}
				ready <- pkts
			}
		}()
		var sendErr error
		for pkts := range ready {
			// A burst per tick of the pacer, in one system call.
			for off := 0; off < len(pkts) && sendErr == nil; {
				end := min(len(pkts), off+burst*packetSize)
				if sendErr = p.wait(ctx, end-off); sendErr != nil {
					break
				}
				sent += int64(end - off)
				wrote, err := out.send(pkts[off:end])
				off = end
				s.ctr.packetSent.Add(int64(wrote))
				s.ctr.bytesSent.Add(int64(wrote * packetSize))
				if err != nil && ctx.Err() != nil {
					// Otherwise a full socket buffer or a flapping link loses
					// these packets only; parity and repair cover them.
					sendErr = ctx.Err()
				}
			}
			free <- pkts
			if sendErr != nil {
				break
			}
			s.mu.Lock()
			heard = heard || s.clients > 0
			s.mu.Unlock()
		}
		stop()
		for range ready {
		}
		if sendErr != nil {
			return sendErr
		}
		select {
		case err := <-prodErr:
			return err
		default:
		}
		s.ctr.passesDone.Add(1)
		secs := time.Since(passStart).Seconds()
		s.note(ServerEvent{Kind: EventPass, Pass: s.pass, Bytes: sent, Elapsed: time.Since(passStart)},
			"Pass %d done: %d bytes in %.2f s, %.0f bytes/s", s.pass, sent, secs, float64(sent)/secs)
		if heard {
			idle = 0
		} else {
			idle++
		}
	}
}

// setStopped says whether the stream is waiting to start: clients that
// connect meanwhile are told how long it may wait for Minimum Clients.
func (s *Server) setStopped(v bool) {
	s.mu.Lock()
	s.stopped = v
	s.mu.Unlock()
}

// gather holds the start of the stream, once a client has joined, until
// Minimum Clients have joined or Client Wait has passed since the first
// of them did, as udp-sender's --min-receivers and --max-wait: machines
// that join a moment after the first then get the same pass rather than
// the next one. started is false when every client left before the
// stream started.
func (s *Server) gather(ctx context.Context) (started bool, err error) {
	cfg := s.opts.Config
	if cfg.MinClients <= 1 {
		return true, nil
	}
	timer := time.NewTimer(cfg.ClientWait)
	defer timer.Stop()
	said := 0
	for {
		s.mu.Lock()
		n, wake := s.clients, s.wake
		s.mu.Unlock()
		if n >= cfg.MinClients {
			s.opts.Log("%d of %d clients joined: starting the stream", n, cfg.MinClients)
			return true, nil
		}
		if n != said {
			said = n
			s.opts.Log("Waiting for clients: %d of %d joined (Minimum Clients); the stream starts when all have, or %s after the first", n, cfg.MinClients, cfg.ClientWait)
		}
		select {
		case <-wake:
		case <-timer.C:
			s.mu.Lock()
			n = s.clients
			s.mu.Unlock()
			if n == 0 {
				s.opts.Log("Client Wait of %s passed and every client has left: waiting for the next", cfg.ClientWait)
				return false, nil
			}
			s.opts.Log("Client Wait of %s passed with %d of %d clients joined: starting the stream", cfg.ClientWait, n, cfg.MinClients)
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// packets builds every packet of chunk i, group by group for the parity
// and interleaved across groups for sending, so that a burst of losses
// costs each group a few shards rather than one group all of them.
func (s *Server) packets(i uint32, stored []byte, buf []byte) ([]byte, error) {
	groups := layout(len(stored), s.parity)
	total, widest := 0, 0
	for _, g := range groups {
		total += g.k + g.m
		widest = max(widest, g.k+g.m)
	}
	need := total * packetSize
	if cap(buf) < need {
		buf = make([]byte, need)
	}
	buf = buf[:need]
	// Packet (group g, shard j) goes to slot j*len(groups)+g, compacted
	// over groups that have fewer shards.
	slot := 0
	shards := make([][][]byte, len(groups))
	for gi, g := range groups {
		shards[gi] = make([][]byte, g.k+g.m)
	}
	for j := range widest {
		for gi, g := range groups {
			if j >= g.k+g.m {
				continue
			}
			pkt := buf[slot*packetSize : (slot+1)*packetSize]
			slot++
			h := header{Stream: s.stream, Pass: s.pass, Chunk: i, Group: uint16(gi), Shard: uint16(j), K: uint16(g.k), N: uint16(g.k + g.m)}
			h.marshal(pkt)
			sh := pkt[headerLen:]
			if j < g.k {
				from := min(len(stored), (g.first+j)*ShardSize)
				clear(sh[copy(sh, stored[from:]):])
			}
			shards[gi][j] = sh
		}
	}
	for gi, g := range groups {
		if g.m == 0 {
			continue
		}
		enc, err := s.rs.get(g.k, g.m)
		if err != nil {
			return nil, err
		}
		if err := enc.Encode(shards[gi]); err != nil {
			return nil, fmt.Errorf("encoding parity for chunk %d: %w", i, err)
		}
	}
	return buf, nil
}

func (s *Server) accept(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		addr := hostOf(c.RemoteAddr())
		if !s.admit(addr) {
			c.Close()
			continue
		}
		wg.Go(func() {
			defer s.release(addr)
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			s.client(ctx, c, addr)
		})
	}
}

func hostOf(a net.Addr) string {
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// admit counts a new control connection from addr in, unless it would pass
// the caps on connections (in all, and from one address): each connection
// costs memory, and one host must not take every place.
func (s *Server) admit(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns >= maxConns || s.perAddr[addr] >= maxConnsPerAddr {
		s.refused++
		s.ctr.connsRefused.Add(1)
		if now := time.Now(); now.Sub(s.refusedLog) >= 10*time.Second {
			s.refusedLog = now
			s.opts.Log("Refused %d control connections over the limits (%d in all, %d from one address), the last from %s",
				s.refused, maxConns, maxConnsPerAddr, addr)
			s.refused = 0
		}
		return false
	}
	s.conns++
	s.perAddr[addr]++
	s.ctr.connsTotal.Add(1)
	return true
}

func (s *Server) release(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns--
	if s.perAddr[addr]--; s.perAddr[addr] <= 0 {
		delete(s.perAddr, addr)
	}
}

// conn is the server's side of one control connection.
type conn struct {
	s        *Server
	c        net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	id       int    // in the client table
	who      string // for the log: address and escaped name
	disk     string
	final    bool     // done or failed was said
	repaired int      // chunks sent by repair
	reported Counters // the client's last report of its counters
	// listening: the client has joined the group.
	listening bool
}

// client serves one control connection: the hello, the stream's
// description, then status reports and repair requests until the client
// leaves. Every read and write has a deadline, every frame a size limit
// by type, so a client that stalls or floods costs a bounded time and
// memory.
func (s *Server) client(ctx context.Context, c net.Conn, addr string) {
	k := &conn{s: s, c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
	h, ok := k.greet(addr)
	if !ok {
		s.ctr.bad.Add(1)
		return
	}
	defer func() {
		k.leave()
		if !k.final {
			s.end(k.id, StateLost, "")
			if s.opts.Event != nil {
				s.noteClient(EventLost, k.id, "Client %s lost: its connection closed before done or failed", k.who)
			}
		}
	}()
	if h.Version != WireVersion {
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		writeFrame(k.w, msgError, []byte(fmt.Sprintf("this server speaks asr multicast version %d, the client %d: use the same asr version on both", WireVersion, h.Version)))
		k.w.Flush()
		s.opts.Log("Client %s refused: protocol version %d", k.who, h.Version)
		return
	}
	if !k.describe() {
		return
	}
	k.serve(ctx)
}

// greet reads the hello within helloTimeout and enters the client in the
// table; ok is false if there was no valid hello.
func (k *conn) greet(addr string) (h hello, ok bool) {
	s := k.s
	k.c.SetReadDeadline(time.Now().Add(helloTimeout))
	typ, b, err := readFrameOf(k.r, func(typ byte) int { return maxHelloFrame })
	if err != nil || typ != msgHello || json.Unmarshal(b, &h) != nil {
		return h, false
	}
	h.Client, h.MAC, h.Disk = clip(h.Client, maxNameLen), clip(h.MAC, maxMACLen), clip(h.Disk, maxNameLen)
	k.who, k.disk = addr, safetext.Line(h.Disk)
	if h.Client != "" {
		k.who += " (" + safetext.Line(h.Client) + ")"
	}
	now := time.Now()
	s.mu.Lock()
	s.nextID++
	k.id = s.nextID
	s.table[k.id] = &ClientStatus{ID: k.id, Name: h.Client, MAC: h.MAC, Addr: addr, Disk: h.Disk,
		State: StateConnected, Since: now, LastSeen: now}
	s.mu.Unlock()
	return h, true
}

// describe sends the session and the manifest.
func (k *conn) describe() bool {
	s := k.s
	m := s.im.Manifest
	cfg := s.opts.Config
	sess := session{
		Version: WireVersion, Stream: hex.EncodeToString(s.stream[:]), Digest: s.im.Digest.String(),
		Name: m.Name, Group: cfg.Group.String(), Port: cfg.Port + 1, ShardSize: ShardSize,
		Parity: s.parity, Rate: s.rate, RepairLimit: s.repairLimit(), Signatures: s.trailer,
	}
	s.mu.Lock()
	if s.stopped && cfg.MinClients > 1 {
		sess.MinClients, sess.StartWait = cfg.MinClients, cfg.ClientWait.Milliseconds()
	}
	s.mu.Unlock()
	// The manifest of a large image is large: a minute per 64 MiB of it
	// on top of the usual deadline is slower than any LAN.
	k.c.SetWriteDeadline(time.Now().Add(writeTimeout + time.Duration(len(s.raw)>>26)*time.Minute))
	return writeJSON(k.w, msgSession, sess) == nil && writeFrame(k.w, msgManifest, s.raw) == nil && k.w.Flush() == nil
}

// repairLimit is how many chunks a client may ask for by repair as a
// matter of course.
func (s *Server) repairLimit() int { return max(64, len(s.im.Manifest.Chunks)/10) }

// serve reads the client's frames until it leaves, is silent for the idle
// timeout, or breaks the protocol.
func (k *conn) serve(ctx context.Context) {
	s := k.s
	for {
		k.c.SetReadDeadline(time.Now().Add(s.idle))
		typ, n, err := readFrameHeader(k.r, k.frameLimit)
		if err != nil {
			var fr *frameRangeError
			switch {
			case errors.As(err, &fr):
				s.ctr.bad.Add(1)
			case errors.Is(err, os.ErrDeadlineExceeded):
				s.opts.Log("Client %s said nothing for %s: dropped", k.who, s.idle)
			case k.listening:
				s.opts.Log("Client %s disconnected before it was done", k.who)
			}
			return
		}
		switch typ {
		case msgStatus:
			b := make([]byte, n)
			if _, err := io.ReadFull(k.r, b); err != nil {
				return
			}
			var st status
			if json.Unmarshal(b, &st) != nil {
				s.ctr.bad.Add(1)
				return
			}
			k.status(st)
		case msgRepair:
			if n%4 != 0 {
				s.ctr.bad.Add(1)
				return
			}
			if err := k.repair(ctx, n/4); err != nil {
				if ctx.Err() == nil {
					s.opts.Log("Repair for %s: %v: dropped", k.who, err)
				}
				return
			}
		default:
			s.ctr.bad.Add(1)
			return
		}
	}
}

// frameLimit is the largest payload a client may send in a frame of type
// typ: a status is small; a repair request names each chunk at most once.
func (k *conn) frameLimit(typ byte) int {
	switch typ {
	case msgStatus:
		return maxStatusFrame
	case msgRepair:
		return 4 * len(k.s.im.Manifest.Chunks)
	}
	return 0
}

// join counts the client as listening from the moment it says it has
// joined the group: the stream starts then, not at its hello, so that a
// client still validating its target does not miss the start of the first
// pass.
func (k *conn) join() {
	if k.listening {
		return
	}
	k.listening = true
	s := k.s
	s.mu.Lock()
	s.clients++
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

func (k *conn) leave() {
	if !k.listening {
		return
	}
	k.listening = false
	k.s.mu.Lock()
	k.s.clients--
	k.s.mu.Unlock()
}

// status handles a status report.
func (k *conn) status(st status) {
	s := k.s
	st.Message = clip(st.Message, maxMessageLen)
	pct := min(max(st.Percent, 0), 100)
	if st.Counters != nil {
		k.reported = s.addReported(k.reported, *st.Counters)
	}
	switch st.Event {
	case "alive":
		s.update(k.id, func(*ClientStatus) {})
	case "joined":
		k.join()
		s.update(k.id, func(c *ClientStatus) { c.State, c.Joined = StateJoined, time.Now() })
		s.noteClient(EventJoined, k.id, "Client %s joined%s", k.who, disk(k.disk))
	case "progress":
		var was int
		s.update(k.id, func(c *ClientStatus) {
			was = c.Percent
			switch {
			case st.Message == "verifying":
				c.State = StateVerifying
			case pct > 0 || c.State != StateJoined:
				// A heartbeat at 0% leaves a joined client shown as
				// waiting for data.
				c.State = StateRestoring
			}
			c.Percent = pct
		})
		// The log gets a line per 10%; the table shows every move.
		if pct/10 > was/10 {
			s.noteClient(EventProgress, k.id, "Client %s: %d%%", k.who, pct)
		}
	case "done", "failed":
		k.leave()
		k.final = true
		s.update(k.id, func(c *ClientStatus) {
			if st.Event == "done" {
				c.Percent = 100
			} else if pct > 0 {
				c.Percent = pct
			}
		})
		s.end(k.id, st.Event, st.Message)
		s.noteClient(st.Event, k.id, "Client %s %s%s", k.who, st.Event, suffix(safetext.Line(st.Message)))
	default:
		s.update(k.id, func(*ClientStatus) {})
		s.opts.Log("Client %s %s%s", k.who, safetext.Short(st.Event, 32), suffix(safetext.Line(st.Message)))
	}
}

// repair answers a request for n chunks, read one index at a time from the
// frame. Each chunk is read into one of the server's few repair buffers
// (the bound on repair bytes in flight, whatever the number of clients)
// and written under a deadline, so a client that does not read is dropped
// rather than held. A client gets at most its repair limit plus one copy
// of every stored chunk: enough to fall back to fetching the whole image
// when its stream is unusable.
func (k *conn) repair(ctx context.Context, n int) error {
	s := k.s
	m := s.im.Manifest
	var idx [4]byte
	for range n {
		// Writing the answers takes time: the rest of the frame gets the
		// idle timeout anew for each index, not what was left of it.
		k.c.SetReadDeadline(time.Now().Add(s.idle))
		if _, err := io.ReadFull(k.r, idx[:]); err != nil {
			return err
		}
		i := int(binary.LittleEndian.Uint32(idx[:]))
		if i >= len(m.Chunks) || !m.Chunks[i].Codec.Stored() || k.repaired >= s.repairLimit()+s.stored {
			continue
		}
		var buf []byte
		select {
		case buf = <-s.repairBufs:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(writeTimeout):
			return errors.New("no repair buffer free")
		}
		stored, err := s.im.ReadStored(i, buf)
		if err == nil {
			k.c.SetWriteDeadline(time.Now().Add(writeTimeout))
			err = writeChunk(k.w, uint32(i), stored)
		}
		s.repairBufs <- stored[:0]
		if err != nil {
			return err
		}
		k.repaired++
		s.ctr.repairChunks.Add(1)
		s.ctr.repairBytes.Add(int64(len(stored)))
	}
	k.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := writeFrame(k.w, msgRepaired, nil); err != nil {
		return err
	}
	return k.w.Flush()
}

func disk(d string) string {
	if d == "" {
		return ""
	}
	return ", restoring " + d
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}
