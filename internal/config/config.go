// Package config reads the multicast server's configuration: a property list
// with Apple's asr keys, in XML or binary form (what `defaults write`
// produces), with the same defaults.
//
// It validates and nothing else: it opens no sockets.
package config

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"howett.net/plist"

	"github.com/asrlinux/asr/internal/safetext"
)

// Keys, as Apple's asr spells them.
const (
	KeyMulticastAddress = "Multicast Address"
	KeyDataRate         = "Data Rate"
	KeyClientDataRate   = "Client Data Rate"
	KeyDNSSD            = "DNS Service Discovery"
	KeyLoopSuspend      = "Loop Suspend"
	KeyTTL              = "Multicast TTL"
	KeyPort             = "Port"
	// KeyHTTPAddress is ours, not Apple's: where asr server serves its
	// dashboard and metrics (asr server --http overrides it).
	KeyHTTPAddress = "HTTP Address"
	// KeyMinClients and KeyClientWait are ours too (udp-sender's
	// --min-receivers and --max-wait): a lab re-imaged at once gets one
	// pass for every machine, not one for the first and a second for
	// those that joined a moment later.
	KeyMinClients = "Minimum Clients"
	KeyClientWait = "Client Wait"
)

// DefaultClientWait is how long a server with Minimum Clients waits, after
// the first client joined, for the others: machines powered on together
// boot within a minute or two of each other.
const DefaultClientWait = 5 * time.Minute

// MaxMinClients is the most clients a server can be told to wait for: the
// control connections it accepts at once.
const MaxMinClients = 512

// maxClientWait bounds Client Wait (seconds): a day.
const maxClientWait = 86400

// MinDataRate is the lowest Data Rate and Client Data Rate accepted, in bytes
// per second: below it a 1 GiB image takes more than three hours a pass,
// which is a typo (a rate in megabytes, or bits) rather than a choice.
const MinDataRate = 100_000

// maxDataRate is far above any network a multicast stream runs on.
const maxDataRate = 1 << 40

// maxFileSize bounds what Load reads.
const maxFileSize = 1 << 20

// Server is a validated server configuration.
type Server struct {
	Group          netip.Addr // multicast group for data
	DataRate       int64      // bytes per second
	ClientDataRate int64      // bytes per second; 0: not set
	DNSSD          bool
	LoopSuspend    int // passes with no client before the stream pauses; 0: never
	TTL            int
	Port           int // TCP control port; the UDP data port is Port+1
	// HTTPAddress is where the dashboard listens (IP:port); invalid when
	// not set.
	HTTPAddress netip.AddrPort
	// MinClients is how many clients must have joined before the stream
	// starts (or restarts after Loop Suspend); 1 starts it with the first.
	MinClients int
	// ClientWait is the longest the stream waits for MinClients after the
	// first client joined; it then starts with those there are.
	ClientWait time.Duration
	// Warnings lists keys that were ignored, for the caller to print.
	Warnings []string
}

// StreamRate is the rate the stream is sent at: Data Rate, lowered to
// Client Data Rate when that is set and smaller.
func (s *Server) StreamRate() int64 {
	if s.ClientDataRate > 0 && s.ClientDataRate < s.DataRate {
		return s.ClientDataRate
	}
	return s.DataRate
}

// Load reads and validates a configuration file.
func Load(path string) (*Server, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	defer f.Close()
	// A configuration is a few hundred bytes: a larger file is not one,
	// and must not be read whole.
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("config %s: larger than %d KiB: not a server configuration", path, maxFileSize>>10)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return s, nil
}

