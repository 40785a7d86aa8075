package source

// The hostile-input suite for http(s):// sources: a fault-injecting web
// server (httptest, on 127.0.0.1) that stalls at every phase, drops and
// splices connections, lies in Content-Length and Content-Range, answers
// HTML, 404 and 500, loops redirects or redirects to other schemes, and
// serves bombs. Each case asserts what a user relies on: the restore either
// delivers exactly the image or fails with a message that names the
// problem, within the stall time plus a margin. No root is needed.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/asrlinux/asr/internal/image"
)

const (
	testChunk = 64 << 10
	diskLen   = 2 << 20
	stall     = 1 * time.Second
	// margin is what a failure may take beyond the stall time: a
	// reconnection, the scheduler of a loaded test machine.
	margin = 2 * time.Second
)

// fixture is one disk in every form a server may offer it.
type fixture struct {
	disk, prepared, gz, xz, zst []byte
}

var (
	fixOnce sync.Once
	fix     fixture
)

func fixtures(t *testing.T) fixture {
	t.Helper()
	fixOnce.Do(func() {
		r := rand.New(rand.NewPCG(1, 2))
		d := make([]byte, diskLen)
		for i := range d {
			if (i/testChunk)%4 != 3 { // every fourth chunk zero
				d[i] = byte(r.Uint32())
			}
		}
		fix.disk = d
		p := filepath.Join(t.TempDir(), "disk.asr")
		f, err := os.Create(p)
		if err != nil {
			panic(err)
		}
		if _, _, err := image.Scan(context.Background(), bytes.NewReader(d), f, image.ScanOptions{
			ChunkSize: testChunk, Workers: 2, Created: time.Unix(1, 0), Name: "disk", Tool: "test"}); err != nil {
			panic(err)
		}
		f.Close()
		fix.prepared, _ = os.ReadFile(p)
		fix.gz = gzipOf(d)
		fix.xz = xzOf(d)
		fix.zst = zstdOf(d)
	})
	return fix
}

func gzipOf(d []byte) []byte {
	var b bytes.Buffer
	z := gzip.NewWriter(&b)
	z.Write(d)
	z.Close()
	return b.Bytes()
}

func xzOf(d []byte) []byte {
	var b bytes.Buffer
	z, err := xz.WriterConfig{DictCap: 1 << 20}.NewWriter(&b)
	if err != nil {
		panic(err)
	}
	z.Write(d)
	z.Close()
	return b.Bytes()
}

func zstdOf(d []byte, opts ...zstd.EOption) []byte {
	z, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		panic(err)
	}
	defer z.Close()
	return z.EncodeAll(d, nil)
}

// xzWithDict rewrites the first block header of an xz file to declare a
// dictionary of 2^29*3 = 1536 MiB (properties byte 37), with a valid CRC.
func xzWithDict(t *testing.T, x []byte, props byte) []byte {
	t.Helper()
	x = bytes.Clone(x)
	h := x[12 : 12+(int(x[12])+1)*4]
	if h[1] != 0 || h[2] != 0x21 || h[3] != 1 {
		t.Fatalf("unexpected xz block header % x", h)
	}
	h[4] = props
	crc := crc32.ChecksumIEEE(h[:len(h)-4])
	h[len(h)-4], h[len(h)-3], h[len(h)-2], h[len(h)-1] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
	return x
}

// zstdWithWindow writes a zstd frame that declares a window of 2^log bytes.
func zstdWithWindow(t *testing.T, d []byte, log int) []byte {
	t.Helper()
	z := zstdOf(d, zstd.WithSingleSegment(false), zstd.WithWindowSize(1<<20))
	if z[4]&0x20 != 0 {
		t.Fatalf("zstd frame is single-segment: % x", z[:8])
	}
	z[5] = byte(log-10) << 3
	return z
}

// server is the fault-injecting web server. Its handler sees every request
// with its number (from 0); release ends every stall at cleanup.
type server struct {
	URL     string
	n       atomic.Int32
	release chan struct{}
}

func newServer(t *testing.T, h func(s *server, n int, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{release: make(chan struct{})}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(s, int(s.n.Add(1)-1), w, r)
	}))
	s.URL = hs.URL
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(s.release) })
	return s
}

// stall blocks until the client gives up or the test ends.
func (s *server) stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.release:
	}
}

