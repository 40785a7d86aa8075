package multicast

import (
	"bufio"
	"bytes"
	"container/list"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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
	// Timeout: give up (a StallError) after this long without a chunk
	// that passed its check, and as the connect timeout. Zero means 60 s.
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
	have   func(int) bool // chunks the target holds already (delta): done from the start

	lastSend  atomic.Int64  // when a frame was last sent, in Unix ns
	stopAlive chan struct{} // closed by Close
	closeOnce sync.Once

	final   atomic.Bool  // done or failed has been said
	ran     atomic.Bool  // Run delivered every chunk
	percent atomic.Int64 // last percentage reported

	// counters, for the closing note and the tests
	packets, foreign, bogus, forged, rebuilt, repairedN, reused atomic.Int64
	requested                                                   atomic.Int64 // chunks asked for by repair
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
	c := &Client{opts: opts, host: host, conn: conn, r: bufio.NewReaderSize(conn, 1<<20), w: bufio.NewWriter(conn),
		stopAlive: make(chan struct{})}
	if err := c.handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("source %s: %w", rawurl, err)
	}
	go c.keepalive()
	return c, nil
}

// keepalive says "alive" to the server whenever the client has said
// nothing for a heartbeat, as while it validates or erases its target
// before the stream: the server drops clients that stay silent.
func (c *Client) keepalive() {
	t := time.NewTicker(c.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.stopAlive:
			return
		case <-t.C:
			if time.Since(time.Unix(0, c.lastSend.Load())) >= c.opts.Heartbeat && !c.final.Load() {
				_ = c.send(msgStatus, status{Event: "alive"})
			}
		}
	}
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
	if err := c.send(msgHello, hello{Version: WireVersion, Client: clip(c.opts.Name, maxNameLen), MAC: clip(c.opts.MAC, maxMACLen), Disk: clip(c.opts.Disk, maxNameLen)}); err != nil {
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
	c.lastSend.Store(time.Now().UnixNano())
	if err := writeJSON(c.w, typ, v); err != nil {
		return err
	}
	return c.w.Flush()
}

func (c *Client) report(event string, pct int, msg string) {
	c.percent.Store(int64(pct))
	st := status{Event: event, Percent: pct, Message: clip(msg, maxMessageLen)}
	if event != "joined" {
		st.Counters = c.counters()
	}
	_ = c.send(msgStatus, st)
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
	c.closeOnce.Do(func() { close(c.stopAlive) })
	c.dec.Close()
	return c.conn.Close()
}

// Note sums up what the stream delivered.
func (c *Client) Note() string {
	reused := ""
	if n := c.reused.Load(); n > 0 {
		reused = fmt.Sprintf("; %d chunks the target held already were not waited for", n)
	}
	return fmt.Sprintf("%d packets received; %d chunks rebuilt from parity, %d fetched by repair; ignored %d packets of another stream, %d malformed, %d chunks that failed their check",
		c.packets.Load(), c.rebuilt.Load(), c.repairedN.Load(), c.foreign.Load(), c.bogus.Load(), c.forged.Load()) + reused
}

// Stats are the client's counters. Reused counts the stored chunks the
// target held already (a delta restore), which the client did not wait for.
type Stats struct{ Packets, Foreign, Bogus, Forged, Rebuilt, Repaired, Reused int64 }

// Stats returns the counters so far.
func (c *Client) Stats() Stats {
	return Stats{c.packets.Load(), c.foreign.Load(), c.bogus.Load(), c.forged.Load(), c.rebuilt.Load(), c.repairedN.Load(), c.reused.Load()}
}

