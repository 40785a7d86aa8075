package appliance

import (
	"net"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/sourceurl"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestFindSource(t *testing.T) {
	eth0 := Lease{Interface: "eth0", Server: "198.18.0.1"}
	withOpt := Lease{Interface: "eth1", Server: "198.18.0.2", Source: "asr://198.18.0.2"}
	for _, c := range []struct {
		name      string
		cfg       Config
		leases    []Lease
		url, how  string
		errSubstr []string
	}{
		{"command line wins over DHCP", Config{Source: "http://a/x.asr"}, []Lease{withOpt}, "http://a/x.asr", "kernel command line", nil},
		{"DHCP option of the lease that has it", Config{}, []Lease{eth0, withOpt}, "asr://198.18.0.2", "DHCP option 224 from 198.18.0.2 on eth1", nil},
		{"nothing names a source", Config{}, []Lease{eth0}, "", "",
			[]string{"no asr.source= on the kernel command line", "no DHCP option 224", "eth0", "set DHCP option 224"}},
		{"a bad URL from DHCP is an error, not skipped", Config{},
			[]Lease{{Interface: "eth0", Server: "198.18.0.9", Source: "tftp://x/y"}, withOpt}, "", "",
			[]string{"DHCP option 224 from 198.18.0.9 on eth0", `"tftp://x/y"`, "give " + sourceurl.NetworkURLs()}},
		{"control characters from DHCP are refused, escaped", Config{},
			[]Lease{{Interface: "eth0", Server: "198.18.0.9", Source: "asr://x\x1b[2J\rforged"}}, "", "",
			[]string{"DHCP option 224 from 198.18.0.9 on eth0", `the source holds control characters: asr://x\x1b[2J\rforged`}},
	} {
		url, how, err := findSource(c.cfg, c.leases)
		if c.errSubstr != nil {
			if err == nil {
				t.Errorf("%s: findSource = %q, %q; want an error", c.name, url, how)
				continue
			}
			for _, s := range c.errSubstr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s: error %q does not say %q", c.name, err, s)
				}
			}
			continue
		}
		if err != nil || url != c.url || how != c.how {
			t.Errorf("%s: findSource = %q, %q, %v; want %q, %q", c.name, url, how, err, c.url, c.how)
		}
	}
}

// TestSourceFromLease reads option 224 out of DHCP packets built and
// parsed by the same library the appliance's client uses.
func TestSourceFromLease(t *testing.T) {
	for _, c := range []struct {
		value []byte
		want  string
	}{
		{[]byte("asr://198.18.0.1"), "asr://198.18.0.1"},
		{[]byte("http://198.18.0.1/lab.asr\x00"), "http://198.18.0.1/lab.asr"}, // a C string
		{nil, ""}, // no option
	} {
		mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(198, 18, 0, 100))}
		if c.value != nil {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(SourceOption), c.value))
		}
		m, err := dhcpv4.New(mods...)
		if err != nil {
			t.Fatal(err)
		}
		wire, err := dhcpv4.FromBytes(m.ToBytes())
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceFromLease(wire); got != c.want {
			t.Errorf("option 224 %q: sourceFromLease = %q, want %q", c.value, got, c.want)
		}
	}
}
