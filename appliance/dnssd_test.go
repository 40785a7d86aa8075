package appliance

import (
	"net"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/dnssd"
)

func TestChooseServer(t *testing.T) {
	a := dnssd.Service{Instance: "lab-a asr", Addr: net.IPv4(198, 18, 0, 1), Port: 7800, Image: "win11.asr"}
	b := dnssd.Service{Instance: "lab-b asr", Addr: net.IPv4(198, 18, 0, 2), Port: 7800, Image: "ubuntu.asr"}
	for _, tc := range []struct {
		image string
		found []dnssd.Service
		want  string // instance chosen, or "" for a refusal
		err   []string
	}{
		{"", []dnssd.Service{a}, "lab-a asr", nil},
		{"", []dnssd.Service{a, b}, "", []string{"2 asr servers", "asr.image=", "198.18.0.1:7800", "198.18.0.2:7800", "win11.asr", "ubuntu.asr"}},
		{"ubuntu", []dnssd.Service{a, b}, "lab-b asr", nil},
		{"win11.asr", []dnssd.Service{a, b}, "lab-a asr", nil},
		{"debian", []dnssd.Service{a, b}, "", []string{"asr.image=debian", "no asr server", "win11.asr", "ubuntu.asr"}},
		{"", nil, "", []string{"no asr server answered", "asr.source="}},
	} {
		got, err := ChooseServer(tc.image, tc.found)
		if tc.want != "" {
			if err != nil || got.Instance != tc.want {
				t.Errorf("ChooseServer(%q, %d servers) = %q, %v; want %q", tc.image, len(tc.found), got.Instance, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("ChooseServer(%q, %d servers) = %q; want a refusal", tc.image, len(tc.found), got.Instance)
			continue
		}
		for _, w := range tc.err {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ChooseServer(%q, %d servers): %q does not say %q", tc.image, len(tc.found), err, w)
			}
		}
	}
}

func TestDedupSameServerOnTwoLinks(t *testing.T) {
	a := dnssd.Service{Instance: "lab-a asr", Addr: net.IPv4(198, 18, 0, 1), Port: 7800}
	if got := dedup([]dnssd.Service{a, a}); len(got) != 1 {
		t.Errorf("dedup of one server seen twice = %d servers, want 1", len(got))
	}
}