// Skip marks the stored chunks the target holds already (a delta restore):
// Run counts them as done from the start, neither waits for them in the
// stream nor asks for them by repair, and ends as soon as it holds the rest.
func (c *Client) Skip(have func(int) bool) { c.have = have }

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
	// Per chunk: missing, decoding, done. The chunks the target holds
	// already are done before the first packet.
	state := make([]atomic.Uint32, len(m.Chunks))
	for i, ch := range m.Chunks {
		switch {
		case !ch.Codec.Stored():
			if err := fn(source.NotStored(m, i)); err != nil {
				return err
			}
		case c.have != nil && c.have(i):
			state[i].Store(done)
			c.reused.Add(1)
		default:
			stored++
		}
	}
	if stored == 0 {
		c.report("joined", 0, "")
		return nil
	}
	pc, gro, err := c.join()
	if err != nil {
		return err
	}
	defer pc.Close()
	c.report("joined", 0, "")

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &run{c: c, m: m, fn: fn, cancel: cancel, stored: stored,
		state: state, jobs: make(chan job, workers),
		retry: make(chan int, 256), repairIdle: make(chan struct{}, 1)}
	r.remaining.Store(int64(stored))
	now := time.Now()
	if w := c.startWait(); w > 0 {
		// The server waits for more clients before it starts: neither a
		// stall nor a stream that does not reach this client until then.
		c.opts.Log("the server starts its stream when %d clients have joined, or within %s", c.sess.MinClients, w)
		now = now.Add(w)
	}
	r.lastProgress.Store(now.UnixNano())
	r.lastStream.Store(now.UnixNano())
	r.repairIdle <- struct{}{}

	hbStop := make(chan struct{})
	defer close(hbStop)
	go r.heartbeat(hbStop)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(r.decoder)
	}
	go r.repairAnswers(ctx)

	recvErr := c.receive(ctx, pc, gro, r)
	close(r.jobs)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if r.remaining.Load() == 0 {
		return nil
	}
	if recvErr != nil {
		return recvErr
	}
	return ctx.Err()
}

// startWait is how long the stream may wait for other clients after this
// one joins, as the server said, within maxStartWait.
func (c *Client) startWait() time.Duration {
	return time.Duration(min(max(c.sess.StartWait, 0), maxStartWait.Milliseconds())) * time.Millisecond
}

// run is the state of one Run, shared by the receive loop, the decoders,
// the repair reader and the heartbeat.
type run struct {
	c      *Client
	m      *image.Manifest
	fn     func(source.Chunk) error
	cancel context.CancelCauseFunc
	stored int
	state  []atomic.Uint32 // per chunk: missing, decoding, done
	jobs   chan job
	rs     codecs
	// shards holds free shard buffers: the receive loop copies each shard
	// it keeps into one, the decoders give them back once a chunk is
	// decoded, so that the stream costs no allocation per packet. They
	// are at most what the assembly budget and the chunks being decoded
	// hold.
	shards shardPool
	// retry carries chunks that failed their check from the decoders to
	// the receive loop, which asks for them by repair.
	retry      chan int
	repairIdle chan struct{} // holds a token while no repair is under way
	remaining  atomic.Int64
	// lastProgress is when a chunk last passed its check, from the stream
	// or repair: the timeout counts progress, not packets, which anyone
	// on the LAN can send. lastStream is the same for chunks of the
	// stream only: when it is old, the stream is unusable and the client
	// fetches over its control connection.
	lastProgress, lastStream atomic.Int64

	progressMu     sync.Mutex
	lastPct        int
	lastSent       time.Time
	fallbackLogged atomic.Bool
	forgeryLogged  atomic.Bool
	underAttack    atomic.Bool // forged packets seen: repair may exceed its usual limit
}

// heartbeat tells the server the client is alive and how far it is, when
// nothing else did for a while: a client stuck waiting for the next pass
// still shows as alive in the server's table.
func (r *run) heartbeat(stop chan struct{}) {
	t := time.NewTicker(r.c.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.progressMu.Lock()
			if time.Since(r.lastSent) >= r.c.opts.Heartbeat {
				r.lastSent = time.Now()
				r.c.report("progress", r.percent(), "")
			}
			r.progressMu.Unlock()
		}
	}
}

