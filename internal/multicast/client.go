package multicast

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/source"
)

// DefaultPort is the control port when an asr:// URL names none.
const DefaultPort = 7800

// ClientOptions configure a client.
type ClientOptions struct {
	// Timeout: give up after this long without data (and as the connect
	// timeout). Zero means 60 s.
	Timeout   time.Duration
	Interface string // where to join the group; "" lets the system choose
	Name      string // how the server's log names this client; "" means the host name
	MAC       string // for the server's table: the client's network card
	Disk      string // for the server's table: the target being restored
	Log       func(format string, a ...any)
	// Heartbeat is how often a client busy restoring tells the server it
	// still is when its percentage has not moved; zero means 5 s.
	Heartbeat time.Duration
}

// Client is an asr:// source: the control connection and, once Run starts,
// membership of the stream's multicast group.
type Client struct {
	opts   ClientOptions
	host   string
	conn   net.Conn
	r      *bufio.Reader
	wmu    sync.Mutex
	w      *bufio.Writer
	sess   session
	stream StreamID
	info   source.Info
	dec    *image.Decoder

	final   atomic.Bool  // done or failed has been said
	ran     atomic.Bool  // Run delivered every chunk
	percent atomic.Int64 // last percentage reported

	// counters, for the closing note and the tests
	packets, foreign, bogus, forged, rebuilt, repairedN atomic.Int64
	requested                                           atomic.Int64 // chunks asked for by repair
}

// Open connects to the server named by rawurl (asr://host[:port]), checks the
// protocol version, and reads the manifest and the stream's parameters.
func Open(ctx context.Context, rawurl string, opts ClientOptions) (*Client, error) {
	u, err := url.Parse(rawurl)
	if err != nil || u.Scheme != "asr" || u.Hostname() == "" {
		return nil, fmt.Errorf("source %q is not an asr://host[:port] URL", rawurl)
	}
	port := DefaultPort
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("source %s: bad port %q", rawurl, p)
		}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	if opts.Name == "" {
		opts.Name, _ = os.Hostname()
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 5 * time.Second
	}
	host := net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
	d := net.Dialer{Timeout: opts.Timeout}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("source %s: cannot reach the asr server: %w", rawurl, unwrapOp(err))
	}
	if opts.MAC == "" {
		opts.MAC = macOf(conn.LocalAddr())
	}
	c := &Client{opts: opts, host: host, conn: conn, r: bufio.NewReaderSize(conn, 1<<20), w: bufio.NewWriter(conn)}
	if err := c.handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("source %s: %w", rawurl, err)
	}
	return c, nil
}

// macOf finds the hardware address of the interface holding addr: the
// card this client reaches the server through.
func macOf(addr net.Addr) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return ""
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil || len(ifi.HardwareAddr) == 0 {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ta.IP) {
				return ifi.HardwareAddr.String()
			}
		}
	}
	return ""
}

func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}

