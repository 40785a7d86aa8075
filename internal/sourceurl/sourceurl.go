// Package sourceurl opens a --source by what it names: an http(s):// URL, an
// asr:// multicast server, or a local path (image, raw disk, device). Both the
// asr command and the appliance open sources through it, so they accept the
// same things.
package sourceurl

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
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
	AllBlocks bool          // local raw images and devices: copy free space too
	MAC       string        // asr://: this machine's network card, for the server's table
	Disk      string        // asr://: the target, for the server's table
	MaxSize   int64         // the target's size: sources measured by reading stop past it; 0: no limit
	// Log hears retries and checksum decisions, one line each.
	Log func(format string, a ...any)
}

// ErrChecksumLocal is returned for --checksum with a local source.
var ErrChecksumLocal = errors.New("--checksum applies to raw images over HTTP; local sources are checked as they are read")

// Open opens s.
func Open(ctx context.Context, s string, o Options) (source.Source, error) {
	switch {
	case strings.HasPrefix(s, "http://"), strings.HasPrefix(s, "https://"):
		return source.OpenHTTP(ctx, s, source.HTTPOptions{
			CACert: o.CACert, Checksum: o.Checksum, Stall: o.Timeout, Retries: o.Retries, Log: o.Log, MaxSize: o.MaxSize,
		})
	case strings.HasPrefix(s, "asr://"):
		return multicast.Open(ctx, s, multicast.ClientOptions{
			Timeout: o.Timeout, Interface: o.Interface, Name: o.Name, MAC: o.MAC, Disk: o.Disk, Log: o.Log,
		})
	}
	if o.Checksum != "" {
		return nil, ErrChecksumLocal
	}
	return source.Open(s, source.Options{AllBlocks: o.AllBlocks, MaxSize: o.MaxSize})
}