// rangeOf reads "bytes=A-" or "bytes=A-B"; ok is false without Range.
func rangeOf(r *http.Request, size int64) (a, b int64, ok bool) {
	h := r.Header.Get("Range")
	if h == "" {
		return 0, size - 1, false
	}
	b = size - 1
	if n, _ := fmt.Sscanf(h, "bytes=%d-%d", &a, &b); n == 0 {
		panic("bad range " + h)
	}
	return a, min(b, size-1), true
}

// serveOpts make serve misbehave.
type serveOpts struct {
	noRange bool
	from    int64 // a partial answer sends bytes from this much further on, and says so in Content-Range
	label   int64 // a partial answer's Content-Range is this much off the bytes it sends
	total   int64 // Content-Range's total, when not 0
	length  int64 // Content-Length to claim, when not 0
	cut     bool  // drop the connection when the body reaches byte at of the file
	stall   bool  // stall when the body reaches byte at of the file (at once if it starts past it)
	at      int64
	headers bool // stall before sending headers
	ctype   string
}

// serve answers r with data, honouring Range unless told otherwise.
func (s *server) serve(w http.ResponseWriter, r *http.Request, data []byte, o serveOpts) {
	if o.headers {
		s.stall(r)
		return
	}
	size := int64(len(data))
	a, b, ranged := rangeOf(r, size)
	if o.noRange {
		a, b, ranged = 0, size-1, false
	}
	if ranged && o.from != 0 {
		n := b - a
		a = max(0, min(a+o.from, size-1))
		b = min(a+n, size-1)
	}
	if o.ctype != "" {
		w.Header().Set("Content-Type", o.ctype)
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	n := b - a + 1
	if o.length != 0 {
		n = o.length
	}
	w.Header().Set("Content-Length", fmt.Sprint(n))
	status := http.StatusOK
	if ranged {
		total := size
		if o.total != 0 {
			total = o.total
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a+o.label, b+o.label, total))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	w.(http.Flusher).Flush()
	body := data[a : b+1]
	for off := a; len(body) > 0; {
		k := min(len(body), 16<<10)
		if (o.cut || o.stall) && o.at < off+int64(k) {
			w.Write(body[:max(0, o.at-off)])
			w.(http.Flusher).Flush()
			if o.stall {
				s.stall(r)
			}
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(body[:k]); err != nil {
			return
		}
		body, off = body[k:], off+int64(k)
	}
}

// probe says whether r is the client's first request, for 64 KiB.
// probe reports whether r is one of the requests that open a file: the
// probe of its first 64 KiB, or the first block a raw disk is mapped
// through (rangeBlock; the fixtures' random disk has no partition table
// or filesystem, so no other metadata is read).
func probe(r *http.Request) bool {
	switch r.Header.Get("Range") {
	case "bytes=0-65535", fmt.Sprintf("bytes=0-%d", rangeBlock-1):
		return true
	}
	return false
}

// files serves name -> data; anything else is a 404.
func files(m map[string][]byte, o func(n int, r *http.Request) serveOpts) func(*server, int, http.ResponseWriter, *http.Request) {
	return func(s *server, n int, w http.ResponseWriter, r *http.Request) {
		d, ok := m[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		var so serveOpts
		if o != nil {
			so = o(n, r)
		}
		s.serve(w, r, d, so)
	}
}

// restoreAll opens url and reads the whole disk from it as the restore
// engine would, returning the disk and the time it took.
func restoreAll(url string, opts HTTPOptions) ([]byte, time.Duration, error) {
	start := time.Now()
	if opts.Stall == 0 {
		opts.Stall = stall
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, err := OpenHTTP(ctx, url, opts)
	if err != nil {
		return nil, time.Since(start), err
	}
	defer src.Close()
	info := src.Info()
	out := make([]byte, info.Size)
	var mu sync.Mutex
	err = src.Run(ctx, 4, func(c Chunk) error {
		mu.Lock()
		defer mu.Unlock()
		if !c.Zero {
			if info.Hash().Sum(c.Data) != c.Sum {
				return fmt.Errorf("chunk %d: digest does not match its data", c.Index)
			}
			copy(out[int64(c.Index)*int64(info.ChunkSize):], c.Data)
		}
		return nil
	})
	return out, time.Since(start), err
}

// kinds are the forms of the image the suite serves.
func kinds(f fixture) []struct {
	name string
	data []byte
} {
	return []struct {
		name string
		data []byte
	}{
		{"/disk.asr", f.prepared}, {"/disk.img", f.disk}, {"/disk.img.gz", f.gz},
	}
}

func wantErr(t *testing.T, err error, took time.Duration, limit time.Duration, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("restore succeeded, want an error naming %q", says)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	if took > limit {
		t.Errorf("failing took %v, want at most %v", took.Round(time.Millisecond), limit)
	}
}

func wantDisk(t *testing.T, got []byte, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !bytes.Equal(got, fixtures(t).disk) {
		t.Fatalf("restored disk (%d bytes) differs from the image (%d bytes)", len(got), len(fixtures(t).disk))
	}
}

func TestHTTPGood(t *testing.T) {
	f := fixtures(t)
	for _, noRange := range []bool{false, true} {
		for _, k := range append(kinds(f), struct {
			name string
			data []byte
		}{"/disk.img.xz", f.xz}, struct {
			name string
			data []byte
		}{"/disk.img.zst", f.zst}) {
			t.Run(fmt.Sprintf("%s noRange=%v", k.name, noRange), func(t *testing.T) {
				s := newServer(t, files(map[string][]byte{k.name: k.data}, func(int, *http.Request) serveOpts {
					return serveOpts{noRange: noRange}
				}))
				got, _, err := restoreAll(s.URL+k.name, HTTPOptions{})
				wantDisk(t, got, err)
			})
		}
	}
}

// Every phase of every request is under the stall watchdog: the first
// answer's headers, its first body byte, the middle of the body, and a
// resumed connection.
func TestHTTPStalls(t *testing.T) {
	f := fixtures(t)
	for _, k := range kinds(f) {
		size := int64(len(k.data))
		for _, noRange := range []bool{false, true} {
			phases := []struct {
				name string
				o    func(n int, r *http.Request) serveOpts
			}{
				{"headers", func(int, *http.Request) serveOpts { return serveOpts{noRange: noRange, headers: true} }},
				{"first byte", func(int, *http.Request) serveOpts { return serveOpts{noRange: noRange, stall: true, at: 0} }},
				{"mid-body", func(n int, r *http.Request) serveOpts {
					return serveOpts{noRange: noRange, stall: !probe(r) || noRange, at: size / 2}
				}},
				{"on resume", func(n int, r *http.Request) serveOpts {
					switch {
					case probe(r) && !noRange:
						return serveOpts{}
					case n <= 1: // the first request for the body: dropped mid-way
						return serveOpts{noRange: noRange, cut: true, at: size / 2}
					}
					// Every resumption stalls, before or after its headers.
					return serveOpts{noRange: noRange, headers: n%2 == 0, stall: true, at: 0}
				}},
			}
			for _, ph := range phases {
				t.Run(fmt.Sprintf("%s %s noRange=%v", k.name, ph.name, noRange), func(t *testing.T) {
					s := newServer(t, files(map[string][]byte{k.name: k.data}, ph.o))
					var logged atomic.Int32
					_, took, err := restoreAll(s.URL+k.name, HTTPOptions{Log: func(string, ...any) { logged.Add(1) }})
					wantErr(t, err, took, stall+margin, "sent nothing for 1s")
					var se *StallError
					if !errors.As(err, &se) {
						t.Errorf("error %v is not a *StallError", err)
					}
				})
			}
		}
	}
}

// A connection that stalls once is resumed, and the disk is exact.
func TestHTTPStallOnceResumes(t *testing.T) {
	f := fixtures(t)
	for _, k := range kinds(f) {
		for _, noRange := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s noRange=%v", k.name, noRange), func(t *testing.T) {
				var stalled atomic.Bool
				size := int64(len(k.data))
				s := newServer(t, files(map[string][]byte{k.name: k.data}, func(n int, r *http.Request) serveOpts {
					if (noRange || !probe(r)) && !stalled.Swap(true) {
						return serveOpts{noRange: noRange, stall: true, at: size / 2}
					}
					return serveOpts{noRange: noRange}
				}))
				got, _, err := restoreAll(s.URL+k.name, HTTPOptions{Stall: 2 * time.Second})
				wantDisk(t, got, err)
				if !stalled.Load() {
					t.Errorf("the server never stalled: the test tested nothing")
				}
			})
		}
	}
}

// A partial answer must be the bytes asked for: a splice from another
// offset, a Content-Range that lies about where it starts, the file's
// total or the body's length, is refused, never restored.
func TestHTTPContentRangeLies(t *testing.T) {
	f := fixtures(t)
	for _, k := range kinds(f) {
		size := int64(len(k.data))
		lies := []struct {
			name string
			o    serveOpts
			says string
		}{
			{"from the start", serveOpts{from: -size / 2}, "the wrong part of the file"},
			{"label", serveOpts{label: 512}, "the wrong part of the file"},
			{"total", serveOpts{total: size + 1}, "it changed on the server"},
			{"length", serveOpts{length: 100}, "Content-Length says 100"},
		}
		for _, l := range lies {
			t.Run(k.name+" "+l.name, func(t *testing.T) {
				// The first answers are true; the lie comes when the client
				// resumes after a dropped connection, as a broken cache would.
				var cut atomic.Bool
				s := newServer(t, files(map[string][]byte{k.name: k.data}, func(n int, r *http.Request) serveOpts {
					switch {
					case probe(r):
						return serveOpts{}
					case !cut.Swap(true):
						return serveOpts{cut: true, at: size / 2}
					}
					return l.o
				}))
				_, took, err := restoreAll(s.URL+k.name, HTTPOptions{})
				wantErr(t, err, took, margin, "Content-Range", l.says)
			})
		}
	}
}

// A resumed answer that is labelled right but holds other bytes cannot be
// caught by its headers: the chunk digests of a prepared image catch it,
// and so does the published checksum of a raw one.
func TestHTTPSilentSplice(t *testing.T) {
	f := fixtures(t)
	sum := sha256.Sum256(f.disk)
	for _, c := range []struct {
		name string
		data []byte
		says string
	}{
		{"/disk.asr", f.prepared, "fails its BLAKE3-256 check"},
		{"/disk.img", f.disk, "the download's SHA-256 is"},
	} {
		t.Run(c.name, func(t *testing.T) {
			size := int64(len(c.data))
			var cut atomic.Bool
			s := newServer(t, func(s *server, n int, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/disk.img.sha256" {
					fmt.Fprintf(w, "%x  disk.img\n", sum)
					return
				}
				// The header and manifest come in ranges of their own, ending
				// in the first 64 KiB: served true, the splice is in the data.
				_, end, ranged := rangeOf(r, size)
				switch {
				case probe(r) || (ranged && end < 65536):
					s.serve(w, r, c.data, serveOpts{})
				case !cut.Swap(true):
					s.serve(w, r, c.data, serveOpts{cut: true, at: size / 2})
				default: // the resumed part, shifted by 4 KiB
					d := append(bytes.Clone(c.data[4096:]), make([]byte, 4096)...)
					s.serve(w, r, d, serveOpts{})
				}
			})
			_, took, err := restoreAll(s.URL+c.name, HTTPOptions{})
			wantErr(t, err, took, margin, c.says)
		})
	}
}