func (c *Client) handshake() error {
	c.conn.SetDeadline(time.Now().Add(c.opts.Timeout))
	defer c.conn.SetDeadline(time.Time{})
	if err := c.send(msgHello, hello{Version: WireVersion, Client: c.opts.Name, MAC: c.opts.MAC, Disk: c.opts.Disk}); err != nil {
		return err
	}
	// The session: a few hundred bytes, plus the signature trailer
	// (43.7 KiB base64 at most) and a name of up to 4096 bytes that JSON may
	// escape sixfold.
	typ, b, err := readFrame(c.r, maxSessionFrame)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if typ == msgError {
		return fmt.Errorf("the server refused: %s", b)
	}
	if typ != msgSession || json.Unmarshal(b, &c.sess) != nil {
		return errors.New("handshake: the server did not describe its stream (not an asr server?)")
	}
	if c.sess.ShardSize != ShardSize {
		return fmt.Errorf("the server uses %d-byte shards, this client %d: use the same asr version on both", c.sess.ShardSize, ShardSize)
	}
	sid, err := hex.DecodeString(c.sess.Stream)
	if err != nil || len(sid) != len(c.stream) {
		return errors.New("handshake: bad stream identity")
	}
	copy(c.stream[:], sid)
	typ, b, err = readFrame(c.r, maxFrame)
	if err != nil || typ != msgManifest {
		return fmt.Errorf("handshake: no manifest: %v", err)
	}
	m, dg, hdr, err := image.ReadHeaderManifest(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if dg.String() != c.sess.Digest || !bytes.Equal(c.stream[:8], dg[:8]) {
		return errors.New("handshake: the manifest does not match the stream's digest")
	}
	if c.dec, err = image.NewDecoder(); err != nil {
		return err
	}
	c.info = source.Info{
		Kind: "multicast stream from " + c.host, Size: m.LogicalSize, ChunkSize: int(m.ChunkSize),
		Manifest: m, Digest: dg, Header: hdr,
	}
	c.info.Signatures, c.info.SignaturesErr = sessionSignatures(c.sess.Signatures)
	return nil
}

// sessionSignatures decodes the signature trailer a session carries; the
// caller checks them (before erasing anything) when it requires a signature.
func sessionSignatures(b64 string) ([][]byte, error) {
	if b64 == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("the server sent signatures that are not base64: %w", err)
	}
	sigs, err := image.ParseTrailer(b)
	if err != nil {
		return nil, fmt.Errorf("the server sent: %w", err)
	}
	return sigs, nil
}

func (c *Client) send(typ byte, v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := writeJSON(c.w, typ, v); err != nil {
		return err
	}
	return c.w.Flush()
}

func (c *Client) report(event string, pct int, msg string) {
	c.percent.Store(int64(pct))
	_ = c.send(msgStatus, status{Event: event, Percent: pct, Message: msg})
}

// Finished tells the server how the restore ended: done, or failed and
// why. The restore engine calls it once it has verified the target, or as
// soon as it fails, even before the stream began (a target too small);
// only the first call counts.
func (c *Client) Finished(err error) {
	if !c.final.CompareAndSwap(false, true) {
		return
	}
	if err != nil {
		c.report("failed", int(c.percent.Load()), err.Error())
	} else {
		c.report("done", 100, "")
	}
}

// Info describes the image being streamed.
func (c *Client) Info() source.Info { return c.info }

// Close leaves the server. A client closed after its stream completed and
// that nobody called Finished for says it is done.
func (c *Client) Close() error {
	if c.ran.Load() {
		c.Finished(nil)
	}
	c.dec.Close()
	return c.conn.Close()
}

// Note sums up what the stream delivered.
func (c *Client) Note() string {
	return fmt.Sprintf("%d packets received; %d chunks rebuilt from parity, %d fetched by repair; ignored %d packets of another stream, %d malformed, %d chunks that failed their check",
		c.packets.Load(), c.rebuilt.Load(), c.repairedN.Load(), c.foreign.Load(), c.bogus.Load(), c.forged.Load())
}

// Stats are the client's counters.
type Stats struct{ Packets, Foreign, Bogus, Forged, Rebuilt, Repaired int64 }

// Stats returns the counters so far.
func (c *Client) Stats() Stats {
	return Stats{c.packets.Load(), c.foreign.Load(), c.bogus.Load(), c.forged.Load(), c.rebuilt.Load(), c.repairedN.Load()}
}

// job is a chunk ready to decode: its groups' shards from the stream, or
// stored bytes from repair.
type job struct {
	i      int
	groups []groupShards
	stored []byte
}

// groupShards are the shards of one FEC group as they came: K+M entries,
// nil where lost.
type groupShards struct {
	group
	shards [][]byte
	got    int
}

// chunk states
const (
	missing  = 0
	decoding = 1
	done     = 2
)

