package appliance

import (
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/asrlinux/asr/internal/safetext"
)

// safeLine fails t unless msg is one line a console can print as it is,
// of at most max bytes.
func safeLine(t *testing.T, what, msg string, max int) {
	t.Helper()
	if msg == "" || len(msg) > max {
		t.Fatalf("%s of %d bytes (at most %d): %.200q", what, len(msg), max, msg)
	}
	if safetext.Line(msg) != msg {
		t.Fatalf("%s holds characters a console would act on: %q", what, msg)
	}
}

// FuzzParseCmdline: whatever the kernel command line, a configuration
// ParseCmdline accepts holds values in range and text a console can show,
// and a refusal is one such line.
func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"console=ttyS0 asr.source=http://198.18.0.1/lab.asr asr.noverify asr.after=poweroff asr.timeout=30",
		`asr.source=asr://server asr.target="/dev/disk/by-id/ata-Some Disk_123" asr.debug=1 asr.image=lab`,
		`asr.target=/dev/sda" asr.after=bogus`,
		"asr.source=label:ASRDATA/lab.asr asr.report=https://198.18.0.1:8081/status",
		"asr.timeout=86401 asr.after=shell\tasr.noverify=0\n",
		"asr.after=poweroff asr.onfailure=poweroff asr.debug",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			safeLine(t, "error", err.Error(), 2*len(s)+600)
			return
		}
		if c.Timeout < time.Second || c.Timeout > 86400*time.Second {
			t.Fatalf("accepted timeout %v", c.Timeout)
		}
		if c.After != Reboot && c.After != PowerOff && c.After != Shell {
			t.Fatalf("accepted after %q", c.After)
		}
		if a := c.FailureAction(); a != Wait && a != PowerOff && a != Reboot && a != Shell {
			t.Fatalf("accepted onfailure %q", c.OnFailure)
		}
		if c.Source != "" && !strings.HasPrefix(c.Source, StickScheme) && checkSourceURL(c.Source) != nil {
			t.Fatalf("accepted source %q", c.Source)
		}
		if c.Report != "" && !strings.HasPrefix(c.Report, "http://") && !strings.HasPrefix(c.Report, "https://") {
			t.Fatalf("accepted report URL %q", c.Report)
		}
		for _, v := range []string{c.Source, c.Target, c.Image, c.Report} {
			if safetext.Line(v) != v {
				t.Fatalf("accepted %q, which holds control characters", v)
			}
		}
	})
}

// FuzzSourceOption sends any bytes as DHCP option 224 through a real DHCP
// reply on the wire. What the appliance takes from it is a URL of a known
// scheme with nothing a console would act on; anything else is refused in
// one bounded line naming the DHCP server.
func FuzzSourceOption(f *testing.F) {
	for _, s := range []string{"asr://198.18.0.1", "http://server/images/lab.asr\x00", "  https://x/y  ", "tftp://x/y", "asr://\x1b[2Jevil", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1024 {
			return
		}
		m, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
			dhcpv4.WithServerIP(net.IPv4(198, 18, 0, 1)),
			dhcpv4.WithOption(dhcpv4.OptGeneric(sourceOptionCode, b)))
		if err != nil {
			t.Fatal(err)
		}
		wire, err := dhcpv4.FromBytes(m.ToBytes())
		if err != nil {
			return // the library refuses to read its own packet: nothing reaches us
		}
		s := sourceFromLease(wire)
		if s != strings.TrimSpace(s) || strings.HasSuffix(s, "\x00") {
			t.Fatalf("sourceFromLease = %q: spaces or NUL left around it", s)
		}
		url, how, err := findSource(Config{}, []Lease{{Interface: "eth0", Server: "198.18.0.1", Source: s}})
		if err != nil {
			safeLine(t, "error", err.Error(), 1200)
			if s != "" && !strings.Contains(err.Error(), "DHCP option 224 from 198.18.0.1 on eth0") {
				t.Fatalf("refusal %q does not name the DHCP server", err)
			}
			return
		}
		if url != s || !strings.Contains(how, "198.18.0.1") {
			t.Fatalf("findSource = %q, %q for option %q", url, how, s)
		}
		if checkSourceURL(url) != nil {
			t.Fatalf("accepted %q", url)
		}
		safeLine(t, "accepted URL", url, maxOptionURL)
	})
}

// FuzzRender: whatever a server names its image, whatever an error or a
// console line holds, the status page fits the screen and every row is
// text a console prints as it is.
func FuzzRender(f *testing.F) {
	f.Add("lab.asr", "chunk 7: SHA-256 mismatch", "asr: target: /dev/vda", uint8(4), int64(42), int64(100), uint8(80), uint8(25))
	f.Add("lab\x1b[2J\x00\u202e\xff", "\n\r\t", "\x9b31m", uint8(7), int64(-5), int64(3), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, image, reason, line string, stage uint8, done, total int64, w, h uint8) {
		st := Status{Version: "v", Stage: Stage(stage % 8), Image: image, Server: image, Disk: line, IP: line, MAC: image,
			Step: line, Err: reason, Hint: reason, Result: reason, Done: done, Total: total, Began: time.Unix(1, 0),
			Log: []string{line, image, reason}}
		width, height := max(int(w), 40), max(int(h), 20)
		rows := Render(st, time.Unix(100, 0), int(w), int(h))
		if len(rows) > height {
			t.Fatalf("%d rows on a screen of %d", len(rows), height)
		}
		for _, r := range rows {
			if utf8.RuneCountInString(r) > width || safetext.Line(r) != r {
				t.Fatalf("row %q is wider than %d or holds characters a console would act on", r, width)
			}
		}
	})
}
