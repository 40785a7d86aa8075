package dashboard

import (
	"fmt"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
)

// Snapshot is the state the page shows, as the event stream sends it.
type Snapshot struct {
	Time      time.Time      `json:"time"`
	Image     Image          `json:"image"`
	Stream    Stream         `json:"stream"`
	Summary   Summary        `json:"summary"`
	Clients   []Client       `json:"clients"`
	Forgotten map[string]int `json:"forgotten"` // ended clients the table no longer holds, by state
}

// Stream is the multicast stream now.
type Stream struct {
	Pass        uint32  `json:"pass"`
	PassesDone  int64   `json:"passes_done"`
	Rate        float64 `json:"rate"` // bytes/s over the last interval
	Listening   int     `json:"listening"`
	BytesSent   int64   `json:"bytes_sent"`
	PacketsSent int64   `json:"packets_sent"`
	Repairs     int64   `json:"repair_chunks"`
}

// Summary counts the clients by outcome, for the line that says at a
// glance how the lab is doing.
type Summary struct {
	Total  int `json:"total"`
	Done   int `json:"done"`
	Failed int `json:"failed"` // failed or lost
	Active int `json:"active"` // connected, joined, restoring or verifying
	// AllDone: at least one client, and every one is done.
	AllDone bool   `json:"all_done"`
	Text    string `json:"text"`
	Level   string `json:"level"` // idle, busy, ok, bad: the banner's colour
}

// Client is one row of the table.
type Client struct {
	ID       int       `json:"id"`
	Name     string    `json:"name"`
	MAC      string    `json:"mac"`
	Addr     string    `json:"addr"`
	Disk     string    `json:"disk"`
	State    string    `json:"state"`
	Percent  int       `json:"percent"`
	Rate     float64   `json:"rate"`        // bytes of the disk per second
	ETA      float64   `json:"eta_seconds"` // 0: unknown or over
	Since    time.Time `json:"since"`
	LastSeen time.Time `json:"last_seen"`
	Message  string    `json:"message"` // why it failed
}

// Failed says whether the row is a machine that did not make it.
func (c Client) Failed() bool {
	return c.State == multicast.StateFailed || c.State == multicast.StateLost
}

// snapshot reads the server; last is the previous sample of bytes sent,
// and cur the one to keep for the next.
func (d *Dashboard) snapshot(now time.Time, last sample) (*Snapshot, sample) {
	srv := d.opts.Server
	st := srv.Stats()
	cur := sample{at: now, bytes: st.BytesSent}
	s := &Snapshot{Time: now.UTC().Truncate(time.Second), Image: d.opts.Image, Forgotten: srv.Forgotten(),
		Stream: Stream{Pass: st.Pass, PassesDone: st.PassesDone, Listening: st.Listening,
			BytesSent: st.BytesSent, PacketsSent: st.PacketsSent, Repairs: st.RepairChunks}}
	if el := now.Sub(last.at).Seconds(); !last.at.IsZero() && el > 0 {
		s.Stream.Rate = float64(st.BytesSent-last.bytes) / el
	}
	clients := srv.Clients()
	s.Clients = make([]Client, 0, len(clients))
	for _, c := range clients {
		rate, eta := c.Rate(d.opts.Image.Size, now)
		s.Clients = append(s.Clients, Client{ID: c.ID, Name: c.Name, MAC: c.MAC, Addr: c.Addr, Disk: c.Disk,
			State: c.State, Percent: c.Percent, Rate: rate, ETA: eta.Round(time.Second).Seconds(),
			Since: c.Since.UTC(), LastSeen: c.LastSeen.UTC(), Message: c.Message})
	}
	s.Summary = summarize(s.Clients, s.Forgotten)
	return s, cur
}

func summarize(clients []Client, forgotten map[string]int) Summary {
	var m Summary
	count := func(state string, n int) {
		m.Total += n
		switch state {
		case multicast.StateDone:
			m.Done += n
		case multicast.StateFailed, multicast.StateLost:
			m.Failed += n
		default:
			m.Active += n
		}
	}
	for _, c := range clients {
		count(c.State, 1)
	}
	for st, n := range forgotten {
		count(st, n)
	}
	m.AllDone = m.Total > 0 && m.Done == m.Total
	switch {
	case m.Total == 0:
		m.Level, m.Text = "idle", "Waiting for clients"
	case m.AllDone:
		m.Level, m.Text = "ok", fmt.Sprintf("All %s done", machines(m.Total))
	case m.Failed > 0:
		m.Level, m.Text = "bad", fmt.Sprintf("%d failed, %d done, %d in progress, of %s", m.Failed, m.Done, m.Active, machines(m.Total))
	default:
		m.Level, m.Text = "busy", fmt.Sprintf("%d done, %d in progress, of %s", m.Done, m.Active, machines(m.Total))
	}
	return m
}

func machines(n int) string {
	if n == 1 {
		return "1 machine"
	}
	return fmt.Sprintf("%d machines", n)
}

// humanBytes writes n bytes as a person reads them: 1.5 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// since says how long ago t was, in whole seconds.
func since(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d s ago", max(0, int(now.Sub(t).Seconds())))
}