// freeShards gives the shard buffers of groups back, once nothing reads
// them.
func (r *run) freeShards(groups []groupShards) { r.shards.put(groups) }

// shardPool is a free list of shard buffers, taken and given back many at
// a time: one lock per chunk or per 256 shards, not per packet.
type shardPool struct {
	mu   sync.Mutex
	free [][]byte
}

// put takes the shard buffers of groups, and clears their places.
func (p *shardPool) put(groups []groupShards) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range groups {
		for x, b := range g.shards {
			if len(b) == ShardSize {
				p.free = append(p.free, b)
			}
			g.shards[x] = nil
		}
	}
}

// take moves up to n free buffers to dst.
func (p *shardPool) take(dst [][]byte, n int) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := max(0, len(p.free)-n)
	dst = append(dst, p.free[k:]...)
	clear(p.free[k:])
	p.free = p.free[:k]
	return dst
}

func (r *run) percent() int {
	return int(100 * (int64(r.stored) - r.remaining.Load()) / int64(r.stored))
}

// decoder rebuilds, decompresses, checks and hands over chunks.
func (r *run) decoder() {
	c, m := r.c, r.m
	var dst, scratch []byte
	for j := range r.jobs {
		data, err := c.decode(&r.rs, m, j, dst, &scratch)
		r.freeShards(j.groups)
		if err != nil {
			c.forged.Add(1)
			c.opts.Log("chunk %d failed its check and was dropped: %v", j.i, err)
			r.state[j.i].Store(missing)
			select {
			case r.retry <- j.i:
			default: // the next pass or the fallback will ask for it
			}
			continue
		}
		dst = data
		if err := r.fn(source.Chunk{Index: j.i, Data: data, Sum: m.Chunks[j.i].Sum}); err != nil {
			r.cancel(err)
			continue
		}
		r.state[j.i].Store(done)
		now := time.Now().UnixNano()
		r.lastProgress.Store(now)
		if j.stored == nil {
			r.lastStream.Store(now)
		}
		left := r.remaining.Add(-1)
		pct := r.percent()
		r.progressMu.Lock()
		if pct > r.lastPct && pct < 100 && time.Since(r.lastSent) >= time.Second {
			r.lastPct, r.lastSent = pct, time.Now()
			c.report("progress", pct, "")
		}
		r.progressMu.Unlock()
		if left == 0 {
			r.cancel(nil)
		}
	}
}

// repairAnswers reads repair answers from the control connection.
func (r *run) repairAnswers(ctx context.Context) {
	c := r.c
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
			if i < len(r.state) && r.state[i].CompareAndSwap(missing, decoding) {
				c.repairedN.Add(1)
				select {
				case r.jobs <- job{i: i, stored: b[4:]}:
				case <-ctx.Done():
					return
				}
			}
		case msgRepaired:
			select {
			case r.repairIdle <- struct{}{}:
			default:
			}
		}
	}
}

// join opens a socket in the stream's group with a large receive buffer.
func (c *Client) join() (pc *net.UDPConn, gro bool, err error) {
	var ifi *net.Interface
	if c.opts.Interface != "" {
		if ifi, err = net.InterfaceByName(c.opts.Interface); err != nil {
			return nil, false, &InterfaceError{Name: c.opts.Interface, Err: err}
		}
	}
	group := &net.UDPAddr{IP: net.ParseIP(c.sess.Group), Port: c.sess.Port}
	pc, err = net.ListenMulticastUDP("udp4", ifi, group)
	if err != nil {
		return nil, false, fmt.Errorf("joining multicast group %s: %w", group, err)
	}
	// Bursts outrun a default-sized buffer while a disk write stalls the
	// decoders; as root the limit can be raised past rmem_max. With UDP
	// receive offload (GRO), the kernel may hand over a run of the
	// server's packets as one buffer, cut at the size a control message
	// gives: one pass through the stack and one copy out for many packets.
	gro = false
	if rc, err := pc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) != nil {
				_ = pc.SetReadBuffer(32 << 20)
			}
			gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		})
	}
	return pc, gro, nil
}

