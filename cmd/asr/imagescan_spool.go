package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/source"
)

// spoolCompressed decompresses a compressed disk (st.At nil) once into an
// unnamed temporary file in dir, beside the image being written, so that its
// filesystems are mapped like a plain disk's and free space is not stored.
// The file has no name and vanishes when asr ends, however it ends. When
// no such file can be made there (no room, a tmpfs), it says why and opens
// the source again, to be read whole as before.
func spoolCompressed(ctx context.Context, out *progress.Printer, st *source.Stream, src, dir string) error {
	total := int64(-1)
	if fi, err := os.Stat(src); err == nil {
		total = fi.Size()
	}
	out.Info("%s is a %s: decompressing it once into a temporary file in %s to map its filesystems", src, st.Kind, dir)
	out.Start("Decompressing", total)
	var last int64
	err := st.Spool(ctx, dir, func(n int64) {
		out.Add(n - last)
		last = n
	})
	var se *source.SpoolError
	switch {
	case err == nil:
		out.Finish()
		return nil
	case !errors.As(err, &se):
		out.Fail(err)
		return fmt.Errorf("decompressing %s: %w", src, err)
	}
	out.Fail(se)
	out.Info("%v: every non-zero chunk is kept, free space included (decompress it where there is room for a smaller image)", se)
	st.Close()
	fresh, err := source.OpenStream(src)
	if err != nil {
		return err
	}
	*st = *fresh
	return nil
}
