// Package dnssd advertises asr servers over multicast DNS and finds them:
// DNS-SD service type _asr._tcp, with the image's name and digest in the TXT
// record, so that appliances on an imaging network find their server with no
// configuration, and avahi-browse or dns-sd list it like any other service.
//
// It wraps github.com/hashicorp/mdns; it knows nothing of images or streams
// beyond the strings it is given.
package dnssd

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/mdns"
)

// ServiceType is asr's DNS-SD service type.
const ServiceType = "_asr._tcp"

// Service is one advertised asr server.
type Service struct {
	Instance string // "lab-server asr"
	Host     string // "lab-server.local."
	Addr     net.IP
	Port     int
	Image    string // from TXT image=
	Digest   string // from TXT digest=
	Signer   string // from TXT signer=: key IDs that signed the image, comma-separated (unchecked)
	TXT      []string
}

// Advertisement is a running advertisement; Stop withdraws it.
type Advertisement struct{ srv *mdns.Server }

// Stop stops answering queries.
func (a *Advertisement) Stop() error { return a.srv.Shutdown() }

// Advertise answers mDNS queries for an asr server on port, reachable at
// ips (nil: this host's IPv4 addresses), serving image with digest. ifi, if
// set, limits it to one interface. extra are more TXT fields ("signer=ID").
func Advertise(port int, ips []net.IP, image, digest string, ifi *net.Interface, extra ...string) (*Advertisement, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "asr-server"
	}
	host = strings.Split(host, ".")[0]
	if ips == nil {
		if ips, err = localIPv4(ifi); err != nil {
			return nil, err
		}
	}
	txt := append([]string{"txtvers=1", "image=" + image, "digest=" + digest}, extra...)
	instance := host + " asr"
	if port != 7800 {
		// A second server on the same host (another image, another port)
		// needs a name of its own, or browsers see only one of them.
		instance += fmt.Sprintf(" %d", port)
	}
	svc, err := mdns.NewMDNSService(instance, ServiceType, "local.", host+".local.", port, ips, txt)
	if err != nil {
		return nil, fmt.Errorf("DNS-SD record: %w", err)
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: svc, Iface: ifi, Logger: quiet()})
	if err != nil {
		return nil, fmt.Errorf("DNS-SD: cannot listen for mDNS queries on UDP 5353: %w", err)
	}
	return &Advertisement{srv: srv}, nil
}

// quiet is a logger for the library's chatter: asr prints its own lines.
func quiet() *log.Logger { return log.New(io.Discard, "", 0) }

func localIPv4(ifi *net.Interface) ([]net.IP, error) {
	var addrs []net.Addr
	var err error
	if ifi != nil {
		addrs, err = ifi.Addrs()
	} else {
		addrs, err = net.InterfaceAddrs()
	}
	if err != nil {
		return nil, fmt.Errorf("listing addresses to advertise: %w", err)
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			ips = append(ips, n.IP.To4())
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("DNS-SD: no IPv4 address to advertise (is the network up?)")
	}
	return ips, nil
}

// Browse asks for asr servers and collects the answers for wait. ifi, if
// set, asks on that interface only.
func Browse(ctx context.Context, wait time.Duration, ifi *net.Interface) ([]Service, error) {
	entries := make(chan *mdns.ServiceEntry, 64)
	found := map[string]Service{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range entries {
			s := Service{Instance: strings.TrimSuffix(e.Name, "."), Host: e.Host, Addr: e.AddrV4, Port: e.Port, TXT: e.InfoFields}
			if !strings.Contains(e.Name, "."+ServiceType+".") {
				continue // another service type answered alongside
			}
			if i := strings.Index(s.Instance, "."+ServiceType); i > 0 {
				s.Instance = unescape(s.Instance[:i])
			}
			s.Image, s.Digest, s.Signer = parseTXT(e.InfoFields)
			if s.Addr == nil {
				continue
			}
			found[s.Instance+"|"+s.Addr.String()] = s
		}
	}()
	params := &mdns.QueryParam{
		Service: ServiceType, Domain: "local", Timeout: wait, Interface: ifi, Entries: entries,
		DisableIPv6: true, Logger: quiet(),
	}
	err := mdns.QueryContext(ctx, params)
	close(entries)
	<-done
	if err != nil {
		return nil, fmt.Errorf("DNS-SD browse: %w", err)
	}
	out := make([]Service, 0, len(found))
	for _, s := range found {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out, nil
}

// unescape undoes DNS label escapes ("lab\ server" is "lab server").
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
				b.WriteByte((s[i+1]-'0')*100 + (s[i+2]-'0')*10 + (s[i+3] - '0'))
				i += 3
				continue
			}
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