// assembly gathers one chunk's shards, group by group.
type assembly struct {
	i      int
	groups []groupShards
	short  int           // groups that still lack shards
	cost   int           // bytes it holds, for the budget
	used   time.Time     // when a packet last added a shard
	elem   *list.Element // in the receiver's recency list
}

// receiver is the state of the receive loop.
type receiver struct {
	*run
	// Chunks being assembled, by index, and from the most to the least
	// recently given a shard. Their memory is bounded by a byte budget,
	// not a count: a forger who sends one shard each for many chunks
	// costs little per chunk, and to push out a chunk that the real stream
	// is completing (the most recently used) would have to send the whole
	// budget between two of its packets. A chunk that got no shard for a
	// while is one the stream has passed: it goes to repair.
	open                  map[int]*assembly
	recent                *list.List
	held                  int // bytes in open
	lastSweep             time.Time
	lost                  []int // chunks to ask for by repair
	streamAt              int   // the chunk of the last packet of the stream
	started               bool
	firstPass, firstChunk uint32
	repairedPass          uint32
	fallbackAfter         time.Duration // before the first packet of the stream
	fallbackSeen          time.Duration // after it
	staleAfter            time.Duration
	now                   time.Time // when the batch being handled came
	stash                 [][]byte  // shard buffers taken from the pool
}

// shard returns a free shard buffer.
func (r *receiver) shard() []byte {
	if len(r.stash) == 0 {
		r.stash = r.shards.take(r.stash, 256)
		if len(r.stash) == 0 {
			return make([]byte, ShardSize)
		}
	}
	b := r.stash[len(r.stash)-1]
	r.stash[len(r.stash)-1] = nil
	r.stash = r.stash[:len(r.stash)-1]
	return b
}

const (
	// assemblyBudget bounds the bytes of partial chunks a client holds.
	assemblyBudget = 32 << 20
	// fallbackBatch is the most chunks a client asks for at once when it
	// fetches over its control connection (a second of the stream's
	// bytes, when that is fewer).
	fallbackBatch = 64
	// minFallback is the least time without a chunk from the stream before
	// a client that never received a packet of it fetches over its control
	// connection: its network does not carry the stream.
	minFallback = 2 * time.Second
	// minFallbackSeen is the same once packets of the stream came: a
	// stream that went silent after it worked is most often a server held
	// up for a few seconds (a loaded machine), which every client sees at
	// once and which their fetches would hold up further.
	minFallbackSeen = 5 * time.Second
	// minStale is the least time without a new shard after which a partial
	// chunk is taken as passed by the stream.
	minStale = 200 * time.Millisecond
)

func newReceiver(run *run) *receiver {
	r := &receiver{run: run, open: map[int]*assembly{}, recent: list.New(),
		fallbackAfter: minFallback, fallbackSeen: minFallbackSeen, staleAfter: minStale, now: time.Now()}
	// A few chunk-times of the stream: a slow stream of large chunks takes
	// a while to deliver one.
	if rate := run.c.sess.Rate; rate > 0 {
		chunkTime := time.Duration(float64(run.m.ChunkSize) * 1.2 / float64(rate) * float64(time.Second))
		r.fallbackAfter = max(minFallback, 4*chunkTime)
		r.fallbackSeen = max(minFallbackSeen, 4*chunkTime)
		r.staleAfter = max(minStale, 2*chunkTime)
	}
	return r
}