// The first answer lies too: Content-Range claims another total than the
// length the rest of the file has, or Content-Length more than it sends.
func TestHTTPLengthLies(t *testing.T) {
	f := fixtures(t)
	cases := []struct {
		name string
		file string
		o    serveOpts
		says string
	}{
		{"prepared, Content-Length too long, no ranges", "/disk.asr", serveOpts{noRange: true, length: int64(len(f.prepared)) + 4096}, "its manifest says"},
		{"prepared, probe total too long", "/disk.asr", serveOpts{total: int64(len(f.prepared)) + 4096}, "its manifest says"},
		{"raw, Content-Length too long, no ranges", "/disk.img", serveOpts{noRange: true, length: int64(len(f.disk)) + 4096}, "dropped"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := map[string][]byte{"/disk.asr": f.prepared, "/disk.img": f.disk}
			s := newServer(t, files(d, func(int, *http.Request) serveOpts { return c.o }))
			var log strings.Builder
			var mu sync.Mutex
			_, took, err := restoreAll(s.URL+c.file, HTTPOptions{Retries: 2, Log: func(f string, a ...any) {
				mu.Lock()
				fmt.Fprintf(&log, f+"\n", a...)
				mu.Unlock()
			}})
			if err == nil {
				t.Fatalf("restore succeeded on a server that lies about the length")
			}
			if !strings.Contains(err.Error(), c.says) && !strings.Contains(log.String(), c.says) {
				t.Errorf("error %q (log %q) does not name %q", err, log.String(), c.says)
			}
			if took > stall+margin {
				t.Errorf("failing took %v", took)
			}
		})
	}
}

