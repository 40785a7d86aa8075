package multicast

import "sync/atomic"

// Counters are what a client counts of its stream and reports to the
// server with its progress: the packets it took, and those it ignored.
type Counters struct {
	Packets   int64 `json:"packets"`             // data packets received
	Foreign   int64 `json:"foreign,omitempty"`   // of another stream or run
	Malformed int64 `json:"malformed,omitempty"` // too short, bad magic or version, bad geometry
	Failed    int64 `json:"failed,omitempty"`    // chunks that failed their digest check
	Rebuilt   int64 `json:"rebuilt,omitempty"`   // chunks rebuilt from parity
	Repaired  int64 `json:"repaired,omitempty"`  // chunks received by repair
}

// maxReportStep bounds how much one status report may add to any of the
// server's sums of reported counters: a client that lies cannot wrap them.
const maxReportStep = 1 << 40

// ServerStats are the server's counters since it started, for metrics.
type ServerStats struct {
	Pass        uint32 // the pass being sent, or last sent; 0 before the first
	PassesDone  int64
	BytesSent   int64 // data packets' bytes, headers and parity included
	PacketsSent int64
	// Repairs served: chunks sent by unicast, and their stored bytes.
	RepairChunks, RepairBytes int64
	Conns                     int   // control connections open
	ConnsTotal                int64 // control connections admitted
	ConnsRefused              int64 // over the connection limits
	// BadControl counts control connections dropped for breaking the
	// protocol: no valid hello, a frame of a wrong type or size, bad JSON.
	BadControl int64
	Listening  int // clients in the group now
	// Reported sums what clients reported of their streams (Counters),
	// including clients the table no longer holds.
	Reported Counters
}

// counters are the server's atomics behind ServerStats.
type counters struct {
	pass                              atomic.Uint32
	passesDone, bytesSent, packetSent atomic.Int64
	repairChunks, repairBytes         atomic.Int64
	connsTotal, connsRefused, bad     atomic.Int64
	reported                          [6]atomic.Int64 // Counters' fields, in order
}

// Stats returns the server's counters so far.
func (s *Server) Stats() ServerStats {
	c := &s.ctr
	st := ServerStats{
		Pass: c.pass.Load(), PassesDone: c.passesDone.Load(), BytesSent: c.bytesSent.Load(), PacketsSent: c.packetSent.Load(),
		RepairChunks: c.repairChunks.Load(), RepairBytes: c.repairBytes.Load(),
		ConnsTotal: c.connsTotal.Load(), ConnsRefused: c.connsRefused.Load(), BadControl: c.bad.Load(),
		Reported: Counters{c.reported[0].Load(), c.reported[1].Load(), c.reported[2].Load(),
			c.reported[3].Load(), c.reported[4].Load(), c.reported[5].Load()},
	}
	s.mu.Lock()
	st.Conns, st.Listening = s.conns, s.clients
	s.mu.Unlock()
	return st
}

// fields lists a Counters' values in the order of counters.reported.
func (c Counters) fields() [6]int64 {
	return [6]int64{c.Packets, c.Foreign, c.Malformed, c.Failed, c.Rebuilt, c.Repaired}
}

// addReported adds to the server's sums what a client's report adds to
// its previous one (the client's counters only grow; a report that says
// less adds nothing), and returns the report to compare the next with.
func (s *Server) addReported(prev, now Counters) Counters {
	p, n := prev.fields(), now.fields()
	for i := range n {
		if d := n[i] - p[i]; d > 0 {
			s.ctr.reported[i].Add(min(d, maxReportStep))
		}
		n[i] = max(n[i], p[i])
	}
	return Counters{n[0], n[1], n[2], n[3], n[4], n[5]}
}

// counters is the client's Counters so far.
func (c *Client) counters() *Counters {
	return &Counters{Packets: c.packets.Load(), Foreign: c.foreign.Load(), Malformed: c.bogus.Load(),
		Failed: c.forged.Load(), Rebuilt: c.rebuilt.Load(), Repaired: c.repairedN.Load()}
}

// Chunks counts the image's chunks, all and stored (sent in each pass).
func (s *Server) Chunks() (all, stored int) { return len(s.im.Manifest.Chunks), s.stored }
