package appliance

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asrlinux/asr/internal/dnssd"
)

// BrowseWait is how long the appliance listens for DNS-SD answers: asr
// servers answer within milliseconds on a LAN; the rest is slack for a
// busy network and a slow guest.
const BrowseWait = 3 * time.Second

// DiscoverDNSSD finds the source by DNS-SD, the last resort when neither the
// kernel command line nor DHCP named one: it browses for _asr._tcp on each
// interface that got a lease, for BrowseWait, and returns asr://ADDR:PORT.
// One server found is used; several are told apart by image (asr.image=,
// the image's file name with or without ".asr"); otherwise it refuses and
// lists them all, since restoring the wrong image is worse than stopping.
func DiscoverDNSSD(ctx context.Context, image string, ifaces []string, logf func(string, ...any)) (string, error) {
	found, err := browseAll(ctx, ifaces)
	if err != nil {
		return "", err
	}
	src, err := ChooseServer(image, found)
	if err != nil {
		return "", err
	}
	logf("source: found by DNS-SD: %s", describe(src))
	return "asr://" + net.JoinHostPort(src.Addr.String(), strconv.Itoa(src.Port)), nil
}

// browseAll browses on every interface at once and merges the answers: the
// appliance may have several wired links, and mDNS answers stay on a link.
func browseAll(ctx context.Context, ifaces []string) ([]dnssd.Service, error) {
	var mu sync.Mutex
	var all []dnssd.Service
	var errs []string
	var wg sync.WaitGroup
	for _, name := range ifaces {
		wg.Go(func() {
			ifi, err := net.InterfaceByName(name)
			var found []dnssd.Service
			if err == nil {
				found, err = dnssd.Browse(ctx, BrowseWait, ifi)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", name, err))
				return
			}
			all = append(all, found...)
		})
	}
	wg.Wait()
	if len(all) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("DNS-SD browse failed: %s", strings.Join(errs, "; "))
	}
	return dedup(all), nil
}

// dedup drops a server seen on two links: the same instance at the same
// address and port.
func dedup(in []dnssd.Service) []dnssd.Service {
	seen := map[string]bool{}
	var out []dnssd.Service
	for _, s := range in {
		k := s.Instance + "|" + s.Addr.String() + "|" + strconv.Itoa(s.Port)
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out
}

// ChooseServer picks the server to restore from among those DNS-SD found:
// the only one, or the only one serving image. It never guesses.
func ChooseServer(image string, found []dnssd.Service) (dnssd.Service, error) {
	if len(found) == 0 {
		return dnssd.Service{}, fmt.Errorf("no source: no asr server answered DNS-SD (%s) within %s; start one with DNS Service Discovery on, or give asr.source=asr://HOST or http://HOST/IMAGE", dnssd.ServiceType, BrowseWait)
	}
	if image != "" {
		var match []dnssd.Service
		for _, s := range found {
			if s.Image == image || strings.TrimSuffix(s.Image, ".asr") == strings.TrimSuffix(image, ".asr") {
				match = append(match, s)
			}
		}
		switch len(match) {
		case 1:
			return match[0], nil
		case 0:
			return dnssd.Service{}, fmt.Errorf("asr.image=%s: no asr server found by DNS-SD serves it; servers found: %s", image, listServers(found))
		}
		return dnssd.Service{}, fmt.Errorf("asr.image=%s: %d asr servers serve it: %s; refusing to guess, give asr.source=asr://HOST", image, len(match), listServers(match))
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return dnssd.Service{}, fmt.Errorf("%d asr servers found by DNS-SD and no asr.image= to choose: %s; refusing to guess, give asr.image=NAME or asr.source=asr://HOST", len(found), listServers(found))
}

func describe(s dnssd.Service) string {
	return fmt.Sprintf("%q at asr://%s serving %s", s.Instance, net.JoinHostPort(s.Addr.String(), strconv.Itoa(s.Port)), s.Image)
}

func listServers(found []dnssd.Service) string {
	s := make([]string, len(found))
	for i, f := range found {
		s[i] = describe(f)
	}
	return strings.Join(s, "; ")
}