func TestHTTPRefusals(t *testing.T) {
	f := fixtures(t)
	s := newServer(t, func(s *server, n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/html.asr", "/html.img":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>Welcome</body></html>")
		case "/page.img":
			io.WriteString(w, "<!DOCTYPE html><html>")
		case "/broken.img":
			http.Error(w, "oops", http.StatusInternalServerError)
		case "/loop.img":
			http.Redirect(w, r, "/loop.img", http.StatusFound)
		case "/file.img":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		case "/ftp.img":
			http.Redirect(w, r, "ftp://127.0.0.1/disk.img", http.StatusFound)
		case "/empty.img":
			w.WriteHeader(http.StatusOK)
		case "/disk.img":
			s.serve(w, r, f.disk, serveOpts{})
		default:
			http.NotFound(w, r)
		}
	})
	cases := []struct{ path, says string }{
		{"/html.asr", "HTML page"},
		{"/html.img", "HTML page"},
		{"/page.img", "HTML"},
		{"/missing.img", "404 Not Found: check the path"},
		{"/broken.img", "500 Internal Server Error"},
		{"/loop.img", "redirected 10 times"},
		{"/file.img", `redirected to a "file": URL`},
		{"/ftp.img", `redirected to a "ftp": URL`},
		{"/empty.img", "empty file"},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			_, took, err := restoreAll(s.URL+c.path, HTTPOptions{})
			wantErr(t, err, took, margin, c.says)
		})
	}
}

