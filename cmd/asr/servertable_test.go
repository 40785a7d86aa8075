package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
)

func TestClientTable(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	rows := []multicast.ClientStatus{
		{ID: 1, Name: "lab-07", MAC: "52:54:00:12:34:07", Disk: "/dev/vda (64.0 MiB)", State: multicast.StateRestoring,
			Percent: 25, Joined: now.Add(-10 * time.Second), LastSeen: now.Add(-2 * time.Second)},
		{ID: 2, Addr: "198.18.0.12", State: multicast.StateFailed, Message: "target /dev/sda is too small: 16.0 MiB",
			LastSeen: now},
	}
	got := string(clientTable(rows, nil, 400<<20, now))
	for _, want := range []string{"CLIENT", "MAC", "DISK", "STATE", "LAST SEEN",
		"lab-07", "52:54:00:12:34:07", "/dev/vda (64.0 MiB)", "restoring", "25",
		"10.0 MiB/s", "30s", "2s ago", // 100 MiB in 10 s; 75% left at that rate
		"198.18.0.12", "failed: target /dev/sda is too small",
		"2 clients: 1 restoring, 1 failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// With many clients the table stays maxRows long, those at work first.
func TestClientTableBounded(t *testing.T) {
	now := time.Now()
	var rows []multicast.ClientStatus
	for i := range 100 {
		c := multicast.ClientStatus{ID: i + 1, Name: fmt.Sprintf("pc%03d", i+1), State: multicast.StateDone, Ended: now, LastSeen: now}
		if i == 99 {
			c = multicast.ClientStatus{ID: 100, Name: "pc100", State: multicast.StateRestoring, Percent: 50, LastSeen: now}
		}
		rows = append(rows, c)
	}
	got := string(clientTable(rows, nil, 1<<30, now))
	if n := strings.Count(got, "\n"); n != maxRows+2 {
		t.Errorf("table of 100 clients has %d lines, want %d:\n%s", n, maxRows+2, got)
	}
	if !strings.Contains(strings.SplitN(got, "\n", 3)[1], "pc100") {
		t.Errorf("the client at work is not the first row:\n%s", got)
	}
	if !strings.Contains(got, "100 clients: 1 restoring, 99 done (60 not shown)") {
		t.Errorf("the count line does not sum up every client:\n%s", got)
	}
}

// On a terminal a log line goes above the table, which is then drawn again
// in place: moved up over and erased, never left twice on screen.
func TestBoardRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	b := &board{w: &out}
	b.draw([]byte("T1\nrow\n"))
	b.logf("Client %s joined", "x")
	b.draw([]byte("T2\nrow\n"))
	want := "T1\nrow\n" + "\x1b[2A\r\x1b[J" + "Client x joined\n" + "T1\nrow\n" + "\x1b[2A\r\x1b[J" + "T2\nrow\n"
	if out.String() != want {
		t.Errorf("board wrote %q, want %q", out.String(), want)
	}
}

// Names, MACs, disks and messages come from clients: escape sequences, CR
// and forged lines show escaped and cut to the column, never raw.
func TestClientTableEscapes(t *testing.T) {
	now := time.Now()
	rows := []multicast.ClientStatus{{ID: 1, Name: "evil\x1b[2J\rClient 198.18.0.99 (pc) done\n", MAC: "\x1b]0;owned\a",
		Disk: "/dev/\x1b[31mvda", State: multicast.StateFailed, Message: "gone\x1b[2K\r\nforged line", LastSeen: now, Ended: now}}
	got := string(clientTable(rows, map[string]int{multicast.StateDone: 300}, 1<<30, now))
	if strings.ContainsAny(got, "\x1b\r\a") {
		t.Errorf("table holds raw control characters: %q", got)
	}
	for _, want := range []string{`evil\x1b[2J\rClient 198.18.0.99 (pc) done\n`, `\x1b]0;owned\a`, `/dev/\x1b[31mvda`,
		`failed: gone\x1b[2K\r\nforged line`, "301 clients: 300 done, 1 failed (300 not shown)"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 3 {
		t.Errorf("table of one client has %d lines, want 3:\n%s", n, got)
	}
}
