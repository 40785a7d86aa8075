package multicast

import (
	"fmt"
	"time"
)

// Kinds of ServerEvent.
const (
	EventJoined   = "joined"   // a client is in the group, waiting for data
	EventProgress = "progress" // a client's percentage crossed a tenth
	EventDone     = "done"     // a client restored and verified its disk
	EventFailed   = "failed"   // a client stopped with a reason
	EventLost     = "lost"     // a client's connection closed before done or failed
	EventPass     = "pass"     // a pass of the image was sent
)

// ServerEvent is one thing that happened to a client or the stream, for a
// program that keeps structured logs (ServerOptions.Event).
type ServerEvent struct {
	Kind string
	Msg  string // the line Log gets for it when Event is not set
	// Client is the client's record after the event (client events only).
	// Its strings are the client's own, cut to the protocol's limits but
	// not escaped: escape them for where they go.
	Client ClientStatus
	// Pass, Bytes and Elapsed describe a pass (EventPass).
	Pass    uint32
	Bytes   int64
	Elapsed time.Duration
}

// note reports e to ServerOptions.Event, with the line Log would get as
// its Msg; without an Event function, the line goes to Log as before.
func (s *Server) note(e ServerEvent, format string, a ...any) {
	if s.opts.Event == nil {
		s.opts.Log(format, a...)
		return
	}
	e.Msg = fmt.Sprintf(format, a...)
	s.opts.Event(e)
}

// noteClient is note for an event of client id, with its record.
func (s *Server) noteClient(kind string, id int, format string, a ...any) {
	if s.opts.Event == nil {
		s.opts.Log(format, a...)
		return
	}
	s.mu.Lock()
	var c ClientStatus
	if r := s.table[id]; r != nil {
		c = *r
	}
	s.mu.Unlock()
	s.note(ServerEvent{Kind: kind, Client: c}, format, a...)
}