// receive reads packets, a batch per system call, until every chunk is in,
// the context ends, or no chunk passed its check for the timeout. With gro,
// one message may hold a run of packets.
func (c *Client) receive(ctx context.Context, pc *net.UDPConn, gro bool, run *run) error {
	r := newReceiver(run)
	conn := ipv4.NewPacketConn(pc)
	// One more byte than a packet: a longer datagram is seen as one.
	n, size := 32, packetSize+1
	if gro {
		n, size = 16, 1<<16
	}
	msgs := make([]ipv4.Message, n)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, size)}
		if gro {
			msgs[i].OOB = make([]byte, unix.CmsgSpace(4))
		}
	}
	var deadline time.Time
	for {
		if ctx.Err() != nil {
			return nil
		}
		if err := r.check(); err != nil {
			return err
		}
		// The deadline bounds the wait for a packet, so that check runs
		// at least every 250 ms; moving it costs, so not every batch.
		if now := time.Now(); deadline.Sub(now) < 150*time.Millisecond {
			deadline = now.Add(250 * time.Millisecond)
			pc.SetReadDeadline(deadline)
		}
		n, err := conn.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.EINTR) {
				continue
			}
			return fmt.Errorf("receiving the stream: %w", err)
		}
		r.now = time.Now()
		for i := range msgs[:n] {
			b := msgs[i].Buffers[0][:msgs[i].N]
			seg := len(b)
			if gro {
				if s := groSegment(msgs[i].OOB[:msgs[i].NN]); s > 0 {
					seg = s
				}
			}
			for len(b) > 0 {
				k := min(seg, len(b))
				if r.packet(ctx, b[:k]) != nil {
					return nil // the context ended while handing over a chunk
				}
				b = b[k:]
			}
		}
	}
}

// groSegment is the segment size a UDP_GRO control message gives, or 0.
func groSegment(oob []byte) int {
	if len(oob) == 0 {
		return 0
	}
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, cm := range cms {
		if cm.Header.Level == unix.IPPROTO_UDP && cm.Header.Type == unix.UDP_GRO && len(cm.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(cm.Data))
		}
	}
	return 0
}

// InterfaceError is a network interface asr was told to use and cannot.
// Like StallError it names no setting: the CLI or the appliance adds its
// own (--interface, or a kernel parameter).
type InterfaceError struct {
	Name string
	Err  error
}

func (e *InterfaceError) Error() string {
	return fmt.Sprintf("network interface %s: %v", e.Name, e.Err)
}
func (e *InterfaceError) Unwrap() error { return e.Err }

// RouteError says the stream cannot be sent to its group: there is no
// route for multicast, and an interface must be chosen.
type RouteError struct {
	Group string
	Err   error
}

func (e *RouteError) Error() string {
	return fmt.Sprintf("sending to %s: %v (is there a route for multicast? choose the interface to send on)", e.Group, e.Err)
}
func (e *RouteError) Unwrap() error { return e.Err }

// StallError says no chunk passed its check for a while: the server is
// gone, or what reaches the client is not its stream.
type StallError struct {
	Server string
	For    time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("no data from the asr server at %s for %s: no chunk arrived intact (is it still streaming?)", e.Server, e.For.Round(time.Second))
}

// check runs between batches of packets: it gives up after the timeout
// without progress, asks for chunks that failed their check, and falls
// back to fetching over the control connection when the stream has
// yielded no valid chunk for a while.
func (r *receiver) check() error {
	c := r.c
	if idle := time.Since(time.Unix(0, r.lastProgress.Load())); idle > c.opts.Timeout {
		return &StallError{Server: c.host, For: idle}
	}
	for more := true; more; {
		select {
		case i := <-r.retry:
			r.suspectForgery()
			r.lost = append(r.lost, i)
		default:
			more = false
		}
	}
	if now := time.Now(); now.Sub(r.lastSweep) >= r.staleAfter/2 {
		r.lastSweep = now
		// Staleness is measured to the last packet that came, not to
		// now: while the server or this client is held up (a loaded
		// machine), the rest of a partial chunk is still on its way or
		// waiting in the socket, and dropping what it holds would cost
		// a repair.
		r.sweep(r.now)
	}
	wait := r.fallbackAfter
	if r.started {
		wait = r.fallbackSeen
	}
	if time.Since(time.Unix(0, r.lastStream.Load())) > wait && len(r.lost) == 0 && len(r.repairIdle) > 0 {
		if r.fallbackLogged.CompareAndSwap(false, true) {
			c.opts.Log("no chunk from the stream for %s: fetching missing chunks over the control connection", wait)
		}
		r.underAttack.Store(true)
		r.fallback()
	}
	r.askRepair()
	return nil
}

