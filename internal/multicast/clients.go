package multicast

import (
	"sort"
	"time"
)

// Client states, as the server's table shows them.
const (
	StateConnected = "connected" // said hello; validating its target
	StateJoined    = "joined"    // in the multicast group, waiting for data
	StateRestoring = "restoring"
	StateVerifying = "verifying" // every chunk written; reading the disk back
	StateDone      = "done"
	StateFailed    = "failed"
	StateLost      = "lost" // the connection closed before done or failed
)

// ClientStatus is what the server knows of one client: a small record
// kept per connection (the server holds nothing else per client once the
// connection has closed), so its memory grows by this much per client.
type ClientStatus struct {
	ID       int // in order of arrival
	Name     string
	MAC      string
	Addr     string // IP address of the control connection
	Disk     string
	State    string
	Percent  int
	Message  string    // why it failed
	Since    time.Time // hello
	Joined   time.Time // zero until it joined
	LastSeen time.Time
	Ended    time.Time // done, failed or lost
}

// Rate is the client's restore speed in bytes of the disk per second since
// it joined, and the time it still needs at that speed; zero when unknown.
func (c ClientStatus) Rate(size int64, now time.Time) (bytesPerSec float64, eta time.Duration) {
	if c.Joined.IsZero() || c.Percent <= 0 {
		return 0, 0
	}
	end := now
	if !c.Ended.IsZero() {
		end = c.Ended
	}
	el := end.Sub(c.Joined)
	if el <= 0 {
		return 0, 0
	}
	bytesPerSec = float64(size) * float64(c.Percent) / 100 / el.Seconds()
	if c.State == StateRestoring || c.State == StateJoined {
		eta = time.Duration(float64(el) * float64(100-c.Percent) / float64(c.Percent))
	}
	return bytesPerSec, eta
}

// Clients returns every client the server has heard of, in order of
// arrival, as they were last seen.
func (s *Server) Clients() []ClientStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ClientStatus, 0, len(s.table))
	for _, c := range s.table {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Forgotten counts, by state, the clients that ended so long ago that
// the table no longer holds them.
func (s *Server) Forgotten() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.forgotten))
	for k, v := range s.forgotten {
		out[k] = v
	}
	return out
}

// end records that client id ended in state, with message; past keepEnded
// ended clients, the oldest is forgotten but counted.
func (s *Server) end(id int, state, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.table[id]
	if c == nil || !c.Ended.IsZero() {
		return
	}
	c.State, c.Message, c.Ended, c.LastSeen = state, message, time.Now(), time.Now()
	s.ended = append(s.ended, id)
	if len(s.ended) > keepEnded {
		old := s.ended[0]
		s.ended = s.ended[1:]
		if o := s.table[old]; o != nil {
			s.forgotten[o.State]++
			delete(s.table, old)
		}
	}
}

// Size is the logical size of the image being served.
func (s *Server) Size() int64 { return s.im.Manifest.LogicalSize }

// update changes client id's record under the server's lock.
func (s *Server) update(id int, f func(c *ClientStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.table[id]; c != nil {
		f(c)
		c.LastSeen = time.Now()
	}
}
