package multicast

import (
	"bytes"
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/image"
)

// testManifest is an image of chunks stored chunks of the given stored
// lengths (zero: a zero chunk).
func testManifest(lengths ...int) *image.Manifest {
	m := &image.Manifest{ChunkSize: 1 << 20, LogicalSize: int64(len(lengths)) << 20}
	for i, n := range lengths {
		c := image.Chunk{Codec: image.CodecZero}
		if n > 0 {
			c = image.Chunk{Offset: int64(i) << 20, Length: uint32(n), Codec: image.CodecRaw}
		}
		m.Chunks = append(m.Chunks, c)
	}
	return m
}

// testReceiver is a receive loop's state for manifest m, without a
// network: packets go to its packet method, complete chunks to its jobs.
func testReceiver(m *image.Manifest, stream StreamID) *receiver {
	c := &Client{opts: ClientOptions{Log: func(string, ...any) {}, Timeout: time.Minute},
		sess: session{Parity: DefaultParity, RepairLimit: 64}, stream: stream,
		w: nil}
	stored := 0
	for _, ch := range m.Chunks {
		if ch.Codec.Stored() {
			stored++
		}
	}
	r := &run{c: c, m: m, stored: stored, state: make([]atomic.Uint32, len(m.Chunks)),
		jobs: make(chan job, 1024), retry: make(chan int, 16), repairIdle: make(chan struct{}, 1)}
	// No repair token: requests are noted in lost but not sent.
	return newReceiver(r)
}

// FuzzControlFrame reads what a client may send a server: a frame is
// either refused or within its type's limit, and reading never allocates
// more than that limit whatever the announced length.
func FuzzControlFrame(f *testing.F) {
	hi, _ := json.Marshal(hello{Version: WireVersion, Client: "pc-01", MAC: "52:54:00:00:00:01", Disk: "/dev/vda (64 MiB)"})
	st, _ := json.Marshal(status{Event: "failed", Percent: 50, Message: "disk gone\x1b[2J"})
	frame := func(typ byte, b []byte) []byte {
		var buf bytes.Buffer
		writeFrame(&buf, typ, b)
		return buf.Bytes()
	}
	f.Add(frame(msgHello, hi))
	f.Add(append(frame(msgStatus, st), frame(msgRepair, []byte{1, 0, 0, 0, 2, 0, 0, 0})...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, msgStatus})
	f.Add([]byte{0, 0, 0, 0, msgHello})
	limit := func(typ byte) int {
		switch typ {
		case msgHello:
			return maxHelloFrame
		case msgStatus:
			return maxStatusFrame
		case msgRepair:
			return 4 * 100
		}
		return 0
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for range 16 {
			typ, p, err := readFrameOf(r, limit)
			if err != nil {
				return
			}
			if len(p) > limit(typ) {
				t.Fatalf("frame of type %d: %d bytes, limit %d", typ, len(p), limit(typ))
			}
			switch typ {
			case msgHello:
				var h hello
				if json.Unmarshal(p, &h) == nil {
					if n := len(clip(h.Client, maxNameLen)); n > maxNameLen {
						t.Fatalf("clipped name of %d bytes", n)
					}
				}
			case msgStatus:
				var s status
				json.Unmarshal(p, &s)
			}
		}
	})
}

// FuzzPacketHeader feeds datagrams to a client's receive loop: a header
// that parses marshals back to the same bytes, and no datagram makes the
// loop panic, hold a chunk it does not lack, or keep more than its window
// of chunks.
func FuzzPacketHeader(f *testing.F) {
	var sid StreamID
	copy(sid[:], "0123456789abcdef")
	s := &Server{parity: DefaultParity, stream: sid}
	pkts, err := s.packets(1, bytes.Repeat([]byte("x"), 3000), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pkts[:packetSize])
	f.Add(pkts[packetSize : 2*packetSize])
	f.Add(make([]byte, packetSize))
	m := testManifest(0, 3000, 70000)
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseHeader(b); err == nil {
			out := make([]byte, packetSize)
			copy(out[headerLen:], b[headerLen:])
			h.marshal(out)
			// Bytes 6 and 7 are reserved: sent as zero, ignored.
			if !bytes.Equal(out[:6], b[:6]) || !bytes.Equal(out[8:headerLen], b[8:headerLen]) {
				t.Fatalf("header %+v marshals to %x, parsed from %x", h, out[:headerLen], b[:headerLen])
			}
		}
		r := testReceiver(m, sid)
		for range 3 {
			// Copies: an assembly keeps the buffer it was given.
			r.packet(context.Background(), append([]byte(nil), b...))
		}
		if r.held > assemblyBudget || len(r.open) != r.recent.Len() {
			t.Fatalf("%d bytes in %d chunks assembling (%d in the recency list), budget %d", r.held, len(r.open), r.recent.Len(), assemblyBudget)
		}
		for _, a := range r.open {
			if !m.Chunks[a.i].Codec.Stored() {
				t.Fatalf("assembling chunk %d, which is not stored", a.i)
			}
		}
	})
}