// Run joins the stream and delivers every chunk: zero chunks at once, then
// stored chunks as they arrive, in any order.
func (c *Client) Run(ctx context.Context, workers int, fn func(source.Chunk) error) (err error) {
	defer func() {
		if err != nil {
			c.Finished(err)
		} else {
			c.ran.Store(true)
			// Written, not yet verified: the engine's Finished says done.
			c.report("progress", 100, "verifying")
		}
	}()
	m := c.info.Manifest
	stored := 0
	for i, ch := range m.Chunks {
		if !ch.Codec.Stored() {
			if err := fn(source.NotStored(m, i)); err != nil {
				return err
			}
		} else {
			stored++
		}
	}
	if stored == 0 {
		c.report("joined", 0, "")
		return nil
	}
	pc, err := c.join()
	if err != nil {
		return err
	}
	defer pc.Close()
	c.report("joined", 0, "")

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	state := make([]atomic.Uint32, len(m.Chunks))
	var remaining atomic.Int64
	remaining.Store(int64(stored))
	var lastData atomic.Int64
	lastData.Store(time.Now().UnixNano())
	jobs := make(chan job, workers)
	var rs codecs

	// Decoders: rebuild, decompress, check, hand over.
	var wg sync.WaitGroup
	var progressMu sync.Mutex
	lastPct, lastSent := 0, time.Now()
	hbStop := make(chan struct{})
	defer close(hbStop)
	go func() {
		// The heartbeat: a client stuck waiting for the next pass still
		// shows as alive in the server's table.
		t := time.NewTicker(c.opts.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-hbStop:
				return
			case <-t.C:
				progressMu.Lock()
				if time.Since(lastSent) >= c.opts.Heartbeat {
					lastSent = time.Now()
					c.report("progress", int(100*(int64(stored)-remaining.Load())/int64(stored)), "")
				}
				progressMu.Unlock()
			}
		}
	}()
	for range workers {
		wg.Go(func() {
			var dst []byte
			for j := range jobs {
				data, err := c.decode(&rs, m, j, dst)
				if err != nil {
					c.forged.Add(1)
					c.opts.Log("chunk %d failed its check and was dropped: %v", j.i, err)
					state[j.i].Store(missing)
					continue
				}
				dst = data
				if err := fn(source.Chunk{Index: j.i, Data: data, Sum: m.Chunks[j.i].Sum}); err != nil {
					cancel(err)
					continue
				}
				state[j.i].Store(done)
				left := remaining.Add(-1)
				pct := int(100 * (int64(stored) - left) / int64(stored))
				progressMu.Lock()
				if pct > lastPct && pct < 100 && time.Since(lastSent) >= time.Second {
					lastPct, lastSent = pct, time.Now()
					c.report("progress", pct, "")
				}
				progressMu.Unlock()
				if left == 0 {
					cancel(nil)
				}
			}
		})
	}

	// Repair answers arrive on the control connection.
	repairIdle := make(chan struct{}, 1)
	repairIdle <- struct{}{}
	go func() {
		for {
			typ, b, err := readFrame(c.r, 32<<20)
			if err != nil {
				if ctx.Err() == nil {
					c.opts.Log("the control connection to %s closed: %v", c.host, err)
				}
				return
			}
			switch typ {
			case msgChunk:
				if len(b) < 4 {
					continue
				}
				i := int(binary.LittleEndian.Uint32(b))
				if i < len(state) && state[i].CompareAndSwap(missing, decoding) {
					lastData.Store(time.Now().UnixNano())
					c.repairedN.Add(1)
					select {
					case jobs <- job{i: i, stored: b[4:]}:
					case <-ctx.Done():
						return
					}
				}
			case msgRepaired:
				select {
				case repairIdle <- struct{}{}:
				default:
				}
			}
		}
	}()

	recvErr := c.receive(ctx, pc, m, state, jobs, &lastData, repairIdle)
	close(jobs)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if remaining.Load() == 0 {
		return nil
	}
	if recvErr != nil {
		return recvErr
	}
	return ctx.Err()
}

// join opens a socket in the stream's group with a large receive buffer.
func (c *Client) join() (*net.UDPConn, error) {
	var ifi *net.Interface
	if c.opts.Interface != "" {
		var err error
		if ifi, err = net.InterfaceByName(c.opts.Interface); err != nil {
			return nil, fmt.Errorf("--interface %s: %w", c.opts.Interface, err)
		}
	}
	group := &net.UDPAddr{IP: net.ParseIP(c.sess.Group), Port: c.sess.Port}
	pc, err := net.ListenMulticastUDP("udp4", ifi, group)
	if err != nil {
		return nil, fmt.Errorf("joining multicast group %s: %w", group, err)
	}
	// Bursts outrun a default-sized buffer while a disk write stalls the
	// decoders; as root the limit can be raised past rmem_max.
	if rc, err := pc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) != nil {
				_ = pc.SetReadBuffer(32 << 20)
			}
		})
	}
	return pc, nil
}

