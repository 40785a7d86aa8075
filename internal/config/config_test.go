package config

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writePlist writes d with Python's plistlib, an independent plist writer,
// in XML or binary form. d is a Python expression.
func writePlist(t *testing.T, d string, binary bool) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is missing: run testdata/deps.sh")
	}
	p := filepath.Join(t.TempDir(), "asrconfig.plist")
	fmtName := "FMT_XML"
	if binary {
		fmtName = "FMT_BINARY"
	}
	script := "import plistlib,sys\nd=" + d + "\nopen(sys.argv[1],'wb').write(plistlib.dumps(d, fmt=plistlib." + fmtName + "))"
	if out, err := exec.Command("python3", "-c", script, p).CombinedOutput(); err != nil {
		t.Fatalf("plistlib: %v: %s", err, out)
	}
	return p
}

func TestLoadValid(t *testing.T) {
	for _, binary := range []bool{false, true} {
		p := writePlist(t, `{"Multicast Address": "239.255.1.2", "Data Rate": 25000000, "Client Data Rate": 12000000,
			"DNS Service Discovery": False, "Loop Suspend": 3, "Multicast TTL": 5, "Port": 7900, "Comment": "lab"}`, binary)
		s, err := Load(p)
		if err != nil {
			t.Fatalf("Load(binary=%v) = %v", binary, err)
		}
		want := Server{Group: netip.MustParseAddr("239.255.1.2"), DataRate: 25000000, ClientDataRate: 12000000,
			DNSSD: false, LoopSuspend: 3, TTL: 5, Port: 7900}
		if s.Group != want.Group || s.DataRate != want.DataRate || s.ClientDataRate != want.ClientDataRate ||
			s.DNSSD != want.DNSSD || s.LoopSuspend != want.LoopSuspend || s.TTL != want.TTL || s.Port != want.Port {
			t.Errorf("Load(binary=%v) = %+v, want %+v", binary, *s, want)
		}
		if s.StreamRate() != 12000000 {
			t.Errorf("StreamRate() = %d, want the lower Client Data Rate 12000000", s.StreamRate())
		}
		if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], `"Comment"`) {
			t.Errorf("Warnings = %q, want one naming \"Comment\"", s.Warnings)
		}
	}
}

func TestDefaults(t *testing.T) {
	s, err := Load(writePlist(t, `{"Multicast Address": "239.255.0.9", "Data Rate": 6000000.0}`, false))
	if err != nil {
		t.Fatal(err)
	}
	if !s.DNSSD || s.TTL != 3 || s.Port != 7800 || s.LoopSuspend != 0 || s.StreamRate() != 6000000 {
		t.Errorf("defaults = %+v, want DNS-SD on, TTL 3, port 7800, no loop suspend, rate 6000000", *s)
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, c := range []struct{ plist, want string }{
		{`{"Data Rate": 1000}`, `"Multicast Address" is required`},
		{`{"Multicast Address": "239.255.1.1"}`, `"Data Rate" is required`},
		{`{"Multicast Address": "10.0.0.1", "Data Rate": 1000}`, `is not an IPv4 multicast address`},
		{`{"Multicast Address": "not an address", "Data Rate": 1000}`, `is not an IPv4 multicast address`},
		{`{"Multicast Address": "224.0.0.5", "Data Rate": 1000}`, `reserved for link-local`},
		{`{"Multicast Address": 5, "Data Rate": 1000}`, `"Multicast Address" must be a string, not an integer`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 0}`, `"Data Rate" must not be 0`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": "fast"}`, `"Data Rate" must be an integer, not a string`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1.5}`, `"Data Rate" must be a whole number`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000, "Client Data Rate": 0}`, `"Client Data Rate" must not be 0`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000, "DNS Service Discovery": "yes"}`, `must be a boolean`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000, "Multicast TTL": 300}`, `"Multicast TTL" 300 is out of range`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000, "Port": 70000}`, `"Port" 70000 is out of range`},
	} {
		for _, binary := range []bool{false, true} {
			_, err := Load(writePlist(t, c.plist, binary))
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load(%s, binary=%v) = %v, want one line with %q", c.plist, binary, err, c.want)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "bad.plist")
	os.WriteFile(p, []byte("this is not a plist"), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "property list") {
		t.Errorf("Load(text file) = %v, want a property list error", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.plist")); err == nil {
		t.Error("Load(missing file) succeeded")
	}
}