// A forged shard where the real stream also sent one is a conflict: the
// chunk goes to repair at once, and forgery is noted so that repair may go
// past its usual limit. Before, the first shard won and the chunk failed
// its check only once complete, to wait for the next pass.
func TestReceiverConflictGoesToRepair(t *testing.T) {
	var sid StreamID
	copy(sid[:], "0123456789abcdef")
	stored := bytes.Repeat([]byte("real data "), 700)
	m := testManifest(len(stored), len(stored))
	s := &Server{parity: DefaultParity, stream: sid}
	pkts, err := s.packets(0, stored, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := testReceiver(m, sid)
	forged := append([]byte(nil), pkts[:packetSize]...)
	forged[headerLen] ^= 0xff
	r.packet(context.Background(), forged)
	r.packet(context.Background(), append([]byte(nil), pkts[:packetSize]...))
	if !r.underAttack.Load() {
		t.Errorf("two different shards for one place did not raise the forgery flag")
	}
	if len(r.lost) != 1 || r.lost[0] != 0 {
		t.Errorf("chunks to repair = %v, want [0]", r.lost)
	}
	if len(r.open) != 0 {
		t.Errorf("the spoiled chunk is still assembling")
	}
}

// Forged packets for many other chunks do not push out the chunk that
// the real stream is completing; a partial chunk that gets no shard for a
// while goes to repair. Before, a window of 4 chunks was flushed by 4
// forged packets.
func TestReceiverKeepsChunkUnderForgery(t *testing.T) {
	var sid StreamID
	copy(sid[:], "0123456789abcdef")
	lengths := make([]int, 2000)
	for i := range lengths {
		lengths[i] = 5 * ShardSize
	}
	m := testManifest(lengths...)
	s := &Server{parity: DefaultParity, stream: sid}
	real, err := s.packets(0, bytes.Repeat([]byte{7}, 5*ShardSize), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := testReceiver(m, sid)
	feed := func(p []byte) { r.packet(context.Background(), append([]byte(nil), p...)) }
	for p := 0; p < 5; p++ {
		feed(real[p*packetSize : (p+1)*packetSize])
		// Between two real packets, a forged shard for each of 1999 other
		// chunks.
		if p < 4 {
			for i := 1; i < len(lengths); i++ {
				h := header{Stream: sid, Chunk: uint32(i), Group: 0, Shard: uint16(p), K: 5, N: 7}
				b := make([]byte, packetSize)
				h.marshal(b)
				feed(b)
			}
		}
	}
	select {
	case j := <-r.jobs:
		if j.i != 0 {
			t.Errorf("completed chunk %d, want 0", j.i)
		}
	default:
		t.Fatalf("chunk 0 did not complete: forged packets for other chunks pushed it out; lost %d chunks", len(r.lost))
	}
	if r.held > assemblyBudget {
		t.Errorf("partial chunks hold %d bytes, budget %d", r.held, assemblyBudget)
	}
	// The forged partial chunks are stale after staleAfter: they go to
	// repair (where the real ones will come from) and free their memory.
	r.sweep(time.Now().Add(r.staleAfter))
	if len(r.open) != 0 || r.held != 0 {
		t.Errorf("after the sweep %d chunks still assemble, holding %d bytes", len(r.open), r.held)
	}
	if len(r.lost) != len(lengths)-1 {
		t.Errorf("%d chunks to repair after the sweep, want %d", len(r.lost), len(lengths)-1)
	}
}
