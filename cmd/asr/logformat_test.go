package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
)

// TestServerEventRecordEscapes: what a client sent (its name, disk and
// reason) cannot break a record: the record is one line of JSON whose
// fields hold the client's text, cut to maxField.
func TestServerEventRecordEscapes(t *testing.T) {
	var b bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&b, nil))
	name := "pc\x1b[2J\"},\n{\"event\":\"done\"\u2028"
	long := strings.Repeat("é", 400) // 800 bytes, two per character
	logServerEvent(l, multicast.ServerEvent{Kind: multicast.EventFailed, Msg: "Client x failed",
		Client: multicast.ClientStatus{ID: 3, Name: name, Disk: long, Message: "disk \x00 gone\r\n", State: multicast.StateFailed,
			Since: time.Now().Add(-time.Minute)}}, 1<<20)
	out := b.String()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("record is not one line: %q", out)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("record is not JSON: %v: %q", err, out)
	}
	if rec["event"] != "failed" || rec["client"] != name || rec["reason"] != "disk \x00 gone\r\n" || rec["level"] != "WARN" {
		t.Errorf("record = %v, want the failed event with the client's own name and reason", rec)
	}
	disk, _ := rec["disk"].(string)
	if len(disk) > maxField+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(disk, "…")) || !strings.HasSuffix(disk, "é…") {
		t.Errorf("disk field of %d bytes = %q, want the client's cut to %d bytes on a character boundary", len(disk), disk, maxField)
	}
}
