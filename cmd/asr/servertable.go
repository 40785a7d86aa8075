package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/safetext"
)

// board is asr server's live table of clients on a terminal: log lines
// scroll above it, and the table is redrawn in place below them.
type board struct {
	mu    sync.Mutex
	w     io.Writer
	lines int // lines of the table now on screen
	last  []byte
}

// logf prints a log line above the table.
func (b *board) logf(format string, a ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clear()
	fmt.Fprintf(b.w, format+"\n", a...)
	b.put(b.last)
}

// draw replaces the table on screen.
func (b *board) draw(table []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clear()
	b.put(table)
}

func (b *board) clear() {
	if b.lines > 0 {
		// Up to the table's first line, then erase to the end of the screen.
		fmt.Fprintf(b.w, "\x1b[%dA\r\x1b[J", b.lines)
		b.lines = 0
	}
}

func (b *board) put(table []byte) {
	b.last = table
	b.w.Write(table)
	b.lines = bytes.Count(table, []byte("\n"))
}

// maxRows bounds the table: it is redrawn each second and after each log
// line, so its cost must not grow with the number of clients. Clients still
// at work are shown first; the count line sums up every client.
const maxRows = 40

// clientTable renders the clients, one row each. forgotten counts, by
// state, the clients that ended so long ago that the server no longer
// keeps their records. Names, MACs, disks and messages come from the
// clients: they are escaped and cut to the column.
func clientTable(clients []multicast.ClientStatus, forgotten map[string]int, size int64, now time.Time) []byte {
	var buf bytes.Buffer
	total := len(clients)
	counts := map[string]int{}
	for st, n := range forgotten {
		counts[st] += n
		total += n
	}
	if total == 0 {
		buf.WriteString("No clients yet.\n")
		return buf.Bytes()
	}
	var shown []multicast.ClientStatus
	for _, c := range clients {
		counts[c.State]++
		if c.Ended.IsZero() && len(shown) < maxRows {
			shown = append(shown, c)
		}
	}
	for _, c := range clients {
		if !c.Ended.IsZero() && len(shown) < maxRows {
			shown = append(shown, c)
		}
	}
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "CLIENT\tMAC\tDISK\tSTATE\t%\tRATE\tETA\tLAST SEEN")
	for _, c := range shown {
		name := c.Name
		if name == "" {
			name = c.Addr
		}
		rate, eta := c.Rate(size, now)
		rs, es := "-", "-"
		if rate > 0 {
			rs = restore.HumanBytes(int64(rate)) + "/s"
		}
		if eta > 0 {
			es = eta.Round(time.Second).String()
		}
		state := c.State
		if c.Message != "" {
			state += ": " + safetext.Short(c.Message, 60)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s ago\n", safetext.Short(name, 40), dash(safetext.Short(c.MAC, 24)),
			dash(safetext.Short(c.Disk, 40)), state, c.Percent,
			rs, es, now.Sub(c.LastSeen).Round(time.Second))
	}
	w.Flush()
	var sum []string
	for _, st := range []string{multicast.StateConnected, multicast.StateJoined, multicast.StateRestoring,
		multicast.StateVerifying, multicast.StateDone, multicast.StateFailed, multicast.StateLost} {
		if counts[st] > 0 {
			sum = append(sum, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	more := ""
	if n := total - len(shown); n > 0 {
		more = fmt.Sprintf(" (%d not shown)", n)
	}
	fmt.Fprintf(&buf, "%d clients: %s%s\n", total, strings.Join(sum, ", "), more)
	return buf.Bytes()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stdoutIsTerminal says whether w is a terminal, where the table can be
// redrawn in place; elsewhere (a log file, journald) asr server writes
// plain lines.
// w may be os.Stdout behind a redacting writer, which keeps its Fd.
func stdoutIsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := ioctlGetTermios(int(f.Fd()))
	return err == nil
}