// Bombs and endless bodies: the measuring pass stops as soon as the disk
// would not fit the target.
func TestHTTPMeasureLimit(t *testing.T) {
	f := fixtures(t)
	bomb := gzipOf(make([]byte, 256<<20)) // 256 MiB of zeros in 250 KiB
	s := newServer(t, func(s *server, n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/bomb.img.gz":
			s.serve(w, r, bomb, serveOpts{})
		case "/endless.img": // no length, no ranges, no end
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(http.StatusOK)
			block := bytes.Repeat([]byte{0xa5}, 64<<10)
			for {
				if _, err := w.Write(block); err != nil {
					return
				}
				select {
				case <-s.release:
					return
				default:
				}
			}
		case "/disk.img.gz":
			s.serve(w, r, f.gz, serveOpts{})
		default:
			http.NotFound(w, r)
		}
	})
	for _, p := range []string{"/bomb.img.gz", "/endless.img", "/disk.img.gz"} {
		t.Run(p, func(t *testing.T) {
			_, took, err := restoreAll(s.URL+p, HTTPOptions{MaxSize: diskLen - 1})
			wantErr(t, err, took, margin, "holds more than 2.0 MiB (2097151 bytes)")
			var big *TooBigError
			if !errors.As(err, &big) {
				t.Errorf("error %v is not a *TooBigError", err)
			}
		})
	}
	got, _, err := restoreAll(s.URL+"/disk.img.gz", HTTPOptions{MaxSize: diskLen})
	wantDisk(t, got, err)
}