// fallback picks the next chunks to fetch over the control connection
// while the stream yields nothing: about a second of the stream's bytes,
// then, once they came, the next second's if the stream is still silent.
// A silent stream is as often a server held up for a few seconds (a
// loaded machine) as a dead one, and every client sees the same silence
// at once: fetching the whole image then made the server send it to each
// client by TCP, which held the stream up further (8 clients on a 2-core
// machine took twice as long as one). The chunks are taken from where
// the stream was last, backwards: those the stream would bring last.
func (r *receiver) fallback() {
	budget := r.c.sess.Rate // bytes: a second of the stream
	if budget <= 0 {
		budget = math.MaxInt64
	}
	n := len(r.state)
	for k := range n {
		i := ((r.streamAt-k)%n + n) % n
		if len(r.lost) == fallbackBatch || budget <= 0 {
			return
		}
		if ch := r.m.Chunks[i]; ch.Codec.Stored() && r.state[i].Load() == missing {
			r.lost = append(r.lost, i)
			budget -= int64(ch.Length)
		}
	}
}

// suspectForgery notes that packets with this stream's identity carried
// wrong data: from now on, damaged chunks are fetched by repair beyond the
// usual limit.
func (r *receiver) suspectForgery() {
	r.underAttack.Store(true)
	if r.forgeryLogged.CompareAndSwap(false, true) {
		r.c.opts.Log("packets with this stream's identity carry wrong data (forged, or a broken sender): fetching the chunks they spoil over the control connection")
	}
}

