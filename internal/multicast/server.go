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
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/asrlinux/asr/internal/config"
	"github.com/asrlinux/asr/internal/image"
)

// ServerOptions configure a server.
type ServerOptions struct {
	Image     string // prepared image path
	Config    *config.Server
	Interface string // network interface for the stream; "" lets routing choose
	Parity    int    // percent; 0 means DefaultParity, -1 none
	// Log receives one line per event.
	Log func(format string, a ...any)
	// Ready, if set, is called once the control port listens.
	Ready func(addr net.Addr)
}

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

	mu      sync.Mutex
	clients int           // connected clients that still want the stream
	wake    chan struct{} // closed and replaced when a client arrives
	pass    uint32
	table   map[int]*ClientStatus
	nextID  int
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
		rate: opts.Config.StreamRate(), wake: make(chan struct{}), table: map[int]*ClientStatus{}}
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
			return fmt.Errorf("--interface %s: %w", s.opts.Interface, err)
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
		return nil, fmt.Errorf("sending to %s: %w (is there a route for multicast? give --interface)", group, err)
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
	out := ipv4.NewPacketConn(conn)
	msgs := make([]ipv4.Message, 8)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{nil}
	}
	for {
		// The stream starts when the first client asks, and pauses after
		// Loop Suspend passes that nobody listened to.
		s.mu.Lock()
		n, wake := s.clients, s.wake
		s.mu.Unlock()
		if n == 0 && (s.pass == 0 || (s.opts.Config.LoopSuspend > 0 && idle >= s.opts.Config.LoopSuspend)) {
			if s.pass > 0 {
				s.opts.Log("Stream suspended: no clients for %d passes", idle)
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return ctx.Err()
			}
			idle = 0
			p.reset()
		}
		s.pass++
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
			// A few packets per system call (sendmmsg): the clock still
			// runs per batch, a burst of well under a millisecond.
			for off := 0; off < len(pkts) && sendErr == nil; {
				n := 0
				for ; n < len(msgs) && off < len(pkts); n, off = n+1, off+packetSize {
					msgs[n].Buffers[0] = pkts[off : off+packetSize]
				}
				if sendErr = p.wait(ctx, n*packetSize); sendErr != nil {
					break
				}
				sent += int64(n * packetSize)
				if _, err := out.WriteBatch(msgs[:n], 0); err != nil && ctx.Err() != nil {
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
		secs := time.Since(passStart).Seconds()
		s.opts.Log("Pass %d done: %d bytes in %.2f s, %.0f bytes/s", s.pass, sent, secs, float64(sent)/secs)
		if heard {
			idle = 0
		} else {
			idle++
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
		wg.Go(func() {
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			s.client(c)
		})
	}
}

// client serves one control connection.
func (s *Server) client(c net.Conn) {
	who := c.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(who); err == nil {
		who = h
	}
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	typ, b, err := readFrame(r, 64<<10)
	if err != nil || typ != msgHello {
		return
	}
	var h hello
	if err := json.Unmarshal(b, &h); err != nil {
		return
	}
	addr := who
	if h.Client != "" {
		who += " (" + h.Client + ")"
	}
	now := time.Now()
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.table[id] = &ClientStatus{ID: id, Name: h.Client, MAC: h.MAC, Addr: addr, Disk: h.Disk,
		State: StateConnected, Since: now, LastSeen: now}
	s.mu.Unlock()
	final := false
	defer func() {
		if !final {
			s.update(id, func(c *ClientStatus) { c.State, c.Ended = StateLost, time.Now() })
		}
	}()
	if h.Version != WireVersion {
		writeFrame(w, msgError, []byte(fmt.Sprintf("this server speaks asr multicast version %d, the client %d: use the same asr version on both", WireVersion, h.Version)))
		w.Flush()
		s.opts.Log("Client %s refused: protocol version %d", who, h.Version)
		return
	}
	c.SetDeadline(time.Time{})
	m := s.im.Manifest
	limit := max(64, len(m.Chunks)/10)
	cfg := s.opts.Config
	sess := session{
		Version: WireVersion, Stream: hex.EncodeToString(s.stream[:]), Digest: s.im.Digest.String(),
		Name: m.Name, Group: cfg.Group.String(), Port: cfg.Port + 1, ShardSize: ShardSize,
		Parity: s.parity, Rate: s.rate, RepairLimit: limit, Signatures: s.trailer,
	}
	if writeJSON(w, msgSession, sess) != nil || writeFrame(w, msgManifest, s.raw) != nil || w.Flush() != nil {
		return
	}

	// A client counts as listening from the moment it says it has joined
	// the group: the stream starts then, not at its hello, so that a client
	// still validating its target does not miss the start of the first pass.
	listening := false
	join := func() {
		if !listening {
			listening = true
			s.mu.Lock()
			s.clients++
			close(s.wake)
			s.wake = make(chan struct{})
			s.mu.Unlock()
		}
	}
	leave := func() {
		if listening {
			listening = false
			s.mu.Lock()
			s.clients--
			s.mu.Unlock()
		}
	}
	defer leave()

	repaired := 0
	var stored []byte
	for {
		typ, b, err := readFrame(r, 4<<20)
		if err != nil {
			if listening {
				s.opts.Log("Client %s disconnected before it was done", who)
			}
			return
		}
		switch typ {
		case msgStatus:
			var st status
			if json.Unmarshal(b, &st) != nil {
				return
			}
			pct := min(max(st.Percent, 0), 100)
			switch st.Event {
			case "joined":
				join()
				s.update(id, func(c *ClientStatus) { c.State, c.Joined = StateJoined, time.Now() })
				s.opts.Log("Client %s joined%s", who, disk(h.Disk))
			case "progress":
				var was int
				s.update(id, func(c *ClientStatus) {
					was = c.Percent
					switch {
					case st.Message == "verifying":
						c.State = StateVerifying
					case pct > 0 || c.State != StateJoined:
						// A heartbeat at 0% leaves a joined client
						// shown as waiting for data.
						c.State = StateRestoring
					}
					c.Percent = pct
				})
				// The log gets a line per 10%; the table shows every move.
				if pct/10 > was/10 {
					s.opts.Log("Client %s: %d%%", who, pct)
				}
			case "done", "failed":
				leave()
				final = true
				s.update(id, func(c *ClientStatus) {
					c.State, c.Message, c.Ended = st.Event, st.Message, time.Now()
					if st.Event == "done" {
						c.Percent = 100
					} else if pct > 0 {
						c.Percent = pct
					}
				})
				s.opts.Log("Client %s %s%s", who, st.Event, suffix(st.Message))
			default:
				s.update(id, func(*ClientStatus) {})
				s.opts.Log("Client %s %s%s", who, st.Event, suffix(st.Message))
			}
		case msgRepair:
			for off := 0; off+4 <= len(b); off += 4 {
				i := int(binary.LittleEndian.Uint32(b[off:]))
				if i >= len(m.Chunks) || !m.Chunks[i].Codec.Stored() || repaired >= limit {
					continue
				}
				if stored, err = s.im.ReadStored(i, stored); err != nil {
					s.opts.Log("Repair for %s: %v", who, err)
					return
				}
				msg := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(stored)), uint32(i))
				if writeFrame(w, msgChunk, append(msg, stored...)) != nil {
					return
				}
				repaired++
			}
			if writeFrame(w, msgRepaired, nil) != nil || w.Flush() != nil {
				return
			}
		default:
			return
		}
	}
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
