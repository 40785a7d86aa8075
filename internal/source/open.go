package source

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

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
	// MaxSize is the most a source may hold (the target's size); 0: no
	// limit. A compressed image is measured by decompressing it, and the
	// measuring stops past MaxSize, so a bomb costs no more than that.
	MaxSize int64
	// SpoolDir, if set, is where a compressed raw image is decompressed
	// once, into an unnamed sparse file, so its filesystems are mapped and
	// only their used blocks read and written (see spool). Without it, or
	// when the spool cannot be made there (tmpfs, no room), the image is
	// read whole, as a stream.
	SpoolDir string
	// Log, if set, hears what the opening decided, one line each.
	Log func(format string, a ...any)
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

	head := make([]byte, headLen)
	n, _ := f.ReadAt(head, 0)
	ft := detect(head[:n], path)
	if ft.prepared {
		s, err := OpenPrepared(path, f, size)
		if err != nil {
			f.Close()
		}
		return s, err
	}
	if ft.decomp != nil {
		open := func() (io.ReadCloser, error) { return ft.decomp(sectionOf(f, size)) }
		info := Info{Kind: ft.kind(), Path: path, ChunkSize: cs}
		if !opts.AllBlocks && opts.SpoolDir != "" {
			s, err := openSpooled(info, ft, open, opts)
			var se *SpoolError
			switch {
			case err == nil:
				f.Close() // the spool holds the disk now
				return s, nil
			case !errors.As(err, &se):
				f.Close()
				return nil, err
			}
			logf(opts.Log, "%v: the disk is read whole, free space included", se)
		}
		// The disk's size is only known once the stream has been read; every
		// check happens before writing, so measure it now.
		usize, err := measure(open, path, opts.MaxSize)
		if err != nil {
			f.Close()
			return nil, decompError(path, ft, err)
		}
		if usize == 0 {
			f.Close()
			return nil, fmt.Errorf("source %s decompresses to nothing", path)
		}
		info.Size = usize
		return &raw{info: info, open: open, closer: f}, nil
	}
	if vd := detectVirtualDisk(f, size); vd.Name != "" {
		f.Close()
		return nil, fmt.Errorf("source %s is a %s image, not a raw disk: make a prepared image of it first: asr imagescan --source %s --output IMAGE", path, vd.Name, path)
	}
	return plain("raw image")
}

// openSpooled decompresses a local compressed image into a spool in
// opts.SpoolDir (measuring it on the way) and opens the disk there.
// A *SpoolError says that no spool could be made there.
func openSpooled(info Info, ft format, open func() (io.ReadCloser, error), opts Options) (Source, error) {
	rc, err := open()
	if err != nil {
		return nil, decompError(info.Path, ft, err)
	}
	defer rc.Close()
	logf(opts.Log, "Decompressing %s once into a temporary file in %s, to map its filesystems", info.Path, opts.SpoolDir)
	f, n, err := spool(context.Background(), opts.SpoolDir, rc, info.Path, opts.MaxSize, nil)
	var se *SpoolError
	if errors.As(err, &se) {
		return nil, se
	}
	if err != nil {
		return nil, decompError(info.Path, ft, err)
	}
	if n == 0 {
		f.Close()
		return nil, fmt.Errorf("source %s decompresses to nothing", info.Path)
	}
	return spooled(info, info.Path, f, n)
}

// decompError says what a failure to decompress a local image means.
func decompError(path string, ft format, err error) error {
	var big *TooBigError
	var win *WindowError
	switch {
	case errors.As(err, &big):
		return err
	case errors.As(err, &win):
		return fmt.Errorf("source %s: %w", path, win)
	}
	return fmt.Errorf("source %s: %s stream is damaged: %w", path, ft.compression, err)
}

func logf(log func(string, ...any), format string, a ...any) {
	if log != nil {
		log(format, a...)
	}
}

func sectionOf(f *os.File, size int64) io.ReadCloser {
	return io.NopCloser(bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20))
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

	name string // the path, for messages
}

// OpenStream opens a raw or compressed raw image file, or a block device,
// for reading once from start to end.
func OpenStream(path string) (*Stream, error) {
	lf, err := openLocal(path)
	if err != nil {
		return nil, err
	}
	f := lf.f
	s := &Stream{Kind: "raw image", Size: lf.size, ModTime: lf.mod, name: path}
	if lf.device {
		s.Kind = "block device"
	}
	head := make([]byte, headLen)
	n, _ := f.ReadAt(head, 0)
	ft := detect(head[:n], "")
	if ft.prepared {
		f.Close()
		return nil, fmt.Errorf("source %s is already a prepared image", path)
	}
	cr := &countingReader{r: io.NewSectionReader(f, 0, s.Size)}
	s.Consumed = cr.n.Load
	body := io.NopCloser(bufio.NewReaderSize(cr, 1<<20))
	if ft.decomp != nil {
		z, err := ft.decomp(body)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("source %s: %s stream is damaged: %w", path, ft.compression, err)
		}
		s.Kind, s.Size, body = ft.kind(), -1, z
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
