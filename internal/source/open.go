package source

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/image"
)

// Options tune how a source is read.
type Options struct {
	// ChunkSize cuts raw sources; 0 means image.DefaultChunkSize.
	ChunkSize int
	// AllBlocks reads raw files and devices whole, free space included,
	// instead of mapping their filesystems.
	AllBlocks bool
}

// Open opens a local source: a prepared image, a raw or compressed raw image
// file, or a block device. What it is comes from its first bytes, not its
// name. URLs are not local sources; the caller routes them elsewhere.
func Open(path string, opts Options) (Source, error) {
	if strings.Contains(path, "://") {
		return nil, fmt.Errorf("source %s is a URL, not a local path or device", path)
	}
	cs := opts.ChunkSize
	if cs == 0 {
		cs = image.DefaultChunkSize
	}
	lf, err := openLocal(path)
	if err != nil {
		return nil, err
	}
	f, size := lf.f, lf.size
	// plain is a raw file or a device: mapped by its filesystems, so free
	// space is neither read nor written, unless told otherwise.
	plain := func(kind string) (Source, error) {
		info := Info{Kind: kind, Path: path, Size: size, ChunkSize: cs}
		if !opts.AllBlocks {
			used, err := mapSource(f, size)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("source %s: mapping its filesystems: %w", path, err)
			}
			if used != nil {
				return &mapped{info: info, r: f, used: used, closer: f}, nil
			}
		}
		return &raw{info: info, open: func() (io.ReadCloser, error) { return sectionOf(f, size), nil }, closer: f}, nil
	}
	if lf.device {
		return plain("block device")
	}

	head := make([]byte, 8)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	if bytes.HasPrefix(head, []byte(image.Magic)) || looksPrepared(path, head) {
		s, err := OpenPrepared(path, f, size)
		if err != nil {
			f.Close()
		}
		return s, err
	}
	if kind, dec := compression(head); dec != nil {
		open := func() (io.ReadCloser, error) { return dec(sectionOf(f, size)) }
		// The disk's size is only known once the stream has been read; every
		// check happens before writing, so measure it now.
		usize, err := measure(open)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("source %s: %s stream is damaged: %w", path, kind, err)
		}
		if usize == 0 {
			f.Close()
			return nil, fmt.Errorf("source %s decompresses to nothing", path)
		}
		return &raw{info: Info{Kind: kind + "-compressed raw image", Path: path, Size: usize, ChunkSize: cs}, open: open, closer: f}, nil
	}
	return plain("raw image")
}

// looksPrepared catches a prepared image whose magic is damaged, so it is
// refused rather than restored as if it were a raw disk: the name says .asr,
// or the first bytes miss the magic by a byte or two.
func looksPrepared(path string, head []byte) bool {
	if strings.HasSuffix(strings.ToLower(path), ".asr") {
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

func sectionOf(f *os.File, size int64) io.ReadCloser {
	return io.NopCloser(bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20))
}

// compression recognises gzip, xz and zstd by their magic numbers.
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
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz", func(r io.ReadCloser) (io.ReadCloser, error) {
			z, err := xz.NewReader(r)
			if err != nil {
				return nil, err
			}
			return io.NopCloser(z), nil
		}
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd", func(r io.ReadCloser) (io.ReadCloser, error) {
			z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, err
			}
			return z.IOReadCloser(), nil
		}
	}
	return "", nil
}

// Decompressor returns a reader that undoes the compression that head (the
// first bytes of a stream) announces, or nil for an uncompressed stream.
func Decompressor(head []byte) (kind string, wrap func(io.ReadCloser) (io.ReadCloser, error)) {
	return compression(head)
}

func measure(open func() (io.ReadCloser, error)) (int64, error) {
	r, err := open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return io.Copy(io.Discard, r)
}

// Stream is a raw disk opened for one sequential read, for imagescan.
type Stream struct {
	io.ReadCloser
	Kind string
	// Size is the disk's size, or -1 when only reading will tell
	// (compressed input).
	Size int64
	// Consumed is how many bytes of the file underneath have been read,
	// which gives compressed input a progress figure.
	Consumed func() int64
	// ModTime is the file's modification time; zero for devices.
	ModTime time.Time
	// At reads the same disk at any offset, for mapping its filesystems
	// before the scan; nil for compressed input, which reads only in order.
	At *io.SectionReader
}

// OpenStream opens a raw or compressed raw image file, or a block device,
// for reading once from start to end.
func OpenStream(path string) (*Stream, error) {
	lf, err := openLocal(path)
	if err != nil {
		return nil, err
	}
	f := lf.f
	s := &Stream{Kind: "raw image", Size: lf.size, ModTime: lf.mod}
	if lf.device {
		s.Kind = "block device"
	}
	head := make([]byte, 8)
	n, _ := f.ReadAt(head, 0)
	if bytes.HasPrefix(head[:n], []byte(image.Magic)) {
		f.Close()
		return nil, fmt.Errorf("source %s is already a prepared image", path)
	}
	cr := &countingReader{r: io.NewSectionReader(f, 0, s.Size)}
	s.Consumed = cr.n.Load
	body := io.NopCloser(bufio.NewReaderSize(cr, 1<<20))
	if kind, dec := compression(head[:n]); dec != nil {
		z, err := dec(body)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("source %s: %s stream is damaged: %w", path, kind, err)
		}
		s.Kind, s.Size, body = kind+"-compressed raw image", -1, z
	} else {
		s.At = io.NewSectionReader(f, 0, s.Size)
	}
	s.ReadCloser = closeBoth{body, f}
	return s, nil
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type closeBoth struct {
	io.ReadCloser
	f *os.File
}

func (c closeBoth) Close() error {
	c.ReadCloser.Close()
	return c.f.Close()
}

// local is an opened local file or block device with its size.
type local struct {
	f      *os.File
	size   int64
	device bool
	mod    time.Time // zero for devices
}

// openLocal opens a regular file or a block device for reading and measures
// it; anything else, and an empty file, is refused.
func openLocal(path string) (*local, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("source %s does not exist", path)
		}
		return nil, fmt.Errorf("source %s is not readable: %w", path, errors.Unwrap(err))
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	l := &local{f: f}
	switch {
	case st.Mode().IsRegular():
		l.size, l.mod = st.Size(), st.ModTime()
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		l.device = true
		if l.size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("source %s: reading its size: %w", path, err)
		}
	default:
		f.Close()
		return nil, fmt.Errorf("source %s is neither a file nor a block device", path)
	}
	if l.size == 0 {
		f.Close()
		return nil, fmt.Errorf("source %s is empty", path)
	}
	return l, nil
}
