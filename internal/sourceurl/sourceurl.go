// Package sourceurl knows every kind of --source: the table of schemes
// (Schemes) says, for each, what its sources start with, whether it is
// reached over the network, how to check one, how to show one without its
// secrets, and how to open it. The asr command, the appliance (kernel
// command line, DHCP, DNS-SD) and the help text all read that table, so
// they accept and describe the same sources.
//
// A new scheme is one entry in Schemes and one file holding its functions.
package sourceurl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/source"
)

// Options say how to reach network sources.
type Options struct {
	CACert    string        // https: extra trusted CAs (PEM)
	Checksum  string        // raw images over http(s): "sha256:HEX"
	Timeout   time.Duration // network sources: give up after this long without data
	Retries   int           // http(s): reconnections in a row without progress
	Interface string        // asr://: join the group on this interface
	Name      string        // asr://: how the server's log names this client
	AllBlocks bool          // raw images (local, http(s)) and devices: copy free space too
	MAC       string        // asr://: this machine's network card, for the server's table
	Disk      string        // asr://: the target, for the server's table
	MaxSize   int64         // the target's size: sources measured by reading stop past it; 0: no limit
	// SpoolDir: compressed raw images (local, http(s)) are decompressed
	// once into an unnamed temporary file there and mapped by their
	// filesystems; empty: they are read whole (source.Options.SpoolDir).
	SpoolDir string
	// Log hears retries and checksum decisions, one line each.
	Log func(format string, a ...any)
}

// Scheme is one kind of source.
type Scheme struct {
	// Prefix is what every source of this kind starts with ("http://");
	// empty for the local entry, which takes what no other entry does.
	Prefix string
	// Network is true for sources reached over the network: the only ones
	// an appliance can be told about (kernel command line, DHCP, DNS-SD).
	Network bool
	// Example is a source of this kind in the placeholders of messages
	// ("http://HOST/IMAGE").
	Example string
	// Help describes the scheme in 'asr help restore': lines of a two-column
	// list, the first column 22 characters wide, no indent.
	Help string
	// Check says what is wrong with s, which starts with Prefix, before
	// anything is opened: the reason alone, callers name s.
	Check func(s string) error
	// Redact returns s fit for a log: without passwords or signatures.
	Redact func(s string) string
	// Open opens s, which Check accepted.
	Open func(ctx context.Context, s string, o Options) (source.Source, error)
}

// ErrChecksumLocal is returned for --checksum with a local source.
var ErrChecksumLocal = errors.New("--checksum applies to raw images over HTTP; local sources are checked as they are read")

// ErrUnknownScheme is Check's answer for a URL of no known scheme.
var ErrUnknownScheme = errors.New("unknown scheme")

// Lookup returns the scheme of s: the entry whose prefix s starts with
// (schemes are case-insensitive), else the local one.
func Lookup(s string) Scheme {
	low := strings.ToLower(s)
	var local Scheme
	for _, sc := range Schemes() {
		if sc.Prefix == "" {
			local = sc
		} else if strings.HasPrefix(low, sc.Prefix) {
			return sc
		}
	}
	return local
}

// Check says what is wrong with s, naming it (redacted), or nil.
func Check(s string) error {
	if err := Lookup(s).Check(s); err != nil {
		return fmt.Errorf("source %s: %w", Redact(s), err)
	}
	return nil
}

// CheckNetwork is Check for the places that take only network sources
// (the appliance): the reason alone, callers name s.
func CheckNetwork(s string) error {
	sc := Lookup(s)
	if !sc.Network {
		return fmt.Errorf("%w: give %s", ErrUnknownScheme, NetworkURLs())
	}
	return sc.Check(s)
}

// NetworkURLs lists the network schemes for messages: "an http://,
// https:// or asr:// URL".
func NetworkURLs() string {
	var p []string
	for _, sc := range Schemes() {
		if sc.Network {
			p = append(p, sc.Prefix)
		}
	}
	return "an " + orList(p) + " URL"
}

// NetworkExamples lists an example of each network scheme, each after
// before: NetworkExamples("asr.source=") is "asr.source=http://HOST/IMAGE,
// asr.source=https://HOST/IMAGE or asr.source=asr://HOST".
func NetworkExamples(before string) string {
	var p []string
	for _, sc := range Schemes() {
		if sc.Network {
			p = append(p, before+sc.Example)
		}
	}
	return orList(p)
}

func orList(p []string) string {
	if len(p) < 2 {
		return strings.Join(p, "")
	}
	return strings.Join(p[:len(p)-1], ", ") + " or " + p[len(p)-1]
}

// Redact returns s without its secrets, as its scheme shows it.
func Redact(s string) string { return Lookup(s).Redact(s) }

// Help is the SOURCE list of 'asr help restore', every line indented by
// indent.
func Help(indent string) string {
	var b strings.Builder
	for _, sc := range Schemes() {
		if sc.Help == "" {
			continue // described with the entry before (https with http)
		}
		for _, l := range strings.Split(strings.TrimRight(sc.Help, "\n"), "\n") {
			b.WriteString(strings.TrimRight(indent+l, " ") + "\n")
		}
	}
	return b.String()
}

// Open checks and opens s. Its errors and log lines are redacted: the
// transports below quote URLs whole (net/http's *url.Error does).
func Open(ctx context.Context, s string, o Options) (source.Source, error) {
	if err := Check(s); err != nil {
		return nil, err
	}
	if o.Log != nil {
		log := o.Log
		o.Log = func(format string, a ...any) { log("%s", redact.Text(fmt.Sprintf(format, a...))) }
	}
	src, err := Lookup(s).Open(ctx, s, o)
	return src, redact.Error(err)
}
