package appliance

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// Lease is an address the appliance got.
type Lease struct {
	Interface string
	Addr      string // "198.18.0.100/24"
	Server    string // the DHCP server
	Gateway   string
	BootFile  string // option 67
	Source    string // option 224 (SourceOption): the source URL, if the server sets it
}

// WiredLinks lists the Ethernet interfaces, whatever their state.
func WiredLinks() ([]netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.EncapType == "ether" && l.Type() == "device" && !strings.HasPrefix(a.Name, "wl") {
			out = append(out, l)
		}
	}
	return out, nil
}

// DHCP brings every wired link up and asks for an IPv4 lease on all of
// them at once; every link that gets one is configured (address, route,
// resolv.conf). It fails when none does before ctx ends.
func DHCP(ctx context.Context, links []netlink.Link, logf func(string, ...any)) ([]Lease, error) {
	if len(links) == 0 {
		return nil, fmt.Errorf("no wired network interface found (is its driver in the initramfs?)")
	}
	cfg := dhclient.Config{Timeout: 4 * time.Second, Retries: 1000, LogLevel: dhclient.LogInfo,
		// Servers send a site-specific option only when asked for it.
		Modifiers4: []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(sourceOptionCode)}}
	var leases []Lease
	for r := range dhclient.SendRequests(ctx, links, true, false, cfg, 10*time.Second) {
		name := r.Interface.Attrs().Name
		if r.Err != nil {
			logf("%s: no DHCP lease: %v", name, r.Err)
			continue
		}
		if err := r.Lease.Configure(); err != nil {
			logf("%s: configuring the lease: %v", name, err)
			continue
		}
		l := Lease{Interface: name}
		if m, _ := r.Lease.Message(); m != nil {
			l.Addr = fmt.Sprintf("%s/%d", m.YourIPAddr, maskBits(m.SubnetMask()))
			l.Server = m.ServerIdentifier().String()
			if gw := m.Router(); len(gw) > 0 {
				l.Gateway = gw[0].String()
			}
			l.BootFile = m.BootFileNameOption()
			l.Source = sourceFromLease(m)
		}
		leases = append(leases, l)
	}
	if len(leases) == 0 {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no DHCP lease on %s within the timeout (asr.timeout): is the cable in and a DHCP server on the network?", names(links))
		}
		return nil, fmt.Errorf("no DHCP lease on %s", names(links))
	}
	return leases, nil
}

func maskBits(m []byte) int {
	n := 0
	for _, b := range m {
		for ; b != 0; b <<= 1 {
			n++
		}
	}
	return n
}

func names(links []netlink.Link) string {
	s := make([]string, len(links))
	for i, l := range links {
		s[i] = l.Attrs().Name
	}
	return strings.Join(s, ", ")
}