// packet handles one datagram; an assembly keeps a copy of its shard,
// never b. The error is the context's, if it ended while a complete chunk
// waited for a decoder.
func (r *receiver) packet(ctx context.Context, b []byte) error {
	c, m := r.c, r.m
	h, err := parseHeader(b)
	if err != nil {
		c.bogus.Add(1)
		return nil
	}
	if h.Stream != c.stream {
		c.foreign.Add(1)
		return nil
	}
	i := int(h.Chunk)
	if i >= len(m.Chunks) || !m.Chunks[i].Codec.Stored() {
		c.bogus.Add(1)
		return nil
	}
	if r.state[i].Load() != missing {
		r.seen(h)
		return nil
	}
	a := r.open[i]
	fresh := a == nil
	if fresh {
		a = &assembly{i: i}
		for _, g := range layout(int(m.Chunks[i].Length), c.sess.Parity) {
			a.groups = append(a.groups, groupShards{group: g, shards: make([][]byte, g.k+g.m)})
			a.cost += 64 + 24*(g.k+g.m)
		}
		a.short = len(a.groups)
	}
	// The header must agree with the layout the manifest implies.
	if int(h.Group) >= len(a.groups) || int(h.K) != a.groups[h.Group].k || int(h.N) != a.groups[h.Group].k+a.groups[h.Group].m {
		c.bogus.Add(1)
		return nil
	}
	r.seen(h)
	if fresh {
		a.elem = r.recent.PushFront(a)
		r.open[i] = a
		r.held += a.cost
	}
	g := &a.groups[h.Group]
	sh := b[headerLen:]
	switch {
	case g.shards[h.Shard] != nil:
		if !bytes.Equal(g.shards[h.Shard], sh) {
			// Two different shards for one place: one is forged. Which
			// cannot be told; the chunk comes by repair instead.
			r.suspectForgery()
			if r.drop(a) {
				r.freeShards(a.groups)
			}
			r.lost = append(r.lost, i)
			r.askRepair()
			return nil
		}
	case g.got < g.k:
		g.shards[h.Shard] = r.shard()
		copy(g.shards[h.Shard], sh)
		g.got++
		a.used = r.now
		a.cost += ShardSize
		r.held += ShardSize
		r.recent.MoveToFront(a.elem)
		if g.got == g.k {
			a.short--
		}
		for r.held > assemblyBudget && r.recent.Len() > 1 {
			r.evict(r.recent.Back().Value.(*assembly))
		}
	}
	if a.short == 0 && r.state[i].CompareAndSwap(missing, decoding) {
		r.drop(a)
		select {
		case r.jobs <- job{i: i, groups: a.groups}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// evict drops an assembly that the stream has passed: what it still lacks
// will not come this pass, and is asked for by unicast rather than waited
// for a loop.
func (r *receiver) evict(a *assembly) {
	if r.drop(a) {
		r.freeShards(a.groups)
	}
	if r.state[a.i].Load() == missing {
		r.lost = append(r.lost, a.i)
		r.askRepair()
	}
}

// sweep evicts the assemblies that got no shard for staleAfter before
// now: the time of the last batch of packets.
func (r *receiver) sweep(now time.Time) {
	for e := r.recent.Back(); e != nil; {
		a := e.Value.(*assembly)
		if now.Sub(a.used) < r.staleAfter {
			return
		}
		e = e.Prev()
		r.evict(a)
	}
}

// drop forgets an assembly being built; it reports whether it was (one
// handed to the decoders is not, and its shards are theirs).
func (r *receiver) drop(a *assembly) bool {
	if r.open[a.i] != a {
		return false
	}
	delete(r.open, a.i)
	r.recent.Remove(a.elem)
	r.held -= a.cost
	return true
}

// seen notes a packet of this stream: a full loop since joining is the
// moment to ask for what is still missing by unicast rather than wait for
// another pass (once per pass).
func (r *receiver) seen(h header) {
	r.c.packets.Add(1)
	r.streamAt = int(h.Chunk)
	if !r.started {
		r.started, r.firstPass, r.firstChunk = true, h.Pass, h.Chunk
		if r.c.have != nil {
			// A delta client lacks few chunks: those the stream passed
			// before it joined are asked for by repair now (if the
			// server's limit allows) rather than a pass later.
			for i := range min(int(h.Chunk), len(r.state)) {
				if r.m.Chunks[i].Codec.Stored() && r.state[i].Load() == missing {
					r.lost = append(r.lost, i)
				}
			}
		}
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
	seen := map[int]bool{}
	for _, i := range r.lost {
		if r.state[i].Load() == missing && !seen[i] {
			seen[i] = true
			want = append(want, i)
		}
	}
	r.lost = r.lost[:0]
	limit := int64(r.c.sess.RepairLimit)
	if r.underAttack.Load() {
		// What the server allows each client: its limit and a copy of
		// every stored chunk.
		limit += int64(r.stored)
	}
	if len(want) == 0 || !r.c.requestRepair(want, limit) {
		r.repairIdle <- struct{}{} // nothing sent: no answer will come
	}
}

// requestRepair asks the server for chunks by unicast, if that stays
// within limit chunks in all; it reports whether it asked.
func (c *Client) requestRepair(chunks []int, limit int64) bool {
	if int64(len(chunks))+c.requested.Load() > limit {
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
	c.lastSend.Store(time.Now().UnixNano())
	if writeFrame(c.w, msgRepair, want) != nil || c.w.Flush() != nil {
		return false
	}
	return true
}

// decode turns a job into the chunk's checked bytes.
// scratch is the caller's buffer for the stored bytes, kept between calls.
func (c *Client) decode(rs *codecs, m *image.Manifest, j job, dst []byte, scratch *[]byte) ([]byte, error) {
	storedBytes := j.stored
	if storedBytes == nil {
		storedBytes = (*scratch)[:0]
		if n := dataShards(int(m.Chunks[j.i].Length)) * ShardSize; cap(storedBytes) < n {
			storedBytes = make([]byte, 0, n)
		}
		*scratch = storedBytes
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
