package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

// plists writes each Python dict expression twice with Python's plistlib,
// an independent plist writer, as XML and as a binary plist, in one Python
// run (starting Python costs more than the tests themselves). It returns the
// XML and the binary path of each, in order.
func plists(t *testing.T, dicts ...string) (xml, bin []string) {
	t.Helper()
	testenv.RequireTools(t, "python3")
	dir := t.TempDir()
	var script strings.Builder
	script.WriteString("import plistlib\n")
	for i, d := range dicts {
		x := filepath.Join(dir, fmt.Sprintf("%d.xml.plist", i))
		b := filepath.Join(dir, fmt.Sprintf("%d.bin.plist", i))
		fmt.Fprintf(&script, "d=%s\nopen(%q,'wb').write(plistlib.dumps(d, fmt=plistlib.FMT_XML))\nopen(%q,'wb').write(plistlib.dumps(d, fmt=plistlib.FMT_BINARY))\n", d, x, b)
		xml, bin = append(xml, x), append(bin, b)
	}
	if out, err := exec.Command("python3", "-c", script.String()).CombinedOutput(); err != nil {
		t.Fatalf("plistlib: %v: %s", err, out)
	}
	return xml, bin
}

func TestLoadValid(t *testing.T) {
	xml, bin := plists(t, `{"Multicast Address": "239.255.1.2", "Data Rate": 25000000, "Client Data Rate": 12000000,
			"DNS Service Discovery": False, "Loop Suspend": 3, "Multicast TTL": 5, "Port": 7900, "HTTP Address": "198.18.0.1:8080", "Comment": "lab",
			"Minimum Clients": 8, "Client Wait": 90}`)
	for x, p := range []string{xml[0], bin[0]} {
		binary := x == 1
		s, err := Load(p)
		if err != nil {
			t.Fatalf("Load(binary=%v) = %v", binary, err)
		}
		want := Server{Group: netip.MustParseAddr("239.255.1.2"), DataRate: 25000000, ClientDataRate: 12000000,
			DNSSD: false, LoopSuspend: 3, TTL: 5, Port: 7900, HTTPAddress: netip.MustParseAddrPort("198.18.0.1:8080")}
		if s.Group != want.Group || s.DataRate != want.DataRate || s.ClientDataRate != want.ClientDataRate ||
			s.DNSSD != want.DNSSD || s.LoopSuspend != want.LoopSuspend || s.TTL != want.TTL || s.Port != want.Port ||
			s.HTTPAddress != want.HTTPAddress || s.MinClients != 8 || s.ClientWait != 90*time.Second {
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
	xml, _ := plists(t, `{"Multicast Address": "239.255.0.9", "Data Rate": 6000000.0}`)
	s, err := Load(xml[0])
	if err != nil {
		t.Fatal(err)
	}
	if !s.DNSSD || s.TTL != 3 || s.Port != 7800 || s.LoopSuspend != 0 || s.StreamRate() != 6000000 || s.HTTPAddress.IsValid() ||
		s.MinClients != 1 || s.ClientWait != DefaultClientWait || len(s.Warnings) != 0 {
		t.Errorf("defaults = %+v, want DNS-SD on, TTL 3, port 7800, no loop suspend, rate 6000000, no dashboard, start with the first client", *s)
	}
}

// A Client Wait without Minimum Clients does nothing: the admin is told so.
func TestClientWaitAloneIsWarned(t *testing.T) {
	xml, _ := plists(t, `{"Multicast Address": "239.255.0.9", "Data Rate": 6000000, "Client Wait": 60}`)
	s, err := Load(xml[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], `"Client Wait" ignored`) || !strings.Contains(s.Warnings[0], `"Minimum Clients"`) {
		t.Errorf("Warnings = %q, want one saying Client Wait is ignored without Minimum Clients", s.Warnings)
	}
}

func TestLoadRefuses(t *testing.T) {
	cases := []struct{ plist, want string }{
		{`{"Data Rate": 1000000}`, `"Multicast Address" is required`},
		{`{"Multicast Address": "239.255.1.1"}`, `"Data Rate" is required`},
		{`{"Multicast Address": "10.0.0.1", "Data Rate": 1000000}`, `is not an IPv4 multicast address`},
		{`{"Multicast Address": "not an address", "Data Rate": 1000000}`, `is not an IPv4 multicast address`},
		{`{"Multicast Address": "224.0.0.5", "Data Rate": 1000000}`, `reserved for link-local`},
		{`{"Multicast Address": 5, "Data Rate": 1000000}`, `"Multicast Address" must be a string, not an integer`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 0}`, `"Data Rate" must not be 0`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": "fast"}`, `"Data Rate" must be an integer, not a string`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1.5}`, `"Data Rate" must be a whole number`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Client Data Rate": 0}`, `"Client Data Rate" must not be 0`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "DNS Service Discovery": "yes"}`, `must be a boolean`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Multicast TTL": 300}`, `"Multicast TTL" 300 is out of range`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Port": 70000}`, `"Port" 70000 is out of range`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1}`, `"Data Rate" 1 is below the minimum of 100000 bytes per second`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Client Data Rate": 99999}`, `"Client Data Rate" 99999 is below the minimum`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1e300}`, `"Data Rate" 1e+300 is out of range`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": -1e300}`, `"Data Rate" -1e+300 is out of range`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 2**64-1}`, `"Data Rate" 18446744073709551615 is out of range`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "HTTP Address": "imaging.lan:8080"}`, `"HTTP Address": "imaging.lan:8080" is not an IP address and port`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "HTTP Address": "198.18.0.1"}`, `is not an IP address and port`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "HTTP Address": "198.18.0.1:0"}`, `is not an IP address and port`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "HTTP Address": 8080}`, `"HTTP Address" must be a string, not an integer`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Minimum Clients": 0}`, `"Minimum Clients" must not be 0`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Minimum Clients": 513}`, `"Minimum Clients" 513 is out of range (allowed: 1 to 512)`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Minimum Clients": "8"}`, `"Minimum Clients" must be an integer, not a string`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Minimum Clients": 8, "Client Wait": 0}`, `"Client Wait" must not be 0`},
		{`{"Multicast Address": "239.255.1.1", "Data Rate": 1000000, "Minimum Clients": 8, "Client Wait": 86401}`, `"Client Wait" 86401 is out of range`},
	}
	dicts := make([]string, len(cases))
	for i, c := range cases {
		dicts[i] = c.plist
	}
	xml, bin := plists(t, dicts...)
	for i, c := range cases {
		for _, p := range []string{xml[i], bin[i]} {
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load(%s as %s) = %v, want one line with %q", c.plist, filepath.Base(p), err, c.want)
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

// Duplicate keys are refused by name, in XML written by hand and in binary
// plists, whichever of the two values is the valid one.
func TestLoadRefusesDuplicateKeys(t *testing.T) {
	dir := t.TempDir()
	xmlDup := `<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.1.1</string>