// Decoders hold no more than MaxDecoderWindow, whatever the stream asks.
func TestDecoderWindowCaps(t *testing.T) {
	f := fixtures(t)
	bigXZ := xzWithDict(t, f.xz, 37)
	okXZ := xzWithDict(t, f.xz, 28) // 64 MiB: allowed
	bigZstd := zstdWithWindow(t, f.disk, 29)
	okZstd := zstdWithWindow(t, f.disk, 26)
	s := newServer(t, files(map[string][]byte{"/big.img.xz": bigXZ, "/ok.img.xz": okXZ, "/big.img.zst": bigZstd, "/ok.img.zst": okZstd}, nil))
	for _, c := range []struct{ path, says string }{
		{"/big.img.xz", "needs a 1536 MiB dictionary; asr allows 64 MiB"},
		{"/big.img.zst", "window larger than the 64 MiB asr allows"},
	} {
		t.Run(c.path, func(t *testing.T) {
			_, took, err := restoreAll(s.URL+c.path, HTTPOptions{})
			wantErr(t, err, took, margin, c.says)
			// The same file on disk is refused the same way.
			p := filepath.Join(t.TempDir(), filepath.Base(c.path))
			os.WriteFile(p, map[string][]byte{"/big.img.xz": bigXZ, "/big.img.zst": bigZstd}[c.path], 0o644)
			if _, err := Open(p, Options{}); err == nil || !strings.Contains(err.Error(), c.says) {
				t.Errorf("Open(%s) = %v, want an error naming %q", p, err, c.says)
			}
		})
	}
	for _, p := range []string{"/ok.img.xz", "/ok.img.zst"} {
		t.Run(p, func(t *testing.T) {
			got, _, err := restoreAll(s.URL+p, HTTPOptions{})
			wantDisk(t, got, err)
		})
	}
}

