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
	"github.com/asrlinux/asr/internal/trust"
)

// BrowseWait is how long the appliance listens for DNS-SD answers: asr
// servers answer within milliseconds on a LAN; the rest is slack for a
// busy network and a slow guest.
const BrowseWait = 3 * time.Second

// DiscoverDNSSD finds the source by DNS-SD, the last resort when neither the
// kernel command line nor DHCP named one: it browses for _asr._tcp on each
// interface that got a lease, for BrowseWait, and returns asr://ADDR:PORT.
// With trusted keys, servers whose advertisement names no trusted signer
// are left out first (LeaveOutUntrusted), each with a console line. One
// server found is used; several are told apart by image (asr.image=, the
// image's file name with or without ".asr"); otherwise it refuses and lists
// them all, since restoring the wrong image is worse than stopping.
func DiscoverDNSSD(ctx context.Context, image string, keys []trust.Key, ifaces []string, logf func(string, ...any)) (string, error) {
	found, err := browseAll(ctx, ifaces)
	if err != nil {
		return "", err
	}
	src, err := chooseTrusted(image, keys, found, logf)
	if err != nil {
		return "", err
	}
	logf("source: found by DNS-SD: %s", describe(src))
	return "asr://" + net.JoinHostPort(src.Addr.String(), strconv.Itoa(src.Port)), nil
}

// chooseTrusted is ChooseServer among the servers LeaveOutUntrusted keeps.
// When it leaves some out, the console lists them, and a refusal says so:
// "no server" is wrong when three answered with images nobody signed.
func chooseTrusted(image string, keys []trust.Key, found []dnssd.Service, logf func(string, ...any)) (dnssd.Service, error) {
	kept, left := LeaveOutUntrusted(keys, found)
	for _, l := range left {
		logf("source: DNS-SD: left out: %s", l)
	}
	if len(left) > 0 && len(kept) == 0 {
		n := fmt.Sprintf("%d asr servers", len(found))
		if len(found) == 1 {
			n = "1 asr server"
		}
		return dnssd.Service{}, fmt.Errorf("no source: DNS-SD found %s, and none serves an image signed by a key trusted here (%s): left out: %s; sign the image with asr sign, or give asr.source=",
			n, trust.IDList(keyIDs(keys)), strings.Join(left, "; "))
	}
	src, err := ChooseServer(image, kept)
	if err != nil && len(left) > 0 {
		return dnssd.Service{}, fmt.Errorf("%w (left out, not signed by a key trusted here: %s)", err, strings.Join(left, "; "))
	}
	return src, err
}

// LeaveOutUntrusted splits the servers DNS-SD found, when any key is
// trusted: kept are those whose TXT signer= names a trusted key; each other
// is described in left, with why ("unsigned", "signed by KEYID, not trusted
// here"). The advertisement proves nothing (anyone can claim any key ID):
// the image is still checked against its signatures when it is opened. The
// filter keeps a server that says it serves something untrusted from
// making the choice ambiguous or being chosen. With no keys it keeps all.
func LeaveOutUntrusted(keys []trust.Key, found []dnssd.Service) (kept []dnssd.Service, left []string) {
	if len(keys) == 0 {
		return found, nil
	}
	for _, s := range found {
		var ids []string
		trusted := false
		for _, f := range strings.Split(s.Signer, ",") {
			id, err := trust.ParseID(f)
			if f == "" || err != nil {
				continue
			}
			ids = append(ids, trust.FormatID(id))
			for _, k := range keys {
				trusted = trusted || k.ID == id
			}
		}
		switch {
		case trusted:
			kept = append(kept, s)
		case len(ids) == 0:
			left = append(left, describe(s)+" (unsigned)")
		default:
			left = append(left, fmt.Sprintf("%s (signed by %s, not trusted here)", describe(s), strings.Join(ids, ", ")))
		}
	}
	return kept, left
}

func keyIDs(keys []trust.Key) []uint64 {
	ids := make([]uint64, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
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
