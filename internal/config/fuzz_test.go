package config

import (
	"testing"
	"time"

	"howett.net/plist"

	"github.com/asrlinux/asr/internal/safetext"
)

// FuzzParse feeds Parse any bytes. A configuration it accepts holds only
// values in their documented ranges; what it refuses gets one short line
// with no control characters (the message reaches a terminal and a log).
func FuzzParse(f *testing.F) {
	good := map[string]any{KeyMulticastAddress: "239.255.1.1", KeyDataRate: 6000000, KeyTTL: 5, "Comment": "lab",
		KeyMinClients: 8, KeyClientWait: 120}
	for _, format := range []int{plist.XMLFormat, plist.BinaryFormat, plist.OpenStepFormat} {
		b, err := plist.Marshal(good, format)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte(`<plist><dict><key>Data Rate</key><real>1e300</real><key>Data Rate</key><integer>1</integer></dict></plist>`))
	f.Add([]byte(`<plist><dict><key>Multicast Address</key><string>239.255.1.1</string><key>Data Rate</key><integer>1000000</integer></dict></plist>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			checkLine(t, "error", err.Error())
			return
		}
		if !s.Group.Is4() || !s.Group.IsMulticast() || s.Group.IsLinkLocalMulticast() {
			t.Fatalf("accepted group %v", s.Group)
		}
		if s.DataRate < MinDataRate || s.DataRate > maxDataRate || (s.ClientDataRate != 0 && s.ClientDataRate < MinDataRate) {
			t.Fatalf("accepted rates %d, %d", s.DataRate, s.ClientDataRate)
		}
		if s.TTL < 1 || s.TTL > 255 || s.Port < 1 || s.Port > 65534 || s.LoopSuspend < 0 {
			t.Fatalf("accepted TTL %d, port %d, loop suspend %d", s.TTL, s.Port, s.LoopSuspend)
		}
		if s.MinClients < 1 || s.MinClients > MaxMinClients || s.ClientWait < time.Second || s.ClientWait > maxClientWait*time.Second {
			t.Fatalf("accepted Minimum Clients %d, Client Wait %s", s.MinClients, s.ClientWait)
		}
		if len(s.Warnings) > len(b) {
			t.Fatalf("%d warnings for %d bytes", len(s.Warnings), len(b))
		}
		for _, w := range s.Warnings {
			checkLine(t, "warning", w)
		}
	})
}

// checkLine fails t unless msg is one printable line of bounded length.
func checkLine(t *testing.T, what, msg string) {
	t.Helper()
	if msg == "" || len(msg) > 8192 {
		t.Fatalf("%s of %d bytes", what, len(msg))
	}
	if safetext.Line(msg) != msg {
		t.Fatalf("%s holds characters a terminal would act on: %q", what, msg)
	}
}
