package main

import (
	"context"
	"flag"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
	"github.com/asrlinux/asr/internal/source"
)

// sourceFlags are the options that say how to reach a source.
type sourceFlags struct {
	cacert   *string
	checksum *string
	timeout  *int
	retries  *int
	iface    *string
}

func addSourceFlags(fs *flag.FlagSet) sourceFlags {
	return sourceFlags{
		cacert:   fs.String("cacert", "", ""),
		checksum: fs.String("checksum", "", ""),
		timeout:  fs.Int("timeout", 30, ""),
		retries:  fs.Int("retries", 5, ""),
		iface:    fs.String("interface", "", ""),
	}
}

func (f sourceFlags) check() error {
	if *f.timeout <= 0 {
		return usageError("--timeout must be a positive number of seconds")
	}
	if *f.retries <= 0 {
		return usageError("--retries must be at least 1")
	}
	return nil
}

// openSource routes --source to the package that reads it.
// log hears retries and checksum decisions, one line each.
func openSource(ctx context.Context, s string, f sourceFlags, log func(format string, a ...any)) (source.Source, error) {
	switch {
	case strings.HasPrefix(s, "http://"), strings.HasPrefix(s, "https://"):
		return source.OpenHTTP(ctx, s, source.HTTPOptions{
			CACert: *f.cacert, Checksum: *f.checksum,
			Stall: time.Duration(*f.timeout) * time.Second, Retries: *f.retries,
			Log: log,
		})
	case strings.HasPrefix(s, "asr://"):
		return multicast.Open(ctx, s, multicast.ClientOptions{
			Timeout: time.Duration(*f.timeout) * time.Second, Interface: *f.iface, Log: log,
		})
	}
	if *f.checksum != "" {
		return nil, usageError("--checksum applies to raw images over HTTP; local sources are checked as they are read")
	}
	return source.Open(s, source.Options{})
}
