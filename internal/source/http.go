package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asrlinux/asr/internal/image"
)

// HTTPOptions tune an http(s):// source.
type HTTPOptions struct {
	CACert    string        // PEM file of extra trusted CAs, added to the system's
	Stall     time.Duration // give up on a connection that sends nothing this long (default 30 s)
	Retries   int           // reconnections in a row without progress before giving up (default 5)
	Checksum  string        // "sha256:HEX" of the file as served, for raw images
	ChunkSize int           // chunking of raw images; 0 means image.DefaultChunkSize
	// Log, if set, hears about retries and checksum decisions, one line each.
	Log func(format string, a ...any)
}

// httpClient is one source's connection to its server.
type httpClient struct {
	c       *http.Client
	url     string // with credentials, for requests
	shown   string // without credentials, for messages
	ranges  bool
	total   int64 // -1 when the server does not say
	stall   time.Duration
	retries int
	log     func(string, ...any)
}

// OpenHTTP opens a prepared or raw image on a web server. It learns whether
// the server honours Range, reads and checks the manifest (prepared images)
// or the size (raw images), and refuses what is not an image, all before the
// caller writes anything.
func OpenHTTP(ctx context.Context, rawurl string, opts HTTPOptions) (Source, error) {
	u, err := url.Parse(rawurl)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("source %q is not a valid http(s) URL", redact(rawurl))
	}
	hc, err := newHTTPClient(u, opts)
	if err != nil {
		return nil, err
	}
	// Probe with a small range: the answer says whether ranges work, how long
	// the file is, and what it starts with.
	resp, err := hc.get(ctx, 0, 65536)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		hc.ranges = true
		hc.total = contentRangeTotal(resp.Header.Get("Content-Range"))
	case http.StatusOK:
		hc.total = resp.ContentLength
	default:
		resp.Body.Close()
		return nil, hc.statusError(resp)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt == "text/html" {
			resp.Body.Close()
			return nil, fmt.Errorf("source %s: the server sent an HTML page (Content-Type %s), not a disk image: check the URL", hc.shown, mt)
		}
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	head, _ := br.Peek(8)
	if bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("<")) {
		resp.Body.Close()
		return nil, fmt.Errorf("source %s: the server sent an HTML or XML page, not a disk image: check the URL", hc.shown)
	}
	if len(head) == 0 {
		resp.Body.Close()
		return nil, fmt.Errorf("source %s: the server sent an empty file", hc.shown)
	}
	first := &resumer{hc: hc, ctx: ctx, end: hc.total, body: readCloser{br, resp.Body}}
	if hc.ranges {
		// The probe's body covers only its small range; read on from a
		// fresh request for the whole file.
		resp.Body.Close()
		first = &resumer{hc: hc, ctx: ctx, end: hc.total}
	}
	if bytes.HasPrefix(head, []byte(image.Magic)) || looksPrepared(u.Path, head) {
		return openHTTPPrepared(ctx, hc, first)
	}
	return openHTTPRaw(ctx, hc, first, head, opts)
}

func newHTTPClient(u *url.URL, opts HTTPOptions) (*httpClient, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	tr.ResponseHeaderTimeout = 30 * time.Second
	// Images are compressed already; transparent gzip would only cost CPU
	// and hide the real Content-Length.
	tr.DisableCompression = true
	if opts.CACert != "" {
		pem, err := os.ReadFile(opts.CACert)
		if err != nil {
			return nil, fmt.Errorf("--cacert %s: %w", opts.CACert, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s holds no PEM certificate", opts.CACert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	hc := &httpClient{
		c: &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errRedirects
			}
			return nil
		}},
		url: u.String(), shown: redact(u.String()), total: -1,
		stall: opts.Stall, retries: opts.Retries, log: opts.Log,
	}
	if hc.stall <= 0 {
		hc.stall = 30 * time.Second
	}
	if hc.retries <= 0 {
		hc.retries = 5
	}
	if hc.log == nil {
		hc.log = func(string, ...any) {}
	}
	return hc, nil
}

var errRedirects = errors.New("redirected 10 times (a redirect loop?)")

// redact hides a URL's password; messages and logs only ever show this.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	return u.String()
}

// get requests [off, end) of the file (end -1: to its end).
func (hc *httpClient) get(ctx context.Context, off, end int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hc.url, nil)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", hc.shown, err)
	}
	if off > 0 || end >= 0 {
		if end >= 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		}
	}
	resp, err := hc.c.Do(req)
	if err != nil {
		if errors.Is(err, errRedirects) {
			return nil, fmt.Errorf("source %s: the server %v", hc.shown, errRedirects)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in our message already, without its password
		}
		return nil, fmt.Errorf("source %s: %w", hc.shown, err)
	}
	return resp, nil
}