// The IMG.sha256 beside a raw image: fetched under the watchdog, bounded,
// and any failure other than a clean 404 is an error.
func TestHTTPSidecar(t *testing.T) {
	f := fixtures(t)
	sum := sha256.Sum256(f.disk)
	good := hex.EncodeToString(sum[:]) + "  disk.img\n"
	wrong := strings.Repeat("ab", 32) + "  disk.img\n"
	cases := []struct {
		name    string
		handle  func(s *server, w http.ResponseWriter, r *http.Request)
		says    string // error; empty: success
		checked bool
	}{
		{"good", func(s *server, w http.ResponseWriter, r *http.Request) { io.WriteString(w, good) }, "", true},
		{"404", func(s *server, w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, "", false},
		{"html page", func(s *server, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html></html>")
		}, "", false},
		{"wrong", func(s *server, w http.ResponseWriter, r *http.Request) { io.WriteString(w, wrong) }, "the download's SHA-256 is", false},
		{"500", func(s *server, w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusInternalServerError)
		}, "checksum file", false},
		{"403", func(s *server, w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) }, "403 Forbidden", false},
		{"stalls after headers", func(s *server, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			s.stall(r)
		}, "sent nothing for 1s", false},
		{"stalls before headers", func(s *server, w http.ResponseWriter, r *http.Request) { s.stall(r) }, "sent nothing for 1s", false},
		{"huge", func(s *server, w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, good)
			w.Write(make([]byte, 1<<20))
		}, "larger than 64 KiB", false},
		{"garbage", func(s *server, w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello world\n") }, "holds no SHA-256", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, func(s *server, n int, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/disk.img.sha256" {
					c.handle(s, w, r)
					return
				}
				s.serve(w, r, f.disk, serveOpts{})
			})
			start := time.Now()
			ctx := context.Background()
			src, err := OpenHTTP(ctx, s.URL+"/disk.img", HTTPOptions{Stall: stall})
			if err == nil {
				_, _, err = restoreAll(s.URL+"/disk.img", HTTPOptions{})
			}
			took := time.Since(start)
			if c.says != "" {
				wantErr(t, err, took, stall+margin, c.says)
				return
			}
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			defer src.Close()
			u := src.(Unchecked).Unchecked()
			if c.checked != (u == "") {
				t.Errorf("Unchecked() = %q, want checked=%v", u, c.checked)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	cases := []struct {
		in        string
		a, b, tot int64
		ok        bool
	}{
		{"bytes 0-65535/123456", 0, 65535, 123456, true},
		{"bytes 10-19/*", 10, 19, -1, true},
		{"bytes 20-10/100", 0, 0, 0, false},
		{"bytes -1-10/100", 0, 0, 0, false},
		{"bytes 0-10", 0, 0, 0, false},
		{"items 0-10/100", 0, 0, 0, false},
		{"bytes */100", 0, 0, 0, false},
		{"bytes +1-10/100", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, c := range cases {
		a, b, tot, ok := parseContentRange(c.in)
		if ok != c.ok || (ok && (a != c.a || b != c.b || tot != c.tot)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v, want %d, %d, %d, %v", c.in, a, b, tot, ok, c.a, c.b, c.tot, c.ok)
		}
	}
}

// A password in the URL reaches the server but never a message: not in
// errors, stall errors, or the log.
func TestHTTPRedactsPassword(t *testing.T) {
	f := fixtures(t)
	var auth atomic.Value
	s := newServer(t, func(s *server, n int, w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); ok {
			auth.Store(u + ":" + p)
		}
		switch r.URL.Path {
		case "/disk.img":
			s.serve(w, r, f.disk, serveOpts{})
		case "/disk.img.sha256", "/stall.img.sha256":
			http.Error(w, "no", http.StatusInternalServerError)
		case "/stall.img":
			s.stall(r)
		default:
			http.NotFound(w, r)
		}
	})
	for _, p := range []string{"/disk.img", "/stall.img", "/missing.img", "/missing.img?X-Amz-Signature=s3cret&X-Amz-Date=1"} {
		var log strings.Builder
		u := strings.Replace(s.URL, "http://", "http://admin:s3cret@", 1) + p
		_, _, err := restoreAll(u, HTTPOptions{Log: func(format string, a ...any) { fmt.Fprintf(&log, format, a...) }})
		if err == nil {
			t.Fatalf("%s: restore succeeded, want an error", p)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(log.String(), "s3cret") {
			t.Errorf("%s: the password was shown: %v / %s", p, err, log.String())
		}
		if !strings.Contains(err.Error(), "admin:xxxxx@127.0.0.1") {
			t.Errorf("%s: error %q does not name the URL", p, err)
		}
	}
	if auth.Load() != "admin:s3cret" {
		t.Errorf("the server got credentials %v, want admin:s3cret", auth.Load())
	}
}

// A signal (a cancelled context) while the checksum file stalls ends the
// open with an error at once: it never goes on as if there were no
// checksum, which let an interrupted restore erase the target.
func TestHTTPSidecarCancelled(t *testing.T) {
	f := fixtures(t)
	s := newServer(t, func(s *server, n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/disk.img.sha256" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			s.stall(r)
			return
		}
		s.serve(w, r, f.disk, serveOpts{})
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	src, err := OpenHTTP(ctx, s.URL+"/disk.img", HTTPOptions{Stall: time.Minute})
	if err == nil {
		src.Close()
		t.Fatalf("OpenHTTP succeeded after its context was cancelled during the checksum fetch")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("OpenHTTP = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > margin {
		t.Errorf("OpenHTTP took %v after the cancel", took)
	}
}

// TestHTTPCallerKnows: what a registry's descriptor says binds the server.
// A raw file where a prepared image is wanted (an asr artifact's blob) is
// refused before it is read, a length other than the descriptor's is
// refused, and messages name the source as the caller does; requests go
// through the caller's client.
func TestHTTPCallerKnows(t *testing.T) {
	f := fixtures(t)
	s := newServer(t, files(map[string][]byte{"/disk.asr": f.prepared, "/disk.img.gz": f.gz}, nil))
	var sent atomic.Int32
	client := doerFunc(func(r *http.Request) (*http.Response, error) {
		sent.Add(1)
		return http.DefaultClient.Do(r)
	})
	opts := HTTPOptions{Client: client, Name: "oci://r.example/lab/disk:v1", Kind: "OCI registry", PreparedOnly: true}

	_, took, err := restoreAll(s.URL+"/disk.img.gz", opts)
	wantErr(t, err, took, stall, "oci://r.example/lab/disk:v1", "not a prepared image")
	if strings.Contains(err.Error(), s.URL) {
		t.Errorf("error %q names the blob's URL, not the source as the caller named it", err)
	}

	o := opts
	o.Size = int64(len(f.prepared)) + 1
	_, took, err = restoreAll(s.URL+"/disk.asr", o)
	wantErr(t, err, took, stall, "oci://r.example/lab/disk:v1", fmt.Sprintf("should be %d", o.Size))

	o.Size = int64(len(f.prepared))
	before := sent.Load()
	got, _, err := restoreAll(s.URL+"/disk.asr", o)
	wantDisk(t, got, err)
	if sent.Load() == before {
		t.Errorf("no request went through the caller's client")
	}
	ctx := context.Background()
	src, err := OpenHTTP(ctx, s.URL+"/disk.asr", o)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if k := src.Info().Kind; k != "prepared image over OCI registry" {
		t.Errorf("Info().Kind = %q, want prepared image over OCI registry", k)
	}
}

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }
