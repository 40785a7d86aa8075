package multicast

import (
	"errors"
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// gsoPackets is the most packets one segmentation-offload send carries:
// the kernel's limit is a 64 KiB datagram.
const gsoPackets = 65507 / packetSize

// batchSender sends packets laid end to end in a buffer, a burst per system
// call (sendmmsg). Where the kernel offers UDP segmentation offload (GSO,
// Linux 4.18 and later), one message carries up to gsoPackets packets and
// the kernel (or the network card) cuts it into datagrams of packetSize
// bytes: the stack is walked once per message, not once per packet. What
// goes on the wire is the same datagrams either way; receivers see no
// difference.
type batchSender struct {
	conn *net.UDPConn
	out  *ipv4.PacketConn
	msgs []ipv4.Message
	gso  bool
	log  func(format string, a ...any)
}

func newBatchSender(conn *net.UDPConn, log func(string, ...any)) *batchSender {
	b := &batchSender{conn: conn, out: ipv4.NewPacketConn(conn), log: log,
		msgs: make([]ipv4.Message, maxBurstPackets)}
	for i := range b.msgs {
		b.msgs[i].Buffers = [][]byte{nil}
	}
	// Every send longer than one packet is cut into packets of packetSize.
	if rc, err := conn.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			b.gso = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, packetSize) == nil
		})
	}
	return b
}

// send sends pkts, whole packets of packetSize bytes, at most
// maxBurstPackets of them, and returns how many packets the kernel took.
// Errors of a full socket buffer or a flapping link are returned with the
// count: those packets are lost, as on the wire, and parity or repair
// covers them.
func (b *batchSender) send(pkts []byte) (int, error) {
	if b.gso {
		n, err := b.sendSegmented(pkts)
		if err == nil || n > 0 || !gsoRefused(err) {
			return n, err
		}
		// A route through a card without checksum offload, a tunnel:
		// this path cannot segment. Packet by packet from now on.
		b.log("UDP segmentation offload refused (%v): sending packet by packet", err)
		b.gso = false
		if rc, err := b.conn.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0) })
		}
	}
	n := 0
	for off := 0; off < len(pkts); off += packetSize {
		b.msgs[n].Buffers[0] = pkts[off : off+packetSize]
		n++
	}
	return b.write(n)
}

// write sends the first n messages; sendmmsg may take fewer than it was
// given (the socket buffer filled), and the rest is sent again.
func (b *batchSender) write(n int) (int, error) {
	done := 0
	for done < n {
		wrote, err := b.out.WriteBatch(b.msgs[done:n], 0)
		done += max(wrote, 0)
		if err != nil || wrote <= 0 {
			return done, err
		}
	}
	return done, nil
}

// sendSegmented sends pkts as messages of up to gsoPackets packets each.
func (b *batchSender) sendSegmented(pkts []byte) (int, error) {
	n := 0
	for off := 0; off < len(pkts); n++ {
		end := min(len(pkts), off+gsoPackets*packetSize)
		b.msgs[n].Buffers[0] = pkts[off:end]
		off = end
	}
	wrote, err := b.write(n)
	sent := 0
	for _, m := range b.msgs[:wrote] {
		sent += len(m.Buffers[0]) / packetSize
	}
	return sent, err
}

// gsoRefused says a send failed because the path cannot segment: the
// kernel answers EIO (no checksum offload, IPsec) or EINVAL.
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)
}
