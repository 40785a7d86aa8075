package source

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/asrlinux/asr/internal/image"
)

// headLen is how many bytes of a file detect needs.
const headLen = 8

// MaxDecoderWindow caps how far back a compressed raw image may refer (the
// xz dictionary, the zstd window): the decoder holds that much in memory, and
// a restore must stay within its 256 MiB whatever the image asks for. xz -9
// and zstd -19 need 64 MiB and 8 MiB.
const MaxDecoderWindow = 64 << 20

// format is what a file is, as its first bytes (and, for a damaged
// prepared image, its name) say. Every transport detects through it.
type format struct {
	prepared bool
	// compression is "gzip", "xz" or "zstd" for a compressed raw image,
	// empty for a plain one; decomp undoes it.
	compression string
	decomp      func(io.ReadCloser) (io.ReadCloser, error)
}

// detect tells a prepared image from a raw one, plain or compressed, by its
// first headLen bytes; name (a path or a URL's path) only catches prepared
// images whose magic is damaged, so they are refused rather than restored as
// raw disks.
func detect(head []byte, name string) format {
	if bytes.HasPrefix(head, []byte(image.Magic)) || looksPrepared(name, head) {
		return format{prepared: true}
	}
	kind, dec := compression(head)
	return format{compression: kind, decomp: dec}
}

// kind names a raw format for Info.Kind.
func (f format) kind() string {
	if f.compression != "" {
		return f.compression + "-compressed raw image"
	}
	return "raw image"
}

// looksPrepared catches a prepared image whose magic is damaged: the name
// says .asr, or the first bytes miss the magic by a byte or two.
func looksPrepared(name string, head []byte) bool {
	if strings.HasSuffix(strings.ToLower(name), ".asr") {
		return true
	}
	if len(head) < len(image.Magic) {
		return false
	}
	diff := 0
	for i := range len(image.Magic) {
		if head[i] != image.Magic[i] {
			diff++
		}
	}
	return diff <= 2
}

// compression recognises gzip, xz and zstd by their magic numbers. The
// decoders it returns refuse streams that need more than MaxDecoderWindow.
func compression(head []byte) (string, func(io.ReadCloser) (io.ReadCloser, error)) {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return "gzip", func(r io.ReadCloser) (io.ReadCloser, error) {
			z, err := gzip.NewReader(r)
			if err != nil {
				return nil, err
			}
			return z, nil
		}
	case bytes.HasPrefix(head, []byte(xzMagic)):
		return "xz", func(r io.ReadCloser) (io.ReadCloser, error) {
			z, err := xz.NewReader(newXZGuard(r, MaxDecoderWindow))
			if err != nil {
				return nil, err
			}
			return io.NopCloser(z), nil
		}
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd", func(r io.ReadCloser) (io.ReadCloser, error) {
			z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxWindow(MaxDecoderWindow), zstd.WithDecoderMaxMemory(MaxDecoderWindow))
			if err != nil {
				return nil, err
			}
			return zstdReader{d: z}, nil
		}
	}
	return "", nil
}

// zstdReader says what a too-large window means and how to avoid it. It
// hides the decoder's WriteTo, which io.Copy would call instead of Read.
type zstdReader struct{ d *zstd.Decoder }

func (z zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		err = &WindowError{Format: "zstd", Max: MaxDecoderWindow}
	}
	return n, err
}

func (z zstdReader) Close() error { z.d.Close(); return nil }

// Decompressor returns a reader that undoes the compression that head (the
// first bytes of a stream) announces, or nil for an uncompressed stream.
func Decompressor(head []byte) (kind string, wrap func(io.ReadCloser) (io.ReadCloser, error)) {
	return compression(head)
}

// measure reads a stream to its end and returns its length, or a
// *TooBigError as soon as it exceeds limit (0: no limit), so an endless
// stream or a decompression bomb costs no more than the target could hold.
func measure(open func() (io.ReadCloser, error), name string, limit int64) (int64, error) {
	r, err := open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if limit <= 0 {
		return io.Copy(io.Discard, r)
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r, limit+1))
	if err != nil {
		return n, err
	}
	if n > limit {
		return n, &TooBigError{Source: name, Limit: limit}
	}
	return n, nil
}