func (hc *httpClient) statusError(resp *http.Response) error {
	hint := ""
	switch {
	case resp.StatusCode == http.StatusNotFound:
		hint = ": check the path"
	case resp.StatusCode == http.StatusUnauthorized:
		hint = ": give user:password@ in the URL"
	case resp.StatusCode == http.StatusForbidden:
		hint = ": the server refuses to serve it (permissions?)"
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		hint = ": the file is empty or shorter than expected"
	case resp.StatusCode >= 500:
		hint = ": the server is failing; try again later"
	}
	return fmt.Errorf("source %s: the server answered %s%s", hc.shown, resp.Status, hint)
}

// contentRangeTotal reads the total from "bytes 0-65535/123456".
func contentRangeTotal(s string) int64 {
	_, tot, ok := strings.Cut(s, "/")
	if !ok || tot == "*" {
		return -1
	}
	n, err := strconv.ParseInt(tot, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

type readCloser struct {
	io.Reader
	io.Closer
}

// resumer reads [off, end) of the file and survives dropped and stalled
// connections: it reconnects where it stopped (with Range, or by skipping
// what it has on a server without Range), with backoff, and gives up after
// hc.retries reconnections in a row that brought no data. A body that ends
// before end is a dropped connection, never the end of the file.
type resumer struct {
	hc    *httpClient
	ctx   context.Context
	off   int64
	end   int64 // -1: read to EOF
	body  io.ReadCloser
	timer *time.Timer
	tries int
}

func (r *resumer) Read(p []byte) (int, error) {
	if r.end >= 0 {
		if r.off >= r.end {
			return 0, io.EOF
		}
		if rest := r.end - r.off; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	for {
		if r.body == nil {
			if err := r.reopen(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.tries = 0
			if r.timer != nil {
				r.timer.Reset(r.hc.stall)
			}
		}
		if err == nil || (err == io.EOF && r.end >= 0 && r.off >= r.end) || (err == io.EOF && r.end < 0) {
			if n > 0 || err == nil {
				return n, nil
			}
			return 0, io.EOF
		}
		// Anything else (reset, stall, a body cut short) is a dropped
		// connection: close it and resume where it stopped.
		r.Close()
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.hc.log("connection to %s dropped at byte %d (%v); resuming", r.hc.shown, r.off, err)
		if n > 0 {
			return n, nil
		}
	}
}

func (r *resumer) reopen() error {
	for {
		if r.tries >= r.hc.retries {
			return fmt.Errorf("source %s: gave up after %d attempts in a row without data at byte %d", r.hc.shown, r.tries, r.off)
		}
		if r.tries > 0 {
			d := time.Duration(1<<min(r.tries-1, 4)) * time.Second
			select {
			case <-time.After(d):
			case <-r.ctx.Done():
				return r.ctx.Err()
			}
		}
		r.tries++
		// A watchdog cancels a request that stops sending for hc.stall.
		ctx, cancel := context.WithCancel(r.ctx)
		timer := time.AfterFunc(r.hc.stall, cancel)
		resp, err := r.hc.get(ctx, r.off, r.end)
		if err != nil {
			timer.Stop()
			cancel()
			if r.ctx.Err() != nil {
				return r.ctx.Err()
			}
			r.hc.log("%v; retrying", err)
			continue
		}
		switch {
		case resp.StatusCode == http.StatusPartialContent:
		case resp.StatusCode == http.StatusOK:
			// The server ignored Range: skip to where we were.
			if _, err := io.CopyN(io.Discard, resp.Body, r.off); err != nil {
				resp.Body.Close()
				timer.Stop()
				cancel()
				r.hc.log("source %s: reconnect failed while skipping to byte %d: %v", r.hc.shown, r.off, err)
				continue
			}
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			err := r.hc.statusError(resp)
			resp.Body.Close()
			timer.Stop()
			cancel()
			r.hc.log("%v; retrying", err)
			continue
		default:
			err := r.hc.statusError(resp)
			resp.Body.Close()
			timer.Stop()
			cancel()
			return err
		}
		r.body = readCloser{resp.Body, closerFunc(func() error {
			timer.Stop()
			cancel()
			return resp.Body.Close()
		})}
		r.timer = timer
		return nil
	}
}

func (r *resumer) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body, r.timer = nil, nil
	return err
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// httpPrepared is a prepared image on a web server.
type httpPrepared struct {
	hc   *httpClient
	info Info
	dec  *image.Decoder
	// first is the open stream from the probe; without Range support it is
	// the only way in, positioned just after the manifest.
	first *resumer
}

func openHTTPPrepared(ctx context.Context, hc *httpClient, first *resumer) (Source, error) {
	m, d, hdr, err := image.ReadHeaderManifest(first)
	if err != nil {
		first.Close()
		return nil, fmt.Errorf("source %s: %w", hc.shown, err)
	}
	// A signed image is longer than its manifest says by its signature
	// trailer, and by nothing else.
	if extra := hc.total - m.FileSize(); hc.total >= 0 && (extra < 0 || extra > image.MaxTrailerLen) {
		first.Close()
		return nil, fmt.Errorf("source %s: the server says the file is %d bytes, its manifest says %d: the file on the server is truncated or not this image", hc.shown, hc.total, m.FileSize())
	}
	dec, err := image.NewDecoder()
	if err != nil {
		first.Close()
		return nil, err
	}
	p := &httpPrepared{hc: hc, dec: dec, first: first, info: Info{
		Kind: "prepared image over " + strings.ToUpper(urlScheme(hc.url)), Size: m.LogicalSize,
		ChunkSize: int(m.ChunkSize), Manifest: m, Digest: d,
	}}
	p.info.Header = hdr
	p.info.Signatures, p.info.SignaturesErr = hc.signatures(ctx, m)
	if hc.ranges {
		first.Close() // ranged workers fetch chunk runs on their own connections
		p.first = nil
	}
	return p, nil
}

// signatures fetches the signature trailer after the last chunk with one
// range request. Without Range support it cannot be read before the chunks
// have streamed past, which is too late to refuse an image: that is an
// error for callers that require a signature.
func (hc *httpClient) signatures(ctx context.Context, m *image.Manifest) ([][]byte, error) {
	end := m.FileSize()
	switch {
	case hc.total == end:
		return nil, nil
	case hc.total < 0:
		return nil, fmt.Errorf("the server does not say how long %s is, so its signatures cannot be found", hc.shown)
	case !hc.ranges:
		return nil, fmt.Errorf("the server does not answer range requests, so the signatures at the end of %s cannot be read before restoring: enable ranges (nginx and Apache do by default)", hc.shown)
	}
	resp, err := hc.get(ctx, end, hc.total)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return nil, fmt.Errorf("reading the signatures: %w", hc.statusError(resp))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, image.MaxTrailerLen+1))
	if err != nil {
		return nil, fmt.Errorf("source %s: reading the signatures: %w", hc.shown, err)
	}
	if int64(len(b)) != hc.total-end {
		return nil, fmt.Errorf("source %s: the server sent %d bytes of signatures, want %d", hc.shown, len(b), hc.total-end)
	}
	return image.ParseTrailer(b)
}

func urlScheme(s string) string {
	scheme, _, _ := strings.Cut(s, ":")
	return scheme
}

func (p *httpPrepared) Info() Info { return p.info }

func (p *httpPrepared) Close() error {
	p.dec.Close()
	if p.first != nil {
		p.first.Close()
	}
	return nil
}

// spanBytes is how much stored data one range request asks for: big enough
// that request overhead vanishes, small enough that several workers share
// the image evenly and a resumed span repeats little.
const spanBytes = 8 << 20

func (p *httpPrepared) Run(ctx context.Context, workers int, fn func(Chunk) error) error {
	m := p.info.Manifest
	if !p.hc.ranges {
		return runPreparedStream(ctx, workers, m, p.first, p.dec, fn)
	}
	// Cut the chunk list into spans of about spanBytes stored bytes; each
	// worker fetches a span with one range request and decodes as it reads.
	type span struct{ a, b int }
	var spans []span
	for a := 0; a < len(m.Chunks); {
		b, n := a, int64(0)
		for b < len(m.Chunks) && (n == 0 || n+int64(m.Chunks[b].Length) <= spanBytes) {
			n += int64(m.Chunks[b].Length)
			b++
		}
		spans = append(spans, span{a, b})
		a = b
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan span)
	go func() {
		defer close(next)
		for _, s := range spans {
			select {
			case next <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var stored, dst []byte
			for s := range next {
				if err := p.fetchSpan(ctx, s.a, s.b, &stored, &dst, fn); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

func (p *httpPrepared) fetchSpan(ctx context.Context, a, b int, stored, dst *[]byte, fn func(Chunk) error) error {
	m := p.info.Manifest
	var start, end int64 = -1, -1
	for i := a; i < b; i++ {
		if c := m.Chunks[i]; c.Codec.Stored() {
			if start < 0 {
				start = c.Offset
			}
			end = c.Offset + int64(c.Length)
		}
	}
	var r *resumer
	if start >= 0 {
		r = &resumer{hc: p.hc, ctx: ctx, off: start, end: end}
		defer r.Close()
	}
	for i := a; i < b; i++ {
		c := m.Chunks[i]
		if !c.Codec.Stored() {
			if err := fn(NotStored(m, i)); err != nil {
				return err
			}
			continue
		}
		if cap(*stored) < int(c.Length) {
			*stored = make([]byte, c.Length)
		}
		buf := (*stored)[:c.Length]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("reading chunk %d: %w", i, err)
		}
		data, err := p.dec.DecodeChunk(m, i, buf, *dst)
		if err != nil {
			return fmt.Errorf("source %s: %w", p.hc.shown, err)
		}
		*dst = data
		if err := fn(Chunk{Index: i, Data: data, Sum: c.Sum}); err != nil {
			return err
		}
	}
	return nil
}

// runPreparedStream reads the stored chunks of an image in order from one
// stream, positioned just after the manifest, and decodes them on workers.
func runPreparedStream(ctx context.Context, workers int, m *image.Manifest, r io.Reader, dec *image.Decoder, fn func(Chunk) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		i      int
		stored []byte
	}
	pool := make(chan []byte, 2*workers)
	for range cap(pool) {
		pool <- make([]byte, m.ChunkSize)
	}
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		// Skip the padding between the manifest and the first chunk.
		pos := int64(image.HeaderSize) + int64(len(image.MarshalManifest(m)))
		if _, err := io.CopyN(io.Discard, r, m.DataOffset-pos); err != nil {
			cancel(fmt.Errorf("reading image: %w", err))
			return
		}
		for i, c := range m.Chunks {
			var buf []byte
			if c.Codec.Stored() {
				select {
				case buf = <-pool:
				case <-ctx.Done():
					return
				}
				buf = buf[:c.Length]
				if _, err := io.ReadFull(r, buf); err != nil {
					cancel(fmt.Errorf("reading chunk %d: %w", i, err))
					return
				}
			}
			select {
			case jobs <- job{i, buf}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var dst []byte
			for j := range jobs {
				if ctx.Err() != nil {
					if j.stored != nil {
						pool <- j.stored[:cap(j.stored)]
					}
					continue
				}
				c := Chunk{Index: j.i}
				var err error
				if j.stored == nil {
					c = NotStored(m, j.i)
				} else {
					dst, err = dec.DecodeChunk(m, j.i, j.stored, dst)
					pool <- j.stored[:cap(j.stored)]
					c.Data, c.Sum = dst, m.Chunks[j.i].Sum
				}
				if err == nil {
					err = fn(c)
				}
				if err != nil {
					cancel(err)
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// httpRaw is a raw (possibly compressed) disk image on a web server, read as
// one sequential stream.
type httpRaw struct {
	hc       *httpClient
	info     Info
	first    *resumer
	decomp   func(io.ReadCloser) (io.ReadCloser, error)
	want     []byte // expected SHA-256 of the file as served; nil if none
	wantFrom string
	note     string
}

func openHTTPRaw(ctx context.Context, hc *httpClient, first *resumer, head []byte, opts HTTPOptions) (Source, error) {
	kind, decomp := compression(head)
	r := &httpRaw{hc: hc, first: first, decomp: decomp}
	cs := opts.ChunkSize
	if cs == 0 {
		cs = image.DefaultChunkSize
	}
	r.info = Info{Kind: "raw image over " + strings.ToUpper(urlScheme(hc.url)), ChunkSize: cs, Size: hc.total}
	if kind != "" {
		r.info.Kind = kind + "-compressed " + r.info.Kind
	}
	if err := r.findChecksum(ctx, opts.Checksum); err != nil {
		first.Close()
		return nil, err
	}
	if decomp != nil || hc.total < 0 {
		// The disk's size is unknown until the stream has been read, and
		// nothing may be written before the size is checked: read it once.
		hc.log("The size of %s is not known in advance: reading it once to measure it", hc.shown)
		n, err := r.measure(ctx)
		if err != nil {
			return nil, err
		}
		r.info.Size = n
	}
	if r.info.Size <= 0 {
		return nil, fmt.Errorf("source %s holds no data", hc.shown)
	}
	return r, nil
}

// findChecksum takes --checksum, else IMG.sha256 beside the image.
func (r *httpRaw) findChecksum(ctx context.Context, given string) error {
	if given != "" {
		algo, hexsum, ok := strings.Cut(given, ":")
		b, err := hex.DecodeString(hexsum)
		if !ok || algo != "sha256" || err != nil || len(b) != sha256.Size {
			return fmt.Errorf("--checksum %q: give sha256: and 64 hex digits", given)
		}
		r.want, r.wantFrom = b, "--checksum"
		return nil
	}
	u, _ := url.Parse(r.hc.url)
	u.Path += ".sha256"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := r.hc.c.Do(req)
	if err != nil {
		return nil // no checksum file is not an error; verification says so
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	f := strings.Fields(string(body))
	var b []byte
	if len(f) > 0 {
		b, _ = hex.DecodeString(f[0])
	}
	if len(b) != sha256.Size {
		// Some servers answer every path with a page; that is no checksum.
		r.hc.log("ignoring %s: it does not start with a SHA-256 (64 hex digits)", redact(u.String()))
		return nil
	}
	r.want, r.wantFrom = b, redact(u.String())
	return nil
}

// served is the file as the server sends it, hashed on the way through.
type served struct {
	io.Reader
	body *resumer
	h    hash.Hash
}

// drain reads what the decompressor left (a trailer, padding), so the hash
// covers the whole file.
func (s *served) drain() error {
	_, err := io.Copy(io.Discard, s)
	return err
}

// stream opens the whole file as served and the disk inside it.
func (r *httpRaw) stream(ctx context.Context) (io.ReadCloser, *served, error) {
	body := r.first
	r.first = nil
	if body == nil {
		body = &resumer{hc: r.hc, ctx: ctx, end: r.hc.total}
	}
	sv := &served{body: body, h: sha256.New()}
	sv.Reader = io.TeeReader(body, sv.h)
	var rc io.ReadCloser = readCloser{sv, body}
	if r.decomp != nil {
		z, err := r.decomp(io.NopCloser(sv))
		if err != nil {
			body.Close()
			return nil, nil, fmt.Errorf("source %s: %w", r.hc.shown, err)
		}
		rc = readCloser{z, closerFunc(func() error { z.Close(); return body.Close() })}
	}
	return rc, sv, nil
}

func (r *httpRaw) measure(ctx context.Context) (int64, error) {
	rc, sv, err := r.stream(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err == nil {
		err = sv.drain()
	}
	if err != nil {
		return 0, fmt.Errorf("source %s: %w", r.hc.shown, err)
	}
	if err := r.checkServed(sv); err != nil {
		return 0, err
	}
	return n, nil
}

func (r *httpRaw) checkServed(sv *served) error {
	h := sv.h
	if r.want == nil {
		r.note = "no published checksum (--checksum or IMG.sha256) to check the download against"
		return nil
	}
	if got := h.Sum(nil); !bytes.Equal(got, r.want) {
		return fmt.Errorf("source %s: the download's SHA-256 is %x, but %s says %x", r.hc.shown, got, r.wantFrom, r.want)
	}
	r.note = "download matches the SHA-256 from " + r.wantFrom
	return nil
}

func (r *httpRaw) Info() Info { return r.info }

func (r *httpRaw) Close() error {
	if r.first != nil {
		return r.first.Close()
	}
	return nil
}

func (r *httpRaw) Run(ctx context.Context, workers int, fn func(Chunk) error) error {
	rc, sv, err := r.stream(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := RunStream(ctx, workers, rc, r.info.Size, r.info.ChunkSize, fn); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil { // a compressed stream's trailer
		return fmt.Errorf("source %s: %w", r.hc.shown, err)
	}
	if err := sv.drain(); err != nil {
		return fmt.Errorf("source %s: %w", r.hc.shown, err)
	}
	// Every byte the server sent went through the hash, so the image as a
	// whole is checked before the engine writes the deferred first chunk.
	return r.checkServed(sv)
}

// Note says how the download itself was checked.
func (r *httpRaw) Note() string { return r.note }

// ReadChunk fetches, decodes and checks one chunk with a range request (or,
// without Range support, by reading up to it).
func (p *httpPrepared) ReadChunk(i int) ([]byte, error) {
	var out []byte
	err := p.fetchSpan(context.Background(), i, i+1, new([]byte), new([]byte), func(c Chunk) error {
		if c.Zero {
			out = make([]byte, p.info.Manifest.ChunkLen(i))
		} else {
			out = bytes.Clone(c.Data)
		}
		return nil
	})
	return out, err
}
