package sourceurl

import (
	"context"
	"errors"
	"strings"

	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/source"
)

const localHelp = `a prepared image    made by 'asr imagescan' (fastest: zeros are skipped, chunks are
                    decoded in parallel and checked against their SHA-256 before
                    they are written)
a raw disk image    a plain file, or one compressed with gzip, xz or zstd (recognised
                    by content, not name; a compressed image is decompressed once
                    first, because nothing is written before every check, into an
                    unnamed temporary file in $TMPDIR or /var/tmp, so it is mapped
                    like a plain file; on a tmpfs or with too little room it is
                    only measured, and then copied whole).
                    A file named *.asr is always taken for a prepared image, so a
                    damaged one is refused rather than restored as raw bytes
a block device      a clone: a whole disk or one partition onto another. A raw image
                    file or a block device is mapped by its filesystems as imagescan
                    maps a disk: free space is neither read nor written (--allblocks
                    copies it too)
`

// checkLocal refuses what looks like a URL of a scheme not in the table:
// "ftp://h/x" is a typo or a missing feature, not a file name.
func checkLocal(s string) error {
	if s == "" {
		return errors.New("empty: give a prepared image, a raw disk image, a block device, or " + NetworkURLs())
	}
	if scheme, _, ok := strings.Cut(s, "://"); ok && !strings.ContainsAny(scheme, "/.") {
		return errors.New(ErrUnknownScheme.Error() + " " + scheme + "://: give a local path or " + NetworkURLs())
	}
	return nil
}

// redactLocal: a path holds no secrets, but a string that failed checkLocal
// may still be a URL.
func redactLocal(s string) string { return redact.Text(s) }

func openLocal(_ context.Context, s string, o Options) (source.Source, error) {
	if o.Checksum != "" {
		return nil, ErrChecksumLocal
	}
	return source.Open(s, source.Options{AllBlocks: o.AllBlocks, MaxSize: o.MaxSize, SpoolDir: o.SpoolDir, Log: o.Log})
}
