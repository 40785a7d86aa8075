package main

import (
	"context"
	"errors"
	"flag"
	"time"

	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/sourceurl"
)

// sourceFlags are the options that say how to reach a source.
type sourceFlags struct {
	cacert   *string
	checksum *string
	timeout  *int
	retries  *int
	iface    *string
	all      *bool
	// spoolDir is where restore decompresses a compressed raw image to map
	// it (spoolDir); empty for the commands that do not write a disk.
	spoolDir string
}

func addSourceFlags(fs *flag.FlagSet) sourceFlags {
	return sourceFlags{
		cacert:   fs.String("cacert", "", "https:// and oci://: also trust the CA certificates in `FILE`"),
		checksum: fs.String("checksum", "", "raw images over http(s): the SHA-256 of the file as served, as `sha256:HEX`; else IMG.sha256 beside it is used when the server has one (a 404 means none; any other failure to fetch it is an error); without either, the summary says the download itself was not checked"),
		timeout:  fs.Int("timeout", 30, "network sources: give up after this many `SECONDS` without data; http(s): every wait counts, the first answer and IMG.sha256 included, and a connection quiet for half of it is reconnected"),
		retries:  fs.Int("retries", 5, "http(s):// and oci://: `N` reconnections in a row without progress before giving up"),
		iface:    fs.String("interface", "", "asr://: join the multicast group on interface `IF`"),
		all:      fs.Bool("allblocks", false, "a raw image or device source: copy free space too, byte for byte"),
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
// disk names the target for a multicast server's table.
func openSource(ctx context.Context, s, disk string, maxSize int64, f sourceFlags, log func(format string, a ...any)) (source.Source, error) {
	if err := sourceurl.Check(s); err != nil {
		return nil, usageError("%v", err)
	}
	src, err := sourceurl.Open(ctx, s, sourceurl.Options{
		CACert: *f.cacert, Checksum: *f.checksum, Timeout: time.Duration(*f.timeout) * time.Second,
		Retries: *f.retries, Interface: *f.iface, Disk: disk, Log: log, AllBlocks: *f.all, MaxSize: maxSize,
		SpoolDir: f.spoolDir,
	})
	if errors.Is(err, sourceurl.ErrChecksumLocal) {
		return nil, usageError("%v", err)
	}
	return src, err
}

// hint says, in this command's terms, what to do about a source error that
// the source package reports as a type rather than naming our flags.
func hint(err error) string {
	var stall *source.StallError
	if errors.As(err, &stall) {
		return " (--timeout: raise it if the server is only slow)"
	}
	return ""
}

// spoolDir is where a compressed raw disk is decompressed once so that its
// filesystems can be mapped: $TMPDIR, else /var/tmp, which is on disk where
// /tmp is often in memory (a tmpfs is refused: the copy would cost as much
// RAM as the disk).
func spoolDir(e env) string {
	if d := e.getenv("TMPDIR"); d != "" {
		return d
	}
	return "/var/tmp"
}