// Parse validates a configuration's bytes (XML, binary or OpenStep plist).
func Parse(b []byte) (*Server, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("the file is empty: want an XML or binary property list with at least %q and %q", KeyMulticastAddress, KeyDataRate)
	}
	var m map[string]any
	if _, err := plist.Unmarshal(b, &m); err != nil {
		if bytes.Contains(b, []byte("<plist")) || bytes.HasPrefix(b, []byte("bplist")) {
			return nil, fmt.Errorf("not a readable property list: %s", safetext.Short(err.Error(), 200))
		}
		return nil, fmt.Errorf("not a property list dictionary (want XML or binary plist): %s", safetext.Short(err.Error(), 200))
	}
	if k := duplicateKey(b); k != "" {
		return nil, fmt.Errorf("key %s appears more than once: keep one (which one was meant cannot be told)", quote(k))
	}
	s := &Server{DNSSD: true, TTL: 3, Port: 7800, MinClients: 1, ClientWait: DefaultClientWait}
	keys := []string{KeyMulticastAddress, KeyDataRate, KeyClientDataRate, KeyDNSSD, KeyLoopSuspend, KeyTTL, KeyPort, KeyHTTPAddress, KeyMinClients, KeyClientWait}
	known := map[string]bool{}
	for _, k := range keys {
		known[k] = true
	}
	var unknown []string
	for k := range m {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		s.Warnings = append(s.Warnings, fmt.Sprintf("unknown key %s ignored (known keys: %s)", quote(k), strings.Join(keys, ", ")))
	}

	addr, ok := m[KeyMulticastAddress]
	if !ok {
		return nil, fmt.Errorf("%q is required (a multicast group such as 239.255.1.1)", KeyMulticastAddress)
	}
	as, ok := addr.(string)
	if !ok {
		return nil, fmt.Errorf("%q must be a string, not %s", KeyMulticastAddress, typeName(addr))
	}
	g, err := netip.ParseAddr(as)
	if err != nil || !g.Is4() || !g.IsMulticast() {
		return nil, fmt.Errorf("%q %s is not an IPv4 multicast address (224.0.0.0/4; use 239.x.x.x on a private network)", KeyMulticastAddress, quote(as))
	}
	if g.IsLinkLocalMulticast() {
		return nil, fmt.Errorf("%q %s is reserved for link-local control traffic: use 239.x.x.x", KeyMulticastAddress, as)
	}
	s.Group = g

	if _, ok := m[KeyDataRate]; !ok {
		return nil, fmt.Errorf("%q is required (bytes per second, such as 6000000)", KeyDataRate)
	}
	if s.DataRate, err = intKey(m, KeyDataRate, MinDataRate, maxDataRate); err != nil {
		return nil, err
	}
	if _, ok := m[KeyClientDataRate]; ok {
		if s.ClientDataRate, err = intKey(m, KeyClientDataRate, MinDataRate, maxDataRate); err != nil {
			return nil, err
		}
	}
	if v, ok := m[KeyDNSSD]; ok {
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%q must be a boolean (<true/> or <false/>), not %s", KeyDNSSD, typeName(v))
		}
		s.DNSSD = b
	}
	if _, ok := m[KeyLoopSuspend]; ok {
		n, err := intKey(m, KeyLoopSuspend, 0, 1<<31)
		if err != nil {
			return nil, err
		}
		s.LoopSuspend = int(n)
	}
	if _, ok := m[KeyTTL]; ok {
		n, err := intKey(m, KeyTTL, 1, 255)
		if err != nil {
			return nil, err
		}
		s.TTL = int(n)
	}
	if _, ok := m[KeyPort]; ok {
		n, err := intKey(m, KeyPort, 1, 65534)
		if err != nil {
			return nil, err
		}
		s.Port = int(n)
	}
	if v, ok := m[KeyHTTPAddress]; ok {
		str, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%q must be a string, not %s", KeyHTTPAddress, typeName(v))
		}
		if s.HTTPAddress, err = ParseHTTPAddress(str); err != nil {
			return nil, fmt.Errorf("%q: %w", KeyHTTPAddress, err)
		}
	}
	if _, ok := m[KeyMinClients]; ok {
		n, err := intKey(m, KeyMinClients, 1, MaxMinClients)
		if err != nil {
			return nil, err
		}
		s.MinClients = int(n)
	}
	if _, ok := m[KeyClientWait]; ok {
		n, err := intKey(m, KeyClientWait, 1, maxClientWait)
		if err != nil {
			return nil, err
		}
		s.ClientWait = time.Duration(n) * time.Second
		if s.MinClients <= 1 {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%q ignored: the stream waits for clients only with %q above 1", KeyClientWait, KeyMinClients))
		}
	}
	return s, nil
}

// ParseHTTPAddress reads the dashboard's address: an IP address and a
// port, such as 198.18.0.1:8080 or [::1]:8080. A host name is refused
// (the address is the one interface to bind, not a name to look up); so
// is port 0.
func ParseHTTPAddress(str string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(str)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s is not an IP address and port (such as 198.18.0.1:8080, the server's address on the imaging network; 0.0.0.0:8080 for every interface)", quote(str))
	}
	return ap, nil
}

// intKey reads a whole number in [lo, hi]. Property lists written by hand
// sometimes say <real>6000000</real>; a real with no fraction is accepted.
func intKey(m map[string]any, key string, lo, hi int64) (int64, error) {
	var n int64
	switch v := m[key].(type) {
	case uint64:
		if v > math.MaxInt64 {
			return 0, fmt.Errorf("%q %d is out of range", key, v)
		}
		n = int64(v)
	case int64:
		n = v
	case float64:
		if v != math.Trunc(v) || math.IsInf(v, 0) || math.IsNaN(v) {
			return 0, fmt.Errorf("%q must be a whole number, not %v", key, v)
		}
		// Compared as a real: converting 1e300 to an integer first would
		// report a number nobody wrote.
		if v < float64(lo) || v > float64(hi) {
			return 0, fmt.Errorf("%q %v is out of range (allowed: %d to %d)", key, v, lo, hi)
		}
		n = int64(v)
	default:
		return 0, fmt.Errorf("%q must be an integer, not %s", key, typeName(m[key]))
	}
	if n < lo || n > hi {
		if n == 0 {
			return 0, fmt.Errorf("%q must not be 0 (allowed: %d to %d)", key, lo, hi)
		}
		if n < lo && lo == MinDataRate {
			return 0, fmt.Errorf("%q %d is below the minimum of %d bytes per second (give bytes per second, such as 6000000)", key, n, lo)
		}
		return 0, fmt.Errorf("%q %d is out of range (allowed: %d to %d)", key, n, lo, hi)
	}
	return n, nil
}

// quote quotes untrusted text from the file for a message: escaped by %q,
// and cut so that a megabyte key makes no megabyte message.
func quote(s string) string {
	const max = 80
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := 0
	for i := range s {
		if i > max {
			break
		}
		cut = i
	}
	return strconv.Quote(s[:cut]) + "..."
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case uint64, int64:
		return "an integer"
	case float64:
		return "a real"
	case []any:
		return "an array"
	case map[string]any:
		return "a dictionary"
	case []byte:
		return "data"
	}
	return fmt.Sprintf("%T", v)
}
