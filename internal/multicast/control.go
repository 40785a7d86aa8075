package multicast

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Control messages on the TCP connection are frames: a 4-byte little-endian
// length, a type byte, then the payload (JSON unless said otherwise).
const (
	msgHello    = 1 // client → server: hello
	msgSession  = 2 // server → client: session
	msgManifest = 3 // server → client: the image's header and manifest bytes
	msgStatus   = 4 // client → server: status
	msgRepair   = 5 // client → server: chunk indices, u32 each
	msgChunk    = 6 // server → client: u32 chunk index, then its stored bytes
	msgRepaired = 7 // server → client: the repair batch is complete
	msgError    = 8 // server → client: text, then the server closes
)

const maxFrame = 300 << 20 // a manifest of a multi-terabyte image fits

// Bounds on what a client sends, so that a server's memory does not depend
// on its clients: a frame's length is checked against its type's limit
// before anything is allocated for it, and the texts a server keeps are
// cut to these lengths.
const (
	maxHelloFrame  = 4 << 10 // a hello is a few hundred bytes
	maxStatusFrame = 4 << 10 // a status message is cut to maxMessageLen
	maxNameLen     = 256     // client name and disk
	maxMACLen      = 64
	maxMessageLen  = 1024
)

// maxSessionFrame bounds the session frame a client reads (see client.go).
const maxSessionFrame = 128 << 10

type hello struct {
	Version int    `json:"version"`
	Client  string `json:"client"`         // host name or MAC address, for the server's log
	MAC     string `json:"mac,omitempty"`  // the client's network card, as an admin finds it in a DHCP log
	Disk    string `json:"disk,omitempty"` // the target: "/dev/vda (64 MiB)"
}

type session struct {
	Version   int    `json:"version"`
	Stream    string `json:"stream"` // hex StreamID
	Digest    string `json:"digest"` // hex image digest
	Name      string `json:"name"`
	Group     string `json:"group"`
	Port      int    `json:"port"`
	ShardSize int    `json:"shard_size"`
	Parity    int    `json:"parity_percent"`
	Rate      int64  `json:"rate"`
	// RepairLimit is how many chunks the server will send this client by
	// unicast in all; past it the client waits for the next pass.
	RepairLimit int `json:"repair_limit"`
	// Signatures is the image's signature trailer (FORMAT.md), base64: the
	// client checks it against its trusted keys before erasing anything.
	// At most image.MaxTrailerLen bytes, so the frame stays under 64 KiB.
	Signatures string `json:"signatures,omitempty"`
	// MinClients and StartWait are set while the stream waits for more
	// clients before it starts (the server's Minimum Clients): it starts
	// at most StartWait milliseconds after this client joins, and the
	// client neither times out nor falls back to fetching over its
	// control connection before then.
	MinClients int   `json:"min_clients,omitempty"`
	StartWait  int64 `json:"start_wait_ms,omitempty"`
}

// maxStartWait bounds the wait a server can make a client accept: the
// largest Client Wait a configuration allows.
const maxStartWait = 24 * time.Hour

// status is what a client says of its restore: once at each change of
// state, when its percentage moves (at most once a second), and every
// heartbeat otherwise, so the server's "last seen" means something. Each
// message is a few dozen bytes.
type status struct {
	Event   string `json:"event"` // alive, joined, progress, done, failed
	Percent int    `json:"percent,omitempty"`
	Message string `json:"message,omitempty"`
	// Counters ride on progress, done and failed: the server sums them
	// for its metrics. Older clients send none.
	Counters *Counters `json:"counters,omitempty"`
}

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	var h [5]byte
	binary.LittleEndian.PutUint32(h[:], uint32(len(payload)+1))
	h[4] = typ
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// writeChunk writes a repair answer, chunk i's stored bytes, without
// copying them.
func writeChunk(w io.Writer, i uint32, stored []byte) error {
	var h [9]byte
	binary.LittleEndian.PutUint32(h[:], uint32(len(stored)+5))
	h[4] = msgChunk
	binary.LittleEndian.PutUint32(h[5:], i)
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(stored)
	return err
}

func writeJSON(w io.Writer, typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFrame(w, typ, b)
}

// readFrame reads a frame of at most limit bytes.
func readFrame(r io.Reader, limit int) (byte, []byte, error) {
	return readFrameOf(r, func(byte) int { return limit })
}

// readFrameOf reads a frame whose length is at most limit(its type): the
// length is checked before the payload is allocated, so a peer that
// announces a large frame and sends nothing costs nothing.
func readFrameOf(r io.Reader, limit func(typ byte) int) (byte, []byte, error) {
	typ, n, err := readFrameHeader(r, limit)
	if err != nil {
		return 0, nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, err
	}
	return typ, b, nil
}

// readFrameHeader reads a frame's length and type, and checks the length
// against limit(type); it returns the payload's length, still to be read.
func readFrameHeader(r io.Reader, limit func(typ byte) int) (typ byte, n int, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, err
	}
	n = int(binary.LittleEndian.Uint32(h[:]))
	if n < 1 || n-1 > limit(h[4]) {
		return 0, 0, &frameRangeError{h[4], n}
	}
	return h[4], n - 1, nil
}

// frameRangeError is a control frame whose length its type does not allow:
// the peer breaks the protocol.
type frameRangeError struct {
	typ byte
	n   int
}

func (e *frameRangeError) Error() string {
	return fmt.Sprintf("control frame of type %d and %d bytes out of range", e.typ, e.n)
}

// clip cuts s to at most n bytes, at a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