// assembly gathers one chunk's shards, group by group.
type assembly struct {
	i      int
	groups []groupShards
	short  int // groups that still lack shards
}

// receiver is the state of the receive loop.
type receiver struct {
	c          *Client
	m          *image.Manifest
	state      []atomic.Uint32
	jobs       chan<- job
	lastData   *atomic.Int64
	repairIdle chan struct{}
	// A handful of chunks assemble at once: the server sends a chunk's
	// packets together, so an older one that is still short will not
	// complete in this pass. Keeping few bounds memory whatever the image.
	open                  []*assembly
	lost                  []int // chunks the stream passed while missing
	started               bool
	firstPass, firstChunk uint32
	repairedPass          uint32
}

const assemblyWindow = 4

// receive reads packets, a batch per system call, until every chunk is in,
// the context ends, or no data came for the timeout.
func (c *Client) receive(ctx context.Context, pc *net.UDPConn, m *image.Manifest, state []atomic.Uint32,
	jobs chan<- job, lastData *atomic.Int64, repairIdle chan struct{}) error {
	r := &receiver{c: c, m: m, state: state, jobs: jobs, lastData: lastData, repairIdle: repairIdle}
	conn := ipv4.NewPacketConn(pc)
	msgs := make([]ipv4.Message, 32)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, packetSize+1)}
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := conn.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.EINTR) {
				if idle := time.Since(time.Unix(0, lastData.Load())); idle > c.opts.Timeout {
					return fmt.Errorf("no data from the asr server at %s for %s (--timeout): is it still streaming?", c.host, idle.Round(time.Second))
				}
				continue
			}
			return fmt.Errorf("receiving the stream: %w", err)
		}
		for i := range msgs[:n] {
			buf := msgs[i].Buffers[0]
			kept, err := r.packet(ctx, buf[:msgs[i].N])
			if err != nil {
				return nil // the context ended while handing over a chunk
			}
			if kept { // an assembly holds this buffer now
				msgs[i].Buffers[0] = make([]byte, packetSize+1)
			}
		}
	}
}

// packet handles one datagram; kept says an assembly holds on to b.
func (r *receiver) packet(ctx context.Context, b []byte) (kept bool, err error) {
	c, m := r.c, r.m
	h, err := parseHeader(b)
	if err != nil {
		c.bogus.Add(1)
		return false, nil
	}
	if h.Stream != c.stream {
		c.foreign.Add(1)
		return false, nil
	}
	i := int(h.Chunk)
	if i >= len(m.Chunks) || !m.Chunks[i].Codec.Stored() {
		c.bogus.Add(1)
		return false, nil
	}
	if r.state[i].Load() != missing {
		r.seen(h)
		return false, nil
	}
	var a *assembly
	for _, o := range r.open {
		if o.i == i {
			a = o
		}
	}
	if a == nil {
		a = &assembly{i: i}
		for _, g := range layout(int(m.Chunks[i].Length), c.sess.Parity) {
			a.groups = append(a.groups, groupShards{group: g, shards: make([][]byte, g.k+g.m)})
		}
		a.short = len(a.groups)
	}
	// The header must agree with the layout the manifest implies.
	if int(h.Group) >= len(a.groups) || int(h.K) != a.groups[h.Group].k || int(h.N) != a.groups[h.Group].k+a.groups[h.Group].m {
		c.bogus.Add(1)
		return false, nil
	}
	r.seen(h)
	if !slicesContains(r.open, a) {
		r.open = append(r.open, a)
		if len(r.open) > assemblyWindow {
			// The stream has moved on: what this chunk still lacks will not
			// come this pass. Ask for it by unicast rather than wait a loop.
			if old := r.open[0]; r.state[old.i].Load() == missing {
				r.lost = append(r.lost, old.i)
				r.askRepair()
			}
			r.open = r.open[1:]
		}
	}
	g := &a.groups[h.Group]
	if g.shards[h.Shard] == nil && g.got < g.k {
		g.shards[h.Shard] = b[headerLen:]
		g.got++
		kept = true
		if g.got == g.k {
			a.short--
		}
	}
	if a.short == 0 && r.state[i].CompareAndSwap(missing, decoding) {
		for x, o := range r.open {
			if o == a {
				r.open = append(r.open[:x], r.open[x+1:]...)
				break
			}
		}
		select {
		case r.jobs <- job{i: i, groups: a.groups}:
		case <-ctx.Done():
			return kept, ctx.Err()
		}
	}
	return kept, nil
}

