// Package multicast streams a prepared image to many machines at once.
//
// A server loops over the image's stored chunks and sends them as UDP
// multicast packets at a fixed rate; clients join at any point, keep every
// chunk whose SHA-256 checks, and leave when they have them all. A TCP
// connection to the server carries the handshake (version, the manifest, the
// stream's identity and parameters), status reports, and repair: chunks a
// client still lacks after a full pass are sent to it directly.
//
// Each stored chunk is cut into ShardSize-byte data shards and protected by
// Reed-Solomon parity shards (github.com/klauspost/reedsolomon), so a few
// percent of lost packets are repaired within the same pass. Every packet
// carries the stream identity: a client never takes data of another image or
// of another run of the server. MULTICAST.md at the top of the repository
// specifies the protocol.
package multicast

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// Wire constants.
const (
	packetMagic = 0x4d525341 // "ASRM", little-endian
	WireVersion = 1
	headerLen   = 40
	// ShardSize is the payload of one data packet: with the header and
	// IPv4/UDP headers it fits a 1500-byte Ethernet MTU, and it is a
	// multiple of 64 as Leopard GF(2^16) Reed-Solomon needs.
	ShardSize  = 1408
	packetSize = headerLen + ShardSize
	// DefaultParity is the parity added to each chunk, in percent of its
	// data shards.
	DefaultParity = 5
)

// StreamID names one run of one image: the first half is the image digest's,
// the second is random per server start.
type StreamID [16]byte

func (s StreamID) String() string { return fmt.Sprintf("%x", s[:]) }

// header is the start of every data packet.
type header struct {
	Stream StreamID
	Pass   uint32 // which loop of the image this is
	Chunk  uint32
	Shard  uint16 // index among the chunk's data and parity shards
	K      uint16 // data shards of this chunk
	N      uint16 // data plus parity shards
}

func (h *header) marshal(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], packetMagic)
	b[4], b[5] = WireVersion, 1
	b[6], b[7] = 0, 0
	copy(b[8:24], h.Stream[:])
	binary.LittleEndian.PutUint32(b[24:], h.Pass)
	binary.LittleEndian.PutUint32(b[28:], h.Chunk)
	binary.LittleEndian.PutUint16(b[32:], h.Shard)
	binary.LittleEndian.PutUint16(b[34:], h.K)
	binary.LittleEndian.PutUint16(b[36:], h.N)
	b[38], b[39] = 0, 0
}

var errNotPacket = errors.New("not an asr data packet")

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) != packetSize || binary.LittleEndian.Uint32(b) != packetMagic || b[4] != WireVersion || b[5] != 1 {
		return h, errNotPacket
	}
	copy(h.Stream[:], b[8:24])
	h.Pass = binary.LittleEndian.Uint32(b[24:])
	h.Chunk = binary.LittleEndian.Uint32(b[28:])
	h.Shard = binary.LittleEndian.Uint16(b[32:])
	h.K = binary.LittleEndian.Uint16(b[34:])
	h.N = binary.LittleEndian.Uint16(b[36:])
	if h.K == 0 || h.N < h.K || h.Shard >= h.N {
		return h, errNotPacket
	}
	return h, nil
}

// dataShards is how many data shards a chunk of stored length n needs.
func dataShards(n int) int { return (n + ShardSize - 1) / ShardSize }

// codecs caches Reed-Solomon codecs by shape; they are cheap to make but
// are used for every chunk.
type codecs struct {
	mu sync.Mutex
	m  map[[2]int]reedsolomon.Encoder
}

// get returns a codec for k data and m parity shards.
func (c *codecs) get(k, m int) (reedsolomon.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[[2]int{k, m}]; ok {
		return e, nil
	}
	e, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, err
	}
	if c.m == nil || len(c.m) > 4096 {
		c.m = map[[2]int]reedsolomon.Encoder{}
	}
	c.m[[2]int{k, m}] = e
	return e, nil
}

// parityFor chooses the parity shards for k data shards: pct percent, at
// least two, and a shape the codec accepts. Small chunks get the floor of
// two because one lost packet in ten is common and one parity shard would
// leave them to repair.
func (c *codecs) parityFor(k, pct int) (int, reedsolomon.Encoder, error) {
	m := max(2, (k*pct+99)/100)
	if pct == 0 {
		return 0, nil, nil
	}
	var err error
	for range 64 {
		var e reedsolomon.Encoder
		if e, err = c.get(k, m); err == nil {
			return m, e, nil
		}
		m++
	}
	return 0, nil, fmt.Errorf("no Reed-Solomon codec for %d data shards: %w", k, err)
}

// warmUp builds the codecs' shared tables (Leopard GF(2^16) takes a good
// fraction of a second the first time), so that the first pass of a stream
// keeps its rate and a client's first rebuild is not late.
func warmUp() {
	for _, k := range []int{4, 300} {
		enc, err := reedsolomon.New(k, 2)
		if err != nil {
			continue
		}
		shards := make([][]byte, k+2)
		for i := range shards {
			shards[i] = make([]byte, ShardSize)
		}
		_ = enc.Encode(shards)
		shards[0] = nil
		_ = enc.ReconstructData(shards)
	}
}
