package appliance

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/asrlinux/asr/internal/safetext"
	"github.com/asrlinux/asr/internal/sourceurl"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// SourceOption is the DHCP option that carries the source URL, for a
// machine whose kernel command line names none: a text option such as
// "asr://198.18.0.1" or "http://server/images/lab.asr". 224 is the first
// of the site-specific options (RFC 2132 section 2, RFC 3942), which no
// standard and no common vendor uses; the appliance asks for it in its
// parameter request list, so servers that send only requested options
// (dnsmasq, ISC dhcpd) send it. The examples under appliance/examples set it.
const SourceOption = 224

// sourceOptionCode is SourceOption as insomniacslk/dhcp names options.
var sourceOptionCode = dhcpv4.GenericOptionCode(SourceOption)

// findSource decides where the image comes from, in this order:
//  1. asr.source= on the kernel command line;
//  2. DHCP option 224 (SourceOption) of the first lease that has it.
//
// It returns the URL and how it was found ("kernel command line", "DHCP
// option 224 from 198.18.0.1 on eth0"). When nothing names a source, the
// error says what was tried, so an admin knows what to configure. A URL
// from DHCP is checked as one from the command line is: a bad one is an
// error naming the DHCP server that sent it, never silently skipped.
func findSource(cfg Config, leases []Lease) (url, how string, err error) {
	if cfg.Source != "" {
		return cfg.Source, "kernel command line", nil
	}
	for _, l := range leases {
		if l.Source == "" {
			continue
		}
		how := fmt.Sprintf("DHCP option %d from %s on %s", SourceOption, l.Server, l.Interface)
		if err := checkOptionText(l.Source); err != nil {
			return "", "", fmt.Errorf("%s: %w", how, err)
		}
		if err := checkSourceURL(l.Source); err != nil {
			return "", "", fmt.Errorf("%s: %w", how, err)
		}
		return l.Source, how, nil
	}
	var ifs []string
	for _, l := range leases {
		ifs = append(ifs, l.Interface)
	}
	return "", "", fmt.Errorf("%w: no asr.source= on the kernel command line, and no DHCP option %d in the leases on %s; "+
		"give %s, or set DHCP option %d to that URL",
		errNoSource, SourceOption, strings.Join(ifs, ", "), sourceurl.NetworkExamples("asr.source="), SourceOption)
}

// errNoSource is findSource's answer when nothing names a source: the
// appliance then browses DNS-SD.
var errNoSource = errors.New("no source")

// checkSourceURL accepts the URLs the appliance can restore from: those
// of the network schemes (sourceurl.Schemes).
func checkSourceURL(s string) error {
	if err := sourceurl.CheckNetwork(s); err != nil {
		return fmt.Errorf("source %q: %w", safetext.Line(sourceurl.Redact(s)), err)
	}
	return nil
}

// maxOptionURL bounds a source URL from DHCP: one option holds 255 bytes,
// and a long option split in parts (RFC 3396) has no business being longer.
const maxOptionURL = 2048

// checkOptionText refuses what a DHCP server may send but no URL holds:
// control characters (which would reach the console as they are) and
// megabytes of text.
func checkOptionText(s string) error {
	if len(s) > maxOptionURL {
		return fmt.Errorf("the source is %d bytes long, more than the %d a URL may have here: %s", len(s), maxOptionURL, safetext.Short(s, 80))
	}
	if safetext.Line(s) != s {
		return fmt.Errorf("the source holds control characters: %s", safetext.Short(s, 200))
	}
	return nil
}

// sourceFromLease reads SourceOption from a DHCP reply: text, of which a
// trailing NUL (some servers send C strings) and spaces are dropped.
func sourceFromLease(m *dhcpv4.DHCPv4) string {
	if m == nil {
		return ""
	}
	return strings.TrimFunc(string(m.Options.Get(sourceOptionCode)), func(r rune) bool { return r == 0 || unicode.IsSpace(r) })
}