// seen notes a valid packet of this stream: data is flowing, and a full
// loop since joining is the moment to ask for what is still missing by
// unicast rather than wait for another pass (once per pass).
func (r *receiver) seen(h header) {
	r.c.packets.Add(1)
	r.lastData.Store(time.Now().UnixNano())
	if !r.started {
		r.started, r.firstPass, r.firstChunk = true, h.Pass, h.Chunk
	}
	if h.Pass > r.firstPass && h.Chunk >= r.firstChunk && h.Pass != r.repairedPass {
		r.repairedPass = h.Pass
		r.lost = r.lost[:0]
		for i := range r.state {
			if r.m.Chunks[i].Codec.Stored() && r.state[i].Load() == missing {
				r.lost = append(r.lost, i)
			}
		}
	}
	r.askRepair()
}

// askRepair sends the chunks known lost to the server, if no repair is
// under way and the server's limit allows; otherwise they wait.
func (r *receiver) askRepair() {
	if len(r.lost) == 0 {
		return
	}
	select {
	case <-r.repairIdle:
	default:
		return
	}
	var want []int
	for _, i := range r.lost {
		if r.state[i].Load() == missing {
			want = append(want, i)
		}
	}
	r.lost = r.lost[:0]
	if len(want) == 0 || !r.c.requestRepair(want) {
		r.repairIdle <- struct{}{} // nothing sent: no answer will come
	}
}

func slicesContains(s []*assembly, a *assembly) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}

// requestRepair asks the server for chunks by unicast, if that stays
// within what the server said it would send; it reports whether it asked.
func (c *Client) requestRepair(chunks []int) bool {
	if int64(len(chunks))+c.requested.Load() > int64(c.sess.RepairLimit) {
		return false // more than repair may carry: the next pass will
	}
	c.requested.Add(int64(len(chunks)))
	want := make([]byte, 0, 4*len(chunks))
	for _, i := range chunks {
		want = binary.LittleEndian.AppendUint32(want, uint32(i))
	}
	c.opts.Log("asking %s for %d missing chunks by unicast", c.host, len(chunks))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if writeFrame(c.w, msgRepair, want) != nil || c.w.Flush() != nil {
		return false
	}
	return true
}

// decode turns a job into the chunk's checked bytes.
func (c *Client) decode(rs *codecs, m *image.Manifest, j job, dst []byte) ([]byte, error) {
	storedBytes := j.stored
	if storedBytes == nil {
		storedBytes = make([]byte, 0, dataShards(int(m.Chunks[j.i].Length))*ShardSize)
		rebuilt := false
		for _, g := range j.groups {
			lost := false
			for x := range g.k {
				lost = lost || g.shards[x] == nil
			}
			if lost {
				enc, err := rs.get(g.k, g.m)
				if err != nil {
					return nil, err
				}
				if err := enc.ReconstructData(g.shards); err != nil {
					return nil, fmt.Errorf("rebuilding from parity: %w", err)
				}
				rebuilt = true
			}
			for x := range g.k {
				storedBytes = append(storedBytes, g.shards[x]...)
			}
		}
		if rebuilt {
			c.rebuilt.Add(1)
		}
		storedBytes = storedBytes[:m.Chunks[j.i].Length]
	}
	return c.dec.DecodeChunk(m, j.i, storedBytes, dst)
}