<key>Data Rate</key><integer>6000000</integer>
<key>Data Rate</key><integer>60000000</integer>
</dict></plist>`
	p := filepath.Join(dir, "dup.plist")
	os.WriteFile(p, []byte(xmlDup), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), `key "Data Rate" appears more than once`) {
		t.Errorf("Load(XML with Data Rate twice) = %v, want a refusal naming \"Data Rate\"", err)
	}
	// A nested dictionary may reuse its parent's keys: only one level counts.
	nested := strings.Replace(xmlDup, "<key>Data Rate</key><integer>60000000</integer>",
		"<key>Notes</key><dict><key>Data Rate</key><string>x</string></dict>", 1)
	os.WriteFile(p, []byte(nested), 0o644)
	if _, err := Load(p); err != nil {
		t.Errorf("Load(XML with the key again in a nested dict) = %v, want it accepted", err)
	}
	// plistlib writes no duplicates: write "Data Ratf" and rename it.
	_, bin := plists(t, `{"Multicast Address": "239.255.1.1", "Data Rate": 6000000, "Data Ratf": 7000000}`)
	b, err := os.ReadFile(bin[0])
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte("Data Ratf")) != 1 {
		t.Fatalf("binary plist holds \"Data Ratf\" %d times, want 1", bytes.Count(b, []byte("Data Ratf")))
	}
	os.WriteFile(p, bytes.Replace(b, []byte("Data Ratf"), []byte("Data Rate"), 1), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), `key "Data Rate" appears more than once`) {
		t.Errorf("Load(binary plist with Data Rate twice) = %v, want a refusal naming \"Data Rate\"", err)
	}
}

func TestLoadEmpty(t *testing.T) {
	for _, content := range []string{"", " \n\t\n"} {
		p := filepath.Join(t.TempDir(), "empty.plist")
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "the file is empty") {
			t.Errorf("Load(%q) = %v, want \"the file is empty\"", content, err)
		}
	}
	p := filepath.Join(t.TempDir(), "big.plist")
	os.WriteFile(p, bytes.Repeat([]byte(" "), 2<<20), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "larger than 1024 KiB") {
		t.Errorf("Load(2 MiB file) = %v, want a refusal of its size", err)
	}
}
