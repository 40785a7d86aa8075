package dashboard

import (
	"io"
	"net/http"
	"time"
)

// Bounds of one event stream: a viewer that has not taken an event within
// eventWriteTimeout is dropped (its page reconnects when it can), a ping
// every keepAlive keeps proxies from closing a quiet stream, and a stream
// ends after maxStreamAge so that no viewer holds a slot for ever.
const (
	eventWriteTimeout = 10 * time.Second
	keepAlive         = 15 * time.Second
	maxStreamAge      = 10 * time.Minute
)

// serveEvents streams snapshots as server-sent events: the latest at once,
// then each new one. Every viewer writes the one shared snapshot: a viewer
// costs its connection, never a copy of the state. Past MaxStreams
// viewers, more are refused with 503 (the page retries).
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case d.slots <- struct{}{}:
		defer func() { <-d.slots }()
	default:
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many live views open; try again later", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	send := func(parts ...string) bool {
		if rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout)) != nil {
			return false
		}
		for _, p := range parts {
			if _, err := io.WriteString(w, p); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	if !send("retry: 2000\n\n") {
		return
	}
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	end := time.NewTimer(maxStreamAge)
	defer end.Stop()
	var sent uint64
	for {
		// A viewer keeps the number of the snapshot it sent, not the
		// snapshot: one that lags holds no old copy of the state.
		b, seq, changed := d.latest()
		if seq != sent {
			if !send("event: snapshot\ndata: ", b, "\n\n") {
				return
			}
			sent = seq
		}
		select {
		case <-changed:
		case <-ping.C:
			if !send(": ping\n\n") {
				return
			}
		case <-end.C:
			return
		case <-r.Context().Done():
			return
		}
	}
}
