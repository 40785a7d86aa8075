package sourceurl

import (
	"context"
	"errors"
	"net/url"
	"strconv"

	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/source"
)

const httpHelp = `http(s)://HOST/IMG  a prepared image on a web server: fetched with range requests on
                    several connections (one stream if the server ignores Range),
                    resuming dropped connections. A raw image (.img) on a server that
                    takes ranges is mapped by its filesystems through range requests,
                    and only its used chunks are fetched (with a checksum to match,
                    it is read whole but only used data is written); a compressed one
                    (.gz, .xz, .zst), or any raw image without ranges, is downloaded
                    once into a temporary file first, as a local one is, and mapped;
                    --allblocks reads them whole. user:password@ in the URL is sent
                    as basic authentication; it and the signatures of presigned URLs
                    (X-Amz-Signature, sig=, token=...) are never printed
`

func checkHTTP(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, secrets included
		}
		return errors.New("not a valid URL (" + err.Error() + "): give http(s)://HOST/IMAGE")
	}
	if u.Hostname() == "" {
		return errors.New("no host: give http(s)://HOST/IMAGE")
	}
	if err := checkPort(u.Port()); err != nil {
		return err
	}
	return nil
}

func checkPort(p string) error {
	if p == "" {
		return nil
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return errors.New("bad port " + strconv.Quote(p) + ": give a number from 1 to 65535")
	}
	return nil
}

func redactURL(s string) string { return redact.URL(s) }

func openHTTP(ctx context.Context, s string, o Options) (source.Source, error) {
	return source.OpenHTTP(ctx, s, source.HTTPOptions{
		CACert: o.CACert, Checksum: o.Checksum, Stall: o.Timeout, Retries: o.Retries, Log: o.Log, MaxSize: o.MaxSize,
		SpoolDir: o.SpoolDir, AllBlocks: o.AllBlocks,
	})
}
