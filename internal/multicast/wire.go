// Package multicast streams a prepared image to many machines at once.
//
// A server loops over the image's stored chunks and sends them as UDP
// multicast packets at a fixed rate; clients join at any point, keep every
// chunk whose SHA-256 checks, and leave when they have them all. A TCP
// connection to the server carries the handshake (version, the manifest, the
// stream's identity and parameters), status reports, and repair: chunks a
// client still lacks after a full pass are sent to it directly.
//
// Each stored chunk is cut into ShardSize-byte data shards, in groups of at
// most 64 data shards, each group protected by Reed-Solomon parity
// (github.com/klauspost/reedsolomon, GF(2^8)), so a few percent of lost
// packets are repaired within the same pass. Why groups of 64: GF(2^16)
// codes over a whole chunk need 78 MB of tables in every client and the
// server, and rebuilding a group costs a matrix inversion that grows with the
// cube of its size (236 shards rebuild at 128 MB/s, 64 at 540 MB/s here).
// A chunk whose group still lost too much is asked for by unicast repair as
// soon as the stream has moved past it. Every packet
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
	// DefaultParity is the parity added to each group, in percent of its
	// data shards: 64 data shards get 7 parity shards, and at 2% random loss
	// such a group fails about once in 7,000; repair covers those.
	DefaultParity = 10
	// groupData is the most data shards in one group.
	groupData = 64
	// maxGroup is the most shards (data and parity) in one group: GF(2^8).
	maxGroup = 256
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
	Group  uint16 // which FEC group of the chunk
	Shard  uint16 // index among the group's data and parity shards
	K      uint16 // data shards of this group
	N      uint16 // data plus parity shards of this group
}

func (h *header) marshal(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], packetMagic)
	b[4], b[5] = WireVersion, 1
	b[6], b[7] = 0, 0
	copy(b[8:24], h.Stream[:])
	binary.LittleEndian.PutUint32(b[24:], h.Pass)
	binary.LittleEndian.PutUint32(b[28:], h.Chunk)
	binary.LittleEndian.PutUint16(b[32:], h.Group)
	binary.LittleEndian.PutUint16(b[34:], h.Shard)
	binary.LittleEndian.PutUint16(b[36:], h.K)
	binary.LittleEndian.PutUint16(b[38:], h.N)
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
	h.Group = binary.LittleEndian.Uint16(b[32:])
	h.Shard = binary.LittleEndian.Uint16(b[34:])
	h.K = binary.LittleEndian.Uint16(b[36:])
	h.N = binary.LittleEndian.Uint16(b[38:])
	if h.K == 0 || h.N < h.K || h.N > maxGroup || h.Shard >= h.N {
		return h, errNotPacket
	}
	return h, nil
}

// dataShards is how many data shards a chunk of stored length n needs.
func dataShards(n int) int { return (n + ShardSize - 1) / ShardSize }

// parity is how many parity shards k data shards get at pct percent: at
// least two, because one lost packet in a small group is common and one
// parity shard would leave it to repair.
func parity(k, pct int) int {
	if pct <= 0 {
		return 0
	}
	return max(2, (k*pct+99)/100)
}

// group is one FEC group of a chunk: data shards [first, first+k) of the
// chunk, and m parity shards.
type group struct{ first, k, m int }

// layout cuts a chunk of stored length n into FEC groups of balanced size,
// each at most groupData data shards and maxGroup shards with its parity.
// Server and client derive it from the stored length and the session's
// parity, so packets need only name their group.
func layout(n, pct int) []group {
	k := dataShards(n)
	most := groupData
	for most > 1 && most+parity(most, pct) > maxGroup {
		most--
	}
	g := (k + most - 1) / most
	out := make([]group, g)
	first := 0
	for i := range out {
		ki := k / g
		if i < k%g {
			ki++
		}
		out[i] = group{first: first, k: ki, m: parity(ki, pct)}
		first += ki
	}
	return out
}

// codecs caches Reed-Solomon codecs by shape: there are few shapes, and
// every chunk uses one.
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
		return nil, fmt.Errorf("Reed-Solomon codec for %d+%d shards: %w", k, m, err)
	}
	if c.m == nil {
		c.m = map[[2]int]reedsolomon.Encoder{}
	}
	c.m[[2]int{k, m}] = e
	return e, nil
}
